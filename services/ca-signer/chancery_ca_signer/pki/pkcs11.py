"""CA keys held in a PKCS#11 token (an HSM, or SoftHSM2 in development and CI).

The private key is generated on the token as a token object that is sensitive and not
extractable, so it never exists outside the token; :class:`Pkcs11Key` implements
:class:`~.keys.CaKey` by asking the token for raw signatures.

Signing technique. cryptography's builders want a private key object, so each builder
is signed first with the process's throwaway key of the same key type
(:func:`.lint.throwaway_key`: same signature AlgorithmIdentifier, hence identical
to-be-signed bytes). The to-be-signed bytes are hashed here, the token signs the hash
(``CKM_ECDSA`` over the digest, or ``CKM_RSA_PKCS`` over a DigestInfo: the most widely
supported mechanisms, and a 100,000-entry CRL never travels to the HSM), and the DER is
rebuilt with the real signature in place of the throwaway one (:func:`replace_signature`,
:func:`replace_ocsp_signature`). The result is parsed again and its signature verified
with the token's public key before it is returned; anything else is a
:class:`~.keys.CaKeyError`.

Sessions. A PKCS#11 login belongs to the whole process (all sessions of an application
share it), so one :class:`Pkcs11Token` is kept per (module, token label) and it holds
one logged-in session guarded by a lock: a signature takes well under a millisecond on
the token, and the hashing and DER work happen outside the lock. A session the token
dropped (device reset, HSM fail-over) is reopened once, transparently.

Key references. A key is named by an RFC 7512 URI,
``pkcs11:token=<token label>;object=<key label>;id=<%xx CKA_ID>;type=private``,
which is what gets stored instead of an encrypted PEM. References never carry a PIN.

The PIN is held only inside :class:`Pkcs11Token` (to reopen a dropped session) and never
appears in a repr, a log line or an exception message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote_to_bytes

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp

from .keys import CaKey, CaKeyError, CaPublicKey, KeyType
from .lint import throwaway_key

__all__ = [
    "Pkcs11Token",
    "Pkcs11Key",
    "KeyReference",
    "open_key",
    "generate_key",
    "pin_from_environment",
    "replace_signature",
    "replace_ocsp_signature",
    "replace_responder_key_hash",
    "public_key_hash",
    "DEFAULT_SOFTHSM2_MODULE",
]

#: Where Debian's softhsm2 package installs the module (development and CI).
DEFAULT_SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"

T = TypeVar("T")


# --- DER: swap the signature of a signed structure --------------------------------------


def _header(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, offset of the contents, length of the contents) of the TLV at ``offset``.

    Only what X.509/OCSP DER uses: single-byte tags and definite lengths.
    """
    if offset + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not supported")
    first = data[offset + 1]
    position = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or position + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    if position + length > len(data):
        raise ValueError("truncated DER")
    return tag, position, length


def _elements(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, start, end) of each TLV between ``start`` and ``end``, which they must fill."""
    elements = []
    offset = start
    while offset < end:
        tag, body, length = _header(data, offset)
        if body + length > end:
            raise ValueError("DER element overruns its container")
        elements.append((tag, offset, body + length))
        offset = body + length
    return elements


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _length(len(body)) + body


def _sole_element(data: bytes, tag: int) -> tuple[int, int]:
    """Contents (start, end) of ``data``, which must be exactly one TLV with ``tag``."""
    found, body, length = _header(data, 0)
    if found != tag or body + length != len(data):
        raise ValueError(f"expected one DER element with tag {tag:#04x}")
    return body, body + length


def replace_signature(signed: bytes, tbs: bytes, signature: bytes, *,
                      new_tbs: bytes | None = None) -> bytes:
    """``signed`` (SEQUENCE {tbs, algorithm, BIT STRING, ...}) with ``signature`` in the BIT STRING.

    Fits certificates, CRLs and BasicOCSPResponse (whose optional ``certs`` that follow
    are kept). The first element must be exactly ``tbs``; it is replaced by ``new_tbs``
    when given (the OCSP responder key hash, see :func:`replace_responder_key_hash`).
    """
    start, end = _sole_element(signed, 0x30)
    elements = _elements(signed, start, end)
    if len(elements) < 3:
        raise ValueError("a signed structure has at least three elements")
    (_, tbs_start, tbs_end), (_, alg_start, alg_end), (sig_tag, _, sig_end) = elements[:3]
    if signed[tbs_start:tbs_end] != tbs:
        raise ValueError("the signed structure does not hold these to-be-signed bytes")
    if sig_tag != 0x03:
        raise ValueError("the third element of a signed structure must be a BIT STRING")
    body = (
        (tbs if new_tbs is None else new_tbs)
        + signed[alg_start:alg_end]
        + _tlv(0x03, b"\x00" + signature)
        + signed[sig_end:end]  # e.g. BasicOCSPResponse.certs
    )
    return _tlv(0x30, body)


def replace_ocsp_signature(response: bytes, tbs: bytes, signature: bytes, *,
                           new_tbs: bytes | None = None) -> bytes:
    """An OCSPResponse with ``signature`` in the BasicOCSPResponse it carries.

    OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED,
    responseBytes [0] EXPLICIT SEQUENCE { responseType OID, response OCTET STRING } }
    and the OCTET STRING holds the BasicOCSPResponse DER. ``new_tbs`` as for
    :func:`replace_signature`.
    """
    start, end = _sole_element(response, 0x30)
    elements = _elements(response, start, end)
    if len(elements) != 2 or elements[0][0] != 0x0A or elements[1][0] != 0xA0:
        raise ValueError("not a successful OCSPResponse")
    status = response[elements[0][1] : elements[0][2]]
    explicit = response[elements[1][1] : elements[1][2]]
    inner_start, inner_end = _sole_element(explicit, 0xA0)
    response_bytes = explicit[inner_start:inner_end]
    rb_start, rb_end = _sole_element(response_bytes, 0x30)
    rb_elements = _elements(response_bytes, rb_start, rb_end)
    if len(rb_elements) != 2 or rb_elements[0][0] != 0x06 or rb_elements[1][0] != 0x04:
        raise ValueError("bad OCSP ResponseBytes")
    oid = response_bytes[rb_elements[0][1] : rb_elements[0][2]]
    octets = response_bytes[rb_elements[1][1] : rb_elements[1][2]]
    basic_start, basic_end = _sole_element(octets, 0x04)
    basic = replace_signature(octets[basic_start:basic_end], tbs, signature, new_tbs=new_tbs)
    return _tlv(0x30, status + _tlv(0xA0, _tlv(0x30, oid + _tlv(0x04, basic))))


def public_key_hash(certificate: x509.Certificate) -> bytes:
    """SHA-1 of the certificate's subjectPublicKey bits: an OCSP ResponderID KeyHash."""
    spki = certificate.public_key().public_bytes(Encoding.DER,
                                                 PublicFormat.SubjectPublicKeyInfo)
    start, end = _sole_element(spki, 0x30)
    elements = _elements(spki, start, end)
    if len(elements) != 2 or elements[1][0] != 0x03:
        raise ValueError("bad SubjectPublicKeyInfo")
    _, body, _ = _header(spki, elements[1][1])
    return hashlib.sha1(spki[body + 1 : elements[1][2]]).digest()  # skip the unused-bits byte


def replace_responder_key_hash(tbs_response: bytes, key_hash: bytes) -> bytes:
    """ResponseData ``tbs_response`` with its responderID byKey set to ``key_hash``.

    ResponseData ::= SEQUENCE { version [0] EXPLICIT DEFAULT v1, responderID ResponderID,
    producedAt, responses, responseExtensions [1] } and ResponderID byKey is
    [2] EXPLICIT OCTET STRING.
    """
    start, end = _sole_element(tbs_response, 0x30)
    elements = _elements(tbs_response, start, end)
    index = 1 if elements and elements[0][0] == 0xA0 else 0
    if len(elements) <= index or elements[index][0] != 0xA2:
        raise ValueError("the OCSP response names its responder by key hash")
    _, id_start, id_end = elements[index]
    parts = [tbs_response[s:e] for _, s, e in elements]
    inner_start, inner_end = _sole_element(tbs_response[id_start:id_end], 0xA2)
    _sole_element(tbs_response[id_start:id_end][inner_start:inner_end], 0x04)
    parts[index] = _tlv(0xA2, _tlv(0x04, key_hash))
    return _tlv(0x30, b"".join(parts))


# --- key references (RFC 7512) ----------------------------------------------------------

_UNRESERVED = "-._~"


@dataclass(frozen=True)
class KeyReference:
    """Where a key lives: token label, key label and (optionally) CKA_ID. Holds no secret."""

    token: str
    object: str
    id: bytes | None = None

    def __str__(self) -> str:
        parts = [f"token={quote(self.token, safe=_UNRESERVED)}",
                 f"object={quote(self.object, safe=_UNRESERVED)}"]
        if self.id is not None:
            parts.append("id=" + "".join(f"%{b:02x}" for b in self.id))
        parts.append("type=private")
        return "pkcs11:" + ";".join(parts)

    @classmethod
    def parse(cls, reference: str) -> KeyReference:
        """Parse ``pkcs11:token=...;object=...[;id=...][;type=private]``.

        Refuses a query part (``?pin-value=`` and friends): a stored reference must
        never carry a PIN.
        """
        if not isinstance(reference, str) or not reference.startswith("pkcs11:"):
            raise CaKeyError("a PKCS#11 key reference starts with 'pkcs11:'")
        body = reference[len("pkcs11:") :]
        if "?" in body or "#" in body:
            raise CaKeyError("a PKCS#11 key reference must not have a query (no PIN in it)")
        attributes: dict[str, bytes] = {}
        for part in filter(None, body.split(";")):
            name, sep, value = part.partition("=")
            if not sep or not name or name in attributes:
                raise CaKeyError(f"bad attribute {name!r} in a PKCS#11 key reference")
            attributes[name] = unquote_to_bytes(value)
        try:
            token = attributes.pop("token").decode("utf-8")
            label = attributes.pop("object").decode("utf-8")
        except KeyError:
            raise CaKeyError("a PKCS#11 key reference needs token= and object=") from None
        except UnicodeDecodeError:
            raise CaKeyError("token and object labels must be UTF-8") from None
        key_id = attributes.pop("id", None)
        kind = attributes.pop("type", b"private")
        if kind != b"private":
            raise CaKeyError("a PKCS#11 key reference must name a private key (type=private)")
        if attributes:
            names = ", ".join(sorted(attributes))
            raise CaKeyError(f"unsupported attributes in a PKCS#11 key reference: {names}")
        if not token or not label or key_id == b"":
            raise CaKeyError("token, object and id must not be empty")
        return cls(token=token, object=label, id=key_id)


# --- PINs -------------------------------------------------------------------------------


def _pin_bytes(pin: str | bytes) -> bytes:
    if isinstance(pin, str):
        pin = pin.encode("utf-8")
    if not isinstance(pin, (bytes, bytearray)) or not pin:
        raise CaKeyError("a non-empty PKCS#11 PIN is required")
    return bytes(pin)


def pin_from_environment(environ: Mapping[str, str] | None = None) -> bytes:
    """The token PIN from ``CHANCERY_PKCS11_PIN_FILE`` (preferred) or ``CHANCERY_PKCS11_PIN``.

    A trailing newline in the file is dropped. Raises :class:`CaKeyError` when neither
    is set or the file cannot be read (the message names the variable, never the PIN).
    """
    environ = os.environ if environ is None else environ
    path = environ.get("CHANCERY_PKCS11_PIN_FILE", "")
    if path:
        try:
            with open(path, "rb") as handle:
                pin = handle.read().rstrip(b"\r\n")
        except OSError as exc:
            raise CaKeyError(
                f"cannot read CHANCERY_PKCS11_PIN_FILE ({exc.strerror or 'error'})"
            ) from None
        if not pin:
            raise CaKeyError("CHANCERY_PKCS11_PIN_FILE is empty")
        return pin
    value = environ.get("CHANCERY_PKCS11_PIN", "")
    if value:
        return value.encode("utf-8")
    raise CaKeyError("no PKCS#11 PIN: set CHANCERY_PKCS11_PIN_FILE or CHANCERY_PKCS11_PIN")


# --- tokens -----------------------------------------------------------------------------


def _pkcs11():
    try:
        import pkcs11
    except ImportError:  # pragma: no cover - the package is in requirements.lock
        raise CaKeyError("python-pkcs11 is not installed") from None
    return pkcs11


def _session_lost_errors() -> tuple[type[BaseException], ...]:
    exc = _pkcs11().exceptions
    return (exc.SessionHandleInvalid, exc.SessionClosed, exc.UserNotLoggedIn,
            exc.DeviceRemoved, exc.TokenNotPresent)


class Pkcs11Token:
    """A logged-in session on one token of one PKCS#11 module, shared by the process.

    Get one with :meth:`open`; every token operation goes through :meth:`run`, which
    serialises them and reopens a session the token dropped.
    """

    __slots__ = ("_module", "_label", "_pin", "_lib", "_token", "_session", "_lock",
                 "_generation", "__weakref__")

    _registry: dict[tuple[str, str], Pkcs11Token] = {}
    _registry_lock = threading.Lock()

    def __init__(self, module: str, label: str, pin: bytes) -> None:
        """Use :meth:`open`: it shares one instance per token (PKCS#11 logins are per process)."""
        self._module = module
        self._label = label
        self._pin = pin
        self._lock = threading.RLock()
        self._lib: Any = None
        self._token: Any = None
        self._session: Any = None
        self._generation = 0
        self._connect()

    @classmethod
    def open(cls, module: str, token_label: str, pin: str | bytes) -> Pkcs11Token:
        """The process's session on ``token_label`` in ``module``, logging in with ``pin``.

        Raises :class:`CaKeyError` when the module cannot be loaded, the token is not
        there or the PIN is wrong (also when the token is already open with another PIN).
        """
        pin = _pin_bytes(pin)
        if not token_label:
            raise CaKeyError("a PKCS#11 token label is required")
        key = (str(module), token_label)
        with cls._registry_lock:
            token = cls._registry.get(key)
            if token is not None:
                if not hmac.compare_digest(token._pin, pin):
                    raise CaKeyError(
                        f"could not log in to PKCS#11 token {token_label!r}: wrong PIN"
                    )
                return token
            token = cls(str(module), token_label, pin)
            cls._registry[key] = token
            return token

    @property
    def label(self) -> str:
        return self._label

    @property
    def module(self) -> str:
        return self._module

    def _connect(self) -> None:
        pkcs11 = _pkcs11()
        errors = pkcs11.exceptions
        try:
            self._lib = pkcs11.lib(self._module)
        except errors.PKCS11Error:
            raise CaKeyError(f"cannot load the PKCS#11 module {self._module!r}") from None
        try:
            self._token = self._lib.get_token(token_label=self._label)
        except errors.NoSuchToken:
            raise CaKeyError(f"no PKCS#11 token labelled {self._label!r}") from None
        except errors.MultipleTokensReturned:
            raise CaKeyError(f"several PKCS#11 tokens are labelled {self._label!r}") from None
        except errors.PKCS11Error as exc:
            raise CaKeyError(
                f"cannot list the tokens of {self._module!r} ({type(exc).__name__})"
            ) from None
        try:
            pin = self._pin.decode("utf-8")
        except UnicodeDecodeError:
            raise CaKeyError("the PKCS#11 PIN must be UTF-8") from None
        try:
            try:
                self._session = self._token.open(rw=True, user_pin=pin)
            except errors.UserAlreadyLoggedIn:
                # Another session of this process is logged in already (logins are
                # per application): a plain session shares that login.
                self._session = self._token.open(rw=True)
        except (errors.PinIncorrect, errors.PinInvalid, errors.PinLenRange):
            raise CaKeyError(
                f"could not log in to PKCS#11 token {self._label!r}: wrong PIN"
            ) from None
        except errors.PinLocked:
            raise CaKeyError(f"the PIN of PKCS#11 token {self._label!r} is locked") from None
        except errors.PKCS11Error as exc:
            raise CaKeyError(
                f"could not open a session on PKCS#11 token {self._label!r} "
                f"({type(exc).__name__})"
            ) from None
        self._generation += 1

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except Exception:  # already gone: that is why we are reconnecting
                pass

    @property
    def generation(self) -> int:
        """Bumped each time a session is (re)opened: object handles may have changed."""
        return self._generation

    def run(self, operation: Callable[[Any], T]) -> T:
        """Run ``operation(session)`` under the token lock; reopen a dropped session once.

        Errors other than a lost session propagate (callers turn them into
        :class:`CaKeyError`).
        """
        lost = _session_lost_errors()
        with self._lock:
            if self._session is None:
                self._connect()
            try:
                return operation(self._session)
            except lost:
                self._drop_session()
                self._connect()
                return operation(self._session)

    def close(self) -> None:
        """Close the session (logging the process out of the token) and forget it."""
        with self._registry_lock:
            if self._registry.get((self._module, self._label)) is self:
                del self._registry[(self._module, self._label)]
        with self._lock:
            self._drop_session()

    @classmethod
    def close_all(cls, module: str | None = None) -> None:
        """Close every shared session (of ``module`` only, if given).

        For a process about to re-initialise the module (tests) or a forked child: PKCS#11
        sessions do not survive ``fork``. Keys still held reopen a session on next use.
        """
        with cls._registry_lock:
            tokens = [t for (m, _), t in cls._registry.items() if module in (None, m)]
        for token in tokens:
            token.close()

    def __repr__(self) -> str:
        return f"<Pkcs11Token {self._label!r} module={self._module!r}>"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("PKCS#11 tokens cannot be pickled")


# --- keys -------------------------------------------------------------------------------

# X9.62 namedCurve parameters (DER OID) per EC key type.
_EC_PARAMS = {
    KeyType.EC_P256: bytes.fromhex("06082a8648ce3d030107"),
    KeyType.EC_P384: bytes.fromhex("06052b81040022"),
    KeyType.EC_P521: bytes.fromhex("06052b81040023"),
}

# DER DigestInfo prefixes (RFC 8017 9.2 note 1) for PKCS#1 v1.5 over a precomputed hash.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    return hashlib.new(algorithm.name, data).digest()


def _ec_point(raw: bytes, key_type: KeyType) -> bytes:
    """The X9.62 point from CKA_EC_POINT, which modules give DER-wrapped or raw."""
    size = 1 + 2 * ((key_type.curve().key_size + 7) // 8)
    if len(raw) == size and raw[0] == 0x04:
        return raw
    start, end = _sole_element(raw, 0x04)
    return raw[start:end]


class Pkcs11Key(CaKey):
    """A CA key whose private half lives, sensitive and not extractable, in a PKCS#11 token.

    Create with :meth:`generate` (key ceremony) or :meth:`load` / :func:`open_key`.
    Store :attr:`reference`; it names the key and holds no secret.
    """

    __slots__ = ("_token", "_label", "_id", "_key_type", "_public_key", "_handle",
                 "_handle_generation")

    def __init__(self, token: Pkcs11Token, label: str, key_id: bytes | None) -> None:
        """Use :meth:`generate` or :meth:`load`: this looks the key up on the token."""
        self._token = token
        self._label = label
        self._id = key_id
        self._handle: Any = None
        self._handle_generation = -1
        self._key_type, self._public_key = token.run(self._read_public_key)

    # -- creation and lookup --

    @classmethod
    def generate(cls, token: Pkcs11Token, key_type: KeyType | str, label: str) -> Pkcs11Key:
        """Generate a key pair on ``token``, labelled ``label``, with a random CKA_ID.

        The private key is a token object, private, sensitive, never extractable and
        usable only to sign. Refuses a label already used by a key on the token.
        """
        try:
            key_type = KeyType(key_type)
        except ValueError:
            raise CaKeyError(f"unknown key type {key_type!r}") from None
        if not label:
            raise CaKeyError("a PKCS#11 key label is required")
        pkcs11 = _pkcs11()
        attr, flags = pkcs11.Attribute, pkcs11.MechanismFlag
        key_id = os.urandom(16)
        private = {attr.TOKEN: True, attr.PRIVATE: True, attr.SENSITIVE: True,
                   attr.EXTRACTABLE: False, attr.SIGN: True, attr.DECRYPT: False,
                   attr.UNWRAP: False, attr.DERIVE: False}
        public = {attr.TOKEN: True, attr.PRIVATE: False, attr.VERIFY: True,
                  attr.ENCRYPT: False, attr.WRAP: False}
        options = dict(store=True, label=label, id=key_id,
                       capabilities=flags.SIGN | flags.VERIFY,
                       public_template=public, private_template=private)

        def create(session: Any) -> None:
            existing = list(session.get_objects({attr.LABEL: label,
                                                 attr.CLASS: pkcs11.ObjectClass.PRIVATE_KEY}))
            if existing:
                raise CaKeyError(f"PKCS#11 token {token.label!r} already has a key {label!r}")
            if key_type.is_rsa:
                session.generate_keypair(pkcs11.KeyType.RSA, key_type.rsa_key_size, **options)
            else:
                params = session.create_domain_parameters(
                    pkcs11.KeyType.EC, {attr.EC_PARAMS: _EC_PARAMS[key_type]}, local=True)
                params.generate_keypair(**options)

        try:
            token.run(create)
        except pkcs11.exceptions.PKCS11Error as exc:
            raise CaKeyError(
                f"could not generate a {key_type.value} key on PKCS#11 token "
                f"{token.label!r} ({type(exc).__name__})"
            ) from None
        return cls.load(token, label, key_id)

    @classmethod
    def load(cls, token: Pkcs11Token, label: str, key_id: bytes | None = None) -> Pkcs11Key:
        """The key labelled ``label`` (and with CKA_ID ``key_id`` if given) on ``token``."""
        if not label:
            raise CaKeyError("a PKCS#11 key label is required")
        try:
            return cls(token, label, key_id)
        except _pkcs11().exceptions.PKCS11Error as exc:
            raise CaKeyError(
                f"could not load key {label!r} from PKCS#11 token {token.label!r} "
                f"({type(exc).__name__})"
            ) from None

    def _find(self, session: Any, object_class: Any) -> Any:
        pkcs11 = _pkcs11()
        template = {pkcs11.Attribute.LABEL: self._label, pkcs11.Attribute.CLASS: object_class}
        if self._id is not None:
            template[pkcs11.Attribute.ID] = self._id
        found = list(session.get_objects(template))
        kind = "private" if object_class == pkcs11.ObjectClass.PRIVATE_KEY else "public"
        if not found:
            raise CaKeyError(
                f"PKCS#11 token {self._token.label!r} has no {kind} key {self._label!r}")
        if len(found) > 1:
            raise CaKeyError(
                f"PKCS#11 token {self._token.label!r} has several {kind} keys {self._label!r}")
        return found[0]

    def _private(self, session: Any) -> Any:
        """The private key object, looked up again after the session was reopened."""
        if self._handle is None or self._handle_generation != self._token.generation:
            self._handle = self._find(session, _pkcs11().ObjectClass.PRIVATE_KEY)
            self._handle_generation = self._token.generation
        return self._handle

    def _read_public_key(self, session: Any) -> tuple[KeyType, CaPublicKey]:
        pkcs11 = _pkcs11()
        attr = pkcs11.Attribute
        private = self._private(session)
        if self._id is None:
            self._id = private.id
        public = self._find(session, pkcs11.ObjectClass.PUBLIC_KEY)
        if private.key_type == pkcs11.KeyType.RSA:
            numbers = rsa.RSAPublicNumbers(
                int.from_bytes(public[attr.PUBLIC_EXPONENT], "big"),
                int.from_bytes(public[attr.MODULUS], "big"))
            public_key: CaPublicKey = numbers.public_key()
        elif private.key_type == pkcs11.KeyType.EC:
            params = bytes(public[attr.EC_PARAMS])
            key_type = next((kt for kt, der in _EC_PARAMS.items() if der == params), None)
            if key_type is None:
                raise CaKeyError(f"key {self._label!r} is on a curve a CA may not use")
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(
                key_type.curve(), _ec_point(bytes(public[attr.EC_POINT]), key_type))
        else:
            raise CaKeyError(f"key {self._label!r} has an algorithm a CA may not use")
        try:
            return KeyType.from_public_key(public_key), public_key
        except ValueError as exc:
            raise CaKeyError(str(exc)) from None

    # -- CaKey --

    @property
    def key_type(self) -> KeyType:
        return self._key_type

    def public_key(self) -> CaPublicKey:
        return self._public_key

    @property
    def label(self) -> str:
        return self._label

    @property
    def token(self) -> Pkcs11Token:
        return self._token

    @property
    def reference(self) -> str:
        """RFC 7512 URI naming this key: store it instead of key material."""
        return str(KeyReference(self._token.label, self._label, self._id))

    def sign_bytes(self, data: bytes) -> bytes:
        """Sign ``data`` with this key's hash: a DER ECDSA or a PKCS#1 v1.5 signature.

        The hash is computed here; only the digest goes to the token.
        """
        pkcs11 = _pkcs11()
        algorithm = self.hash_algorithm()
        digest = _digest(algorithm, data)
        if self._key_type.is_rsa:
            message, mechanism = _DIGEST_INFO[algorithm.name] + digest, pkcs11.Mechanism.RSA_PKCS
        else:
            message, mechanism = digest, pkcs11.Mechanism.ECDSA
        try:
            raw = self._token.run(lambda s: self._private(s).sign(message, mechanism=mechanism))
        except pkcs11.exceptions.PKCS11Error as exc:
            raise CaKeyError(
                f"PKCS#11 token {self._token.label!r} could not sign with key "
                f"{self._label!r} ({type(exc).__name__})"
            ) from None
        if self._key_type.is_rsa:
            return bytes(raw)
        half = len(raw) // 2
        if not raw or len(raw) % 2:
            raise CaKeyError("the PKCS#11 token returned a malformed ECDSA signature")
        return encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                    int.from_bytes(raw[half:], "big"))

    def _verify(self, signature: bytes, data: bytes) -> None:
        try:
            if isinstance(self._public_key, rsa.RSAPublicKey):
                self._public_key.verify(signature, data, padding.PKCS1v15(),
                                        self.hash_algorithm())
            else:
                self._public_key.verify(signature, data, ec.ECDSA(self.hash_algorithm()))
        except InvalidSignature:
            raise CaKeyError(
                f"the signature of PKCS#11 key {self._label!r} does not verify "
                "under its public key"
            ) from None

    def _throwaway(self):
        return throwaway_key(self._key_type)

    def _sign_document(self, builder: Any, what: str, tbs_of: Callable[[Any], bytes],
                       load: Callable[[bytes], T]) -> T:
        """Have cryptography build and sign ``builder`` with a throwaway key, have the
        token sign those to-be-signed bytes, put its signature in place of the throwaway
        one, and check the result is the same document, verifying under our key."""
        probe = builder.sign(self._throwaway(), self.hash_algorithm())
        tbs = tbs_of(probe)
        signature = self.sign_bytes(tbs)
        try:
            document = load(replace_signature(probe.public_bytes(Encoding.DER), tbs, signature))
        except ValueError:
            raise CaKeyError(f"could not rebuild the {what}") from None
        if tbs_of(document) != tbs:
            raise CaKeyError(f"the rebuilt {what} differs from the one signed")
        self._verify(document.signature, tbs)  # type: ignore[attr-defined]
        return document

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return self._sign_document(builder, "certificate", lambda c: c.tbs_certificate_bytes,
                                   x509.load_der_x509_certificate)

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        return self._sign_document(builder, "CRL", lambda c: c.tbs_certlist_bytes,
                                   x509.load_der_x509_crl)

    def sign_ocsp_response(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse:
        """Sign an OCSP response; its responder certificate must carry this key.

        cryptography refuses to sign an OCSP response with a key that does not match
        the responder certificate, so the throwaway key signs a copy of the builder whose
        responder is a stand-in certificate (same subject, throwaway public key); for a
        responder named by key hash, the real key's hash is put back into the
        to-be-signed bytes before the token signs them. This reads the builder's private
        fields (cryptography is pinned; the tests catch a change).
        """
        try:
            responder, encoding = builder._responder_id  # type: ignore[attr-defined,misc]
            fields = (builder._response, builder._certs, builder._extensions)  # type: ignore[attr-defined]
        except (AttributeError, TypeError, ValueError):
            raise CaKeyError("the OCSP response builder has no responder (or an unknown shape)"
                             ) from None
        if not self.matches(responder):
            raise CaKeyError("the OCSP responder certificate does not carry this key")
        throwaway = self._throwaway()
        stand_in = (
            x509.CertificateBuilder().serial_number(1).issuer_name(responder.subject)
            .subject_name(responder.subject).public_key(throwaway.public_key())
            .not_valid_before(responder.not_valid_before_utc)
            .not_valid_after(responder.not_valid_after_utc)
            .sign(throwaway, self.hash_algorithm())
        )
        probe = ocsp.OCSPResponseBuilder(fields[0], (stand_in, encoding), fields[1],
                                         fields[2]).sign(throwaway, self.hash_algorithm())
        probe_tbs = probe.tbs_response_bytes
        by_key = encoding is ocsp.OCSPResponderEncoding.HASH
        try:
            tbs = (replace_responder_key_hash(probe_tbs, public_key_hash(responder))
                   if by_key else probe_tbs)
            signature = self.sign_bytes(tbs)
            response = ocsp.load_der_ocsp_response(replace_ocsp_signature(
                probe.public_bytes(Encoding.DER), probe_tbs, signature, new_tbs=tbs))
        except ValueError:
            raise CaKeyError("could not rebuild the OCSP response") from None
        if response.tbs_response_bytes != tbs or (
            response.responder_key_hash != public_key_hash(responder) if by_key
            else response.responder_name != responder.subject
        ):
            raise CaKeyError("the rebuilt OCSP response differs from the one signed")
        self._verify(response.signature, response.tbs_response_bytes)
        return response

    def __repr__(self) -> str:
        return (f"<Pkcs11Key {self._key_type.value} {self.reference} "
                f"spki-sha256={self.fingerprint[:16]}>")

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("CA keys cannot be pickled")

    def __copy__(self) -> Pkcs11Key:
        return self

    def __deepcopy__(self, memo: dict) -> Pkcs11Key:
        return self


def open_key(reference: str, *, module: str, pin: str | bytes) -> Pkcs11Key:
    """The key named by ``reference`` (see :class:`KeyReference`) in ``module``'s token."""
    ref = KeyReference.parse(reference)
    return Pkcs11Key.load(Pkcs11Token.open(module, ref.token, pin), ref.object, ref.id)


def _only_token(module: str) -> str:
    """The label of the one initialised token in ``module`` (refuses none or several)."""
    pkcs11 = _pkcs11()
    try:
        tokens = pkcs11.lib(module).get_tokens()
        labels = sorted({t.label for t in tokens
                         if t.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED and t.label})
    except pkcs11.exceptions.PKCS11Error as exc:
        raise CaKeyError(f"cannot list the tokens of {module!r} ({type(exc).__name__})") from None
    if len(labels) != 1:
        found = ", ".join(repr(label) for label in labels) or "none"
        raise CaKeyError(f"name the PKCS#11 token to use: {module!r} has {found}")
    return labels[0]


def generate_key(key_type: KeyType | str, *, label: str, module: str, pin: str | bytes,
                 token: str | None = None) -> Pkcs11Key:
    """Generate a CA key labelled ``label`` on ``token`` (default: the module's only token)."""
    token_label = token or _only_token(module)
    return Pkcs11Key.generate(Pkcs11Token.open(module, token_label, pin), key_type, label)
