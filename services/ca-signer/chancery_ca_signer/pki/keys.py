"""CA signing keys.

Everything that signs with a CA key goes through :class:`CaKey`, so the rest of the
PKI core never holds a private key object. This is what lets a PKCS#11/HSM backend be
added later: it only has to implement the few methods below.

:class:`EncryptedPemKey` is the software backend. The key is stored at rest only as
PKCS#8 PEM encrypted with a passphrase (``BestAvailableEncryption``: PBES2, PBKDF2-
HMAC-SHA256 with 2048 iterations, AES-256-CBC). Because that KDF is cheap, the
passphrase must be a high-entropy secret (random bytes from a secret store), not a
human password; :func:`EncryptedPemKey.generate` enforces a minimum length.

No key material and no passphrase ever appears in an exception message or a repr.
"""

from __future__ import annotations

import abc
import enum
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp

__all__ = [
    "KeyType",
    "CaKey",
    "CaKeyError",
    "EncryptedPemKey",
    "CaPublicKey",
    "CaPrivateKey",
    "generate_private_key",
    "MIN_PASSPHRASE_LENGTH",
]

CaPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
CaPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

#: Minimum passphrase length (bytes, after UTF-8 encoding) when encrypting a key.
MIN_PASSPHRASE_LENGTH = 16


class CaKeyError(Exception):
    """A CA key could not be created, loaded or used. The message never holds secrets."""


class KeyType(enum.StrEnum):
    """Key algorithms a CA key may use (BR 6.1.5: RSA >= 2048, ECDSA P-256/P-384/P-521)."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    EC_P521 = "ec-p521"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    def __str__(self) -> str:
        return self.value

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa-")

    @property
    def is_ec(self) -> bool:
        return self.value.startswith("ec-")

    @property
    def rsa_key_size(self) -> int:
        if not self.is_rsa:
            raise ValueError(f"{self.value} is not an RSA key type")
        return int(self.value.split("-", 1)[1])

    def curve(self) -> ec.EllipticCurve:
        """The named curve of an EC key type."""
        curves = {
            KeyType.EC_P256: ec.SECP256R1,
            KeyType.EC_P384: ec.SECP384R1,
            KeyType.EC_P521: ec.SECP521R1,
        }
        if self not in curves:
            raise ValueError(f"{self.value} is not an EC key type")
        return curves[self]()

    def hash_algorithm(self) -> hashes.HashAlgorithm:
        """The signature hash a CA key of this type uses.

        BR 7.1.3.2: ECDSA P-256 signs with SHA-256, P-384 with SHA-384, P-521 with
        SHA-512. RSA may use SHA-256/384/512; SHA-256 is the most widely supported.
        """
        if self is KeyType.EC_P384:
            return hashes.SHA384()
        if self is KeyType.EC_P521:
            return hashes.SHA512()
        return hashes.SHA256()

    @classmethod
    def from_public_key(cls, public_key: object) -> KeyType:
        """The key type of a public key, or ``ValueError`` if it is not allowed for a CA."""
        if isinstance(public_key, rsa.RSAPublicKey):
            size = public_key.key_size
            for kt in (cls.RSA_2048, cls.RSA_3072, cls.RSA_4096):
                if kt.rsa_key_size == size:
                    return kt
            raise ValueError(f"unsupported RSA CA key size {size}")
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            by_name = {"secp256r1": cls.EC_P256, "secp384r1": cls.EC_P384, "secp521r1": cls.EC_P521}
            kt = by_name.get(public_key.curve.name)
            if kt is None:
                raise ValueError(f"unsupported EC curve {public_key.curve.name}")
            return kt
        raise ValueError(f"unsupported CA key algorithm {type(public_key).__name__}")


def generate_private_key(key_type: KeyType) -> CaPrivateKey:
    """Generate a fresh private key of ``key_type`` (RSA uses e = 65537)."""
    key_type = KeyType(key_type)
    if key_type.is_rsa:
        return rsa.generate_private_key(public_exponent=65537, key_size=key_type.rsa_key_size)
    return ec.generate_private_key(key_type.curve())


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    if not isinstance(passphrase, (bytes, bytearray)) or not passphrase:
        raise CaKeyError("a non-empty passphrase is required")
    return bytes(passphrase)


def _spki_fingerprint(public_key: CaPublicKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo, hex: safe to log, identifies the key."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


class CaKey(abc.ABC):
    """A CA signing key. Signs certificates, CRLs and OCSP responses; never exports itself.

    Implementations: :class:`EncryptedPemKey` (software); a PKCS#11 backend can be added
    by implementing ``key_type``, ``public_key`` and the ``sign_*`` methods.
    """

    @property
    @abc.abstractmethod
    def key_type(self) -> KeyType:
        """The key algorithm (decides the signature algorithm and hash)."""

    @abc.abstractmethod
    def public_key(self) -> CaPublicKey:
        """The public half, to put in CA certificates and to verify signatures."""

    @abc.abstractmethod
    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        """Sign a fully populated certificate builder with this key."""

    @abc.abstractmethod
    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        """Sign a fully populated CRL builder with this key."""

    @abc.abstractmethod
    def sign_ocsp_response(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse:
        """Sign a fully populated OCSP response builder with this key."""

    def hash_algorithm(self) -> hashes.HashAlgorithm:
        """The hash used for every signature made with this key."""
        return self.key_type.hash_algorithm()

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the public key's SPKI: a safe, loggable key identifier."""
        return _spki_fingerprint(self.public_key())

    def matches(self, certificate: x509.Certificate) -> bool:
        """True when ``certificate`` carries this key's public key."""
        try:
            return _spki_fingerprint(certificate.public_key()) == self.fingerprint  # type: ignore[arg-type]
        except Exception:
            return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key_type.value} spki-sha256={self.fingerprint[:16]}>"

    __str__ = __repr__


class EncryptedPemKey(CaKey):
    """A software CA key whose only at-rest form is passphrase-encrypted PKCS#8 PEM.

    The decrypted key lives only inside this object (in ca-signer's memory); the
    passphrase is not kept. Persist :attr:`encrypted_pem`, never anything else.
    Instances refuse to be pickled so the key cannot leak through a queue or cache.
    """

    __slots__ = ("_private_key", "_encrypted_pem", "_key_type")

    def __init__(self, private_key: CaPrivateKey, encrypted_pem: bytes) -> None:
        """Prefer :meth:`generate` or :meth:`load`; this trusts its arguments to match."""
        try:
            key_type = KeyType.from_public_key(private_key.public_key())
        except ValueError as exc:
            raise CaKeyError(str(exc)) from None
        self._private_key = private_key
        self._encrypted_pem = bytes(encrypted_pem)
        self._key_type = key_type

    @classmethod
    def generate(cls, key_type: KeyType, passphrase: str | bytes) -> EncryptedPemKey:
        """Generate a new key of ``key_type`` and encrypt it under ``passphrase``."""
        try:
            key_type = KeyType(key_type)
        except ValueError:
            raise CaKeyError(f"unknown key type {key_type!r}") from None
        private_key = generate_private_key(key_type)
        return cls(private_key, cls._encrypt(private_key, passphrase))

    @classmethod
    def load(cls, encrypted_pem: str | bytes, passphrase: str | bytes) -> EncryptedPemKey:
        """Decrypt a stored key. Refuses unencrypted PEM (keys are never clear on disk)."""
        if isinstance(encrypted_pem, str):
            encrypted_pem = encrypted_pem.encode("ascii", "replace")
        if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" not in encrypted_pem:
            raise CaKeyError("CA key PEM is not an encrypted PKCS#8 key")
        password = _passphrase_bytes(passphrase)
        try:
            private_key = serialization.load_pem_private_key(encrypted_pem, password=password)
        except (ValueError, TypeError):
            # Do not chain the original exception: keep the message free of details.
            raise CaKeyError(
                "could not decrypt the CA key: wrong passphrase or damaged PEM"
            ) from None
        if not isinstance(private_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise CaKeyError("CA key has an unsupported algorithm")
        return cls(private_key, encrypted_pem)

    @staticmethod
    def _encrypt(private_key: CaPrivateKey, passphrase: str | bytes) -> bytes:
        password = _passphrase_bytes(passphrase)
        if len(password) < MIN_PASSPHRASE_LENGTH:
            raise CaKeyError(
                f"CA key passphrase must be at least {MIN_PASSPHRASE_LENGTH} bytes "
                "(use a random secret, not a password)"
            )
        return private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )

    @property
    def encrypted_pem(self) -> bytes:
        """The at-rest form: PKCS#8 PEM encrypted under the passphrase."""
        return self._encrypted_pem

    def reencrypt(self, new_passphrase: str | bytes) -> bytes:
        """Encrypted PEM of the same key under a new passphrase (passphrase rotation)."""
        return self._encrypt(self._private_key, new_passphrase)

    @property
    def key_type(self) -> KeyType:
        return self._key_type

    def public_key(self) -> CaPublicKey:
        return self._private_key.public_key()

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self._private_key, self.hash_algorithm())

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        return builder.sign(self._private_key, self.hash_algorithm())

    def sign_ocsp_response(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse:
        return builder.sign(self._private_key, self.hash_algorithm())

    def __reduce__(self):
        raise TypeError("CA keys cannot be pickled")

    def __copy__(self) -> EncryptedPemKey:
        return self

    def __deepcopy__(self, memo: dict) -> EncryptedPemKey:
        return self
