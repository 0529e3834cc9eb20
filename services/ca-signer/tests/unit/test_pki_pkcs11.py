"""The PKCS#11 key backend, against a throwaway SoftHSM2 token.

The DER helpers and key references are tested without a token. Everything else needs
SoftHSM2 (Debian package softhsm2): missing, it skips those tests locally and fails them
with CI=true. One token directory per module run; three keys (P-256, P-384, RSA 2048)
generated once and reused.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import shutil
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from chancery_ca_signer.pki.crl import RevokedEntry, build_crl
from chancery_ca_signer.pki.csr import parse_csr
from chancery_ca_signer.pki.hierarchy import create_issuing_ca, create_root_ca
from chancery_ca_signer.pki.issuance import issue_tls_certificate
from chancery_ca_signer.pki.keys import CaKeyError, KeyType
from chancery_ca_signer.pki.lint import (
    lint_ca_certificate,
    lint_subscriber_certificate,
    throwaway_key,
)
from chancery_ca_signer.pki.ocsp import CertificateState, OcspIssuer, respond
from chancery_ca_signer.pki.pkcs11 import (
    DEFAULT_SOFTHSM2_MODULE,
    KeyReference,
    Pkcs11Key,
    Pkcs11Token,
    generate_key,
    open_key,
    pin_from_environment,
    public_key_hash,
    replace_ocsp_signature,
    replace_responder_key_hash,
    replace_signature,
)
from chancery_ca_signer.testing import softhsm_tokens
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

MODULE = os.environ.get("CHANCERY_PKCS11_MODULE") or DEFAULT_SOFTHSM2_MODULE
TOKEN = "chancery-test"
OTHER_TOKEN = "chancery-other"
PIN = "pin-7f3a9c-secret"
SO_PIN = "so-pin-0b41d2"
BASE_URL = "http://pki.example.com"
KEY_TYPES = (KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048)
#: The issuing CA under a root of each key type: each key signs as a root and as an issuing CA.
ISSUING_UNDER = {KeyType.EC_P256: KeyType.EC_P384, KeyType.EC_P384: KeyType.RSA_2048,
                 KeyType.RSA_2048: KeyType.EC_P256}
UTC = dt.UTC


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_softhsm() -> str:
    """softhsm2-util's path; skips (fails in CI) when SoftHSM2 or openssl is missing."""
    util = shutil.which("softhsm2-util")
    missing = [name for name, present in (("softhsm2", util and Path(MODULE).exists()),
                                          ("openssl", shutil.which("openssl")))
               if not present]
    if missing:
        reason = f"missing: {', '.join(missing)} (run `make system-packages` as root)"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return util


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def _openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


# --- DER helpers, without a token -------------------------------------------------------


@pytest.fixture(scope="module")
def software_signed(now, rsa_key):
    """A certificate, CRL and OCSP response built once, to sign with two RSA keys.

    PKCS#1 v1.5 is deterministic, so swapping the throwaway signature for the other key's
    must give exactly the DER cryptography produces with that key. Per kind:
    (builder to probe with the throwaway key, builder the real key signs, tbs, swap).
    """
    other = throwaway_key(KeyType.RSA_2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DER test")])

    def self_signed(key):
        return (x509.CertificateBuilder().serial_number(42).issuer_name(name)
                .subject_name(name).public_key(key.public_key())
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))

    cert_builder = self_signed(rsa_key)
    crl_builder = (x509.CertificateRevocationListBuilder().issuer_name(name).last_update(now)
                   .next_update(now + dt.timedelta(days=1)))
    issuer = cert_builder.sign(rsa_key, hashes.SHA256())
    stand_in = self_signed(other).sign(other, hashes.SHA256())

    def ocsp_builder(responder, encoding=ocsp.OCSPResponderEncoding.NAME):
        # cryptography wants the responder certificate to match the signing key
        return (ocsp.OCSPResponseBuilder()
                .add_response(cert=issuer, issuer=issuer, algorithm=hashes.SHA1(),
                              cert_status=ocsp.OCSPCertStatus.GOOD, this_update=now,
                              next_update=now + dt.timedelta(days=1), revocation_time=None,
                              revocation_reason=None)
                .responder_id(encoding, responder)
                .certificates([issuer]))  # certs after the signature must survive

    return SimpleNamespace(key=rsa_key, other=other, issuer=issuer, stand_in=stand_in,
                           ocsp_builder=ocsp_builder, kinds={
        "certificate": (cert_builder, cert_builder, lambda o: o.tbs_certificate_bytes,
                        replace_signature),
        "crl": (crl_builder, crl_builder, lambda o: o.tbs_certlist_bytes, replace_signature),
        "ocsp": (ocsp_builder(stand_in), ocsp_builder(issuer), lambda o: o.tbs_response_bytes,
                 replace_ocsp_signature),
    })


@pytest.mark.parametrize("kind", ["certificate", "crl", "ocsp"])
def test_swapping_the_signature_gives_the_der_the_real_key_would_have_made(software_signed, kind):
    probe_builder, real_builder, tbs_of, replace = software_signed.kinds[kind]
    probe = probe_builder.sign(software_signed.other, hashes.SHA256())
    expected = real_builder.sign(software_signed.key, hashes.SHA256()).public_bytes(Encoding.DER)
    tbs = tbs_of(probe)
    signature = software_signed.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    assert replace(probe.public_bytes(Encoding.DER), tbs, signature) == expected


def test_the_responder_key_hash_is_swapped_for_the_real_one(software_signed):
    by_key = ocsp.OCSPResponderEncoding.HASH
    probe = software_signed.ocsp_builder(software_signed.stand_in, by_key).sign(
        software_signed.other, hashes.SHA256())
    real = software_signed.ocsp_builder(software_signed.issuer, by_key).sign(
        software_signed.key, hashes.SHA256())
    assert public_key_hash(software_signed.issuer) == real.responder_key_hash
    assert probe.tbs_response_bytes != real.tbs_response_bytes
    swapped = replace_responder_key_hash(probe.tbs_response_bytes,
                                         public_key_hash(software_signed.issuer))
    assert swapped == real.tbs_response_bytes
    signature = software_signed.key.sign(swapped, padding.PKCS1v15(), hashes.SHA256())
    assert replace_ocsp_signature(probe.public_bytes(Encoding.DER), probe.tbs_response_bytes,
                                  signature, new_tbs=swapped) == real.public_bytes(Encoding.DER)


def test_the_key_hash_swap_refuses_a_responder_named_by_name(software_signed):
    probe = software_signed.ocsp_builder(software_signed.stand_in).sign(
        software_signed.other, hashes.SHA256())
    with pytest.raises(ValueError):
        replace_responder_key_hash(probe.tbs_response_bytes, b"\x00" * 20)


def test_a_shorter_ecdsa_signature_is_reencoded_with_the_right_lengths(now):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EC")])
    cert = (x509.CertificateBuilder().serial_number(7).issuer_name(name).subject_name(name)
            .public_key(key.public_key()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(throwaway_key(KeyType.EC_P256), hashes.SHA256()))
    tbs = cert.tbs_certificate_bytes
    while len(signature := key.sign(tbs, ec.ECDSA(hashes.SHA256()))) >= len(cert.signature):
        pass  # ECDSA signatures vary in length: want one shorter than the probe's
    rebuilt = x509.load_der_x509_certificate(
        replace_signature(cert.public_bytes(Encoding.DER), tbs, signature))
    assert rebuilt.signature == signature
    rebuilt.verify_directly_issued_by(rebuilt)


@pytest.mark.parametrize("damage", ["other tbs", "trailing byte", "truncated", "not a sequence"])
def test_signature_swap_refuses_damaged_input(software_signed, damage):
    builder, _, tbs_of, _ = software_signed.kinds["certificate"]
    probe = builder.sign(software_signed.other, hashes.SHA256())
    der, tbs = probe.public_bytes(Encoding.DER), tbs_of(probe)
    if damage == "other tbs":
        tbs = tbs[:-1] + bytes((tbs[-1] ^ 1,))
    elif damage == "trailing byte":
        der += b"\x00"
    elif damage == "truncated":
        der = der[:-5]
    else:
        der = b"\x31" + der[1:]
    with pytest.raises(ValueError):
        replace_signature(der, tbs, b"\x01" * 256)


def test_ocsp_swap_refuses_an_unsuccessful_response():
    unsigned = ocsp.OCSPResponseBuilder.build_unsuccessful(
        ocsp.OCSPResponseStatus.INTERNAL_ERROR).public_bytes(Encoding.DER)
    with pytest.raises(ValueError):
        replace_ocsp_signature(unsigned, b"\x30\x00", b"\x01")


# --- key references and PINs, without a token -------------------------------------------


@pytest.mark.parametrize("reference", [
    KeyReference("chancery", "issuing-2026", b"\x01\xab"),
    KeyReference("my token;=%", "a label/with spaces", None),
    KeyReference("tök", "ключ", b"\x00"),
])
def test_key_references_round_trip(reference):
    text = str(reference)
    assert text.startswith("pkcs11:") and text.endswith(";type=private")
    assert KeyReference.parse(text) == reference


@pytest.mark.parametrize("text", [
    "token=a;object=b",                                # no scheme
    "pkcs11:object=b",                                 # no token
    "pkcs11:token=a",                                  # no object
    "pkcs11:token=a;object=b?pin-value=1234",          # a PIN in the reference
    "pkcs11:token=a;object=b;type=public",             # not a private key
    "pkcs11:token=a;object=b;serial=1",                # unsupported attribute
    "pkcs11:token=a;token=c;object=b",                 # repeated attribute
    "pkcs11:token=;object=b",                          # empty label
])
def test_bad_key_references_are_refused(text):
    with pytest.raises(CaKeyError) as caught:
        KeyReference.parse(text)
    assert "1234" not in str(caught.value)


@pytest.mark.parametrize("files, env, expected", [
    ({"pin": b"from-file\n"}, {"CHANCERY_PKCS11_PIN_FILE": "pin"}, b"from-file"),
    ({}, {"CHANCERY_PKCS11_PIN": "from-env"}, b"from-env"),
    ({"pin": b"file-wins"}, {"CHANCERY_PKCS11_PIN_FILE": "pin", "CHANCERY_PKCS11_PIN": "env"},
     b"file-wins"),
    ({}, {}, None),
    ({"pin": b"\n"}, {"CHANCERY_PKCS11_PIN_FILE": "pin"}, None),
    ({}, {"CHANCERY_PKCS11_PIN_FILE": "missing"}, None),
])
def test_the_pin_comes_from_a_file_or_the_environment(tmp_path, files, env, expected):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    environ = {k: str(tmp_path / v) if k.endswith("_FILE") else v for k, v in env.items()}
    if expected is None:
        with pytest.raises(CaKeyError):
            pin_from_environment(environ)
    else:
        assert pin_from_environment(environ) == expected


# --- against SoftHSM2 --------------------------------------------------------------------


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory):
    """Two fresh SoftHSM2 tokens in a temporary directory, SOFTHSM2_CONF pointing at it."""
    require_softhsm()
    folder = tmp_path_factory.mktemp("softhsm")
    with softhsm_tokens(folder, (TOKEN, OTHER_TOKEN), PIN, SO_PIN, MODULE) as module:
        yield SimpleNamespace(module=module, folder=folder)


@pytest.fixture(scope="module")
def token(softhsm) -> Pkcs11Token:
    return Pkcs11Token.open(softhsm.module, TOKEN, PIN)


@pytest.fixture(scope="module")
def keys(token) -> dict[KeyType, Pkcs11Key]:
    return {kt: Pkcs11Key.generate(token, kt, f"ca-{kt.value}") for kt in KEY_TYPES}


@pytest.fixture(scope="module")
def chains(keys, now, make_csr, tmp_path_factory):
    """Per root key type: root (that token key) -> issuing CA (another token key) -> leaf."""
    start = now - dt.timedelta(minutes=5)
    subscriber = ec.generate_private_key(ec.SECP256R1())
    csr_info = parse_csr(make_csr(subscriber, ("www.example.com",)))
    result = {}
    for kt in KEY_TYPES:
        root_key, issuing_key = keys[kt], keys[ISSUING_UNDER[kt]]
        root = create_root_ca(root_key, common_name=f"Token Root {kt.value}",
                              organization="Chancery Test", country="US", now=start)
        issuing = create_issuing_ca(root, root_key, issuing_key,
                                    common_name=f"Token Issuing {kt.value}",
                                    organization="Chancery Test", country="US",
                                    public_base_url=BASE_URL, now=start)
        leaf = issue_tls_certificate(issuing, issuing_key, csr_info, ["www.example.com"], "dv",
                                     None, now, None, BASE_URL)
        folder = tmp_path_factory.mktemp(f"chain-{kt.value}")
        (folder / "root.pem").write_bytes(_pem(root))
        (folder / "issuing.pem").write_bytes(_pem(issuing))
        (folder / "chain.pem").write_bytes(_pem(issuing, root))
        (folder / "leaf.pem").write_text(leaf.pem)
        result[kt] = SimpleNamespace(root=root, issuing=issuing, leaf=leaf, root_key=root_key,
                                     issuing_key=issuing_key, folder=folder)
    return result


def test_generated_keys_have_the_requested_type_and_a_reference(keys, token):
    for kt, key in keys.items():
        assert key.key_type is kt
        assert KeyType.from_public_key(key.public_key()) is kt
        ref = KeyReference.parse(key.reference)
        assert (ref.token, ref.object) == (TOKEN, f"ca-{kt.value}")
        assert ref.id is not None and len(ref.id) == 16


@pytest.mark.parametrize("kt", KEY_TYPES)
def test_ca_certificates_signed_on_the_token_verify_and_lint_clean(chains, kt):
    chain = chains[kt]
    chain.root.verify_directly_issued_by(chain.root)
    chain.issuing.verify_directly_issued_by(chain.root)
    assert chain.root.signature_hash_algorithm.name == kt.hash_algorithm().name
    assert lint_ca_certificate(chain.root.public_bytes(Encoding.DER)).findings == ()
    assert lint_ca_certificate(chain.issuing.public_bytes(Encoding.DER)).findings == ()
    result = _openssl("verify", "-x509_strict", "-CAfile", str(chain.folder / "root.pem"),
                      str(chain.folder / "issuing.pem"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kt", KEY_TYPES)
def test_a_subscriber_certificate_signed_on_the_token_lints_and_verifies(chains, kt):
    chain = chains[kt]
    chain.leaf.certificate.verify_directly_issued_by(chain.issuing)
    assert lint_subscriber_certificate(chain.leaf.der, "dv").ok
    result = _openssl("verify", "-x509_strict", "-purpose", "sslserver",
                      "-CAfile", str(chain.folder / "root.pem"),
                      "-untrusted", str(chain.folder / "issuing.pem"),
                      str(chain.folder / "leaf.pem"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kt", KEY_TYPES)
def test_a_crl_signed_on_the_token_verifies_and_lints_clean(chains, kt, now, capsys):
    from pkilint.bin import lint_crl

    chain = chains[kt]
    revoked = chain.leaf.serial
    crl = build_crl(chain.issuing, chain.issuing_key,
                    [RevokedEntry(revoked, now - dt.timedelta(minutes=1), "key_compromise")],
                    number=1, this_update=now)
    assert crl.is_signature_valid(chain.issuing_key.public_key())
    path = chain.folder / "issuing.crl"
    path.write_bytes(crl.public_bytes(Encoding.DER))
    result = _openssl("crl", "-inform", "DER", "-in", str(path), "-noout", "-text",
                      "-CAfile", str(chain.folder / "chain.pem"), "-verify")
    assert result.returncode == 0 and "verify OK" in result.stderr, result.stderr
    assert format(revoked, "X") in result.stdout.replace(":", "").upper()
    capsys.readouterr()
    assert lint_crl.main(["lint", "-t", "CRL", "-p", "BR", str(path)]) == 0
    assert capsys.readouterr().out.strip() == ""


@pytest.mark.parametrize("kt", KEY_TYPES)
def test_an_ocsp_response_signed_on_the_token_verifies_and_lints_clean(chains, kt, now, capsys):
    from pkilint.bin import lint_ocsp_response

    chain = chains[kt]
    request = (ocsp.OCSPRequestBuilder()
               .add_certificate(chain.leaf.certificate, chain.issuing, hashes.SHA1())
               .build().public_bytes(Encoding.DER))
    answer = respond(request, [OcspIssuer("issuing", chain.issuing, chain.issuing_key)],
                     lambda issuer_id, serial: CertificateState(
                         "revoked", now - dt.timedelta(minutes=1), "key_compromise"), now)
    response = ocsp.load_der_ocsp_response(answer.der)
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    # raises InvalidSignature when the token's signature is wrong
    chain.issuing_key.public_key().verify(
        response.signature, response.tbs_response_bytes,
        *((ec.ECDSA(response.signature_hash_algorithm),) if chain.issuing_key.key_type.is_ec
          else (padding.PKCS1v15(), response.signature_hash_algorithm)))
    path = chain.folder / "response.der"
    path.write_bytes(answer.der)
    result = _openssl("ocsp", "-respin", str(path), "-issuer", str(chain.folder / "issuing.pem"),
                      "-cert", str(chain.folder / "leaf.pem"),
                      "-CAfile", str(chain.folder / "chain.pem"))
    assert "Response verify OK" in result.stderr + result.stdout, result.stderr
    capsys.readouterr()
    assert lint_ocsp_response.main(["lint", str(path)]) == 0
    assert capsys.readouterr().out.strip() == ""


@pytest.mark.parametrize("kt, secret", [(KeyType.EC_P256, "VALUE"), (KeyType.EC_P384, "VALUE"),
                                        (KeyType.RSA_2048, "PRIVATE_EXPONENT"),
                                        (KeyType.RSA_2048, "PRIME_1")])
def test_the_private_key_cannot_be_read_off_the_token(keys, token, kt, secret):
    import pkcs11

    attr = pkcs11.Attribute
    private = token.run(lambda session: keys[kt]._private(session))
    flags = token.run(lambda session: {name: private[getattr(attr, name)] for name in
                                       ("TOKEN", "PRIVATE", "SENSITIVE", "EXTRACTABLE",
                                        "ALWAYS_SENSITIVE", "NEVER_EXTRACTABLE")})
    assert flags == {"TOKEN": True, "PRIVATE": True, "SENSITIVE": True, "EXTRACTABLE": False,
                     "ALWAYS_SENSITIVE": True, "NEVER_EXTRACTABLE": True}
    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        token.run(lambda session: private[getattr(attr, secret)])


def test_a_wrong_pin_is_a_ca_key_error_that_does_not_show_the_pin(softhsm):
    wrong = "wrong-" + PIN
    with pytest.raises(CaKeyError) as caught:
        Pkcs11Token.open(softhsm.module, OTHER_TOKEN, wrong)
    assert "wrong PIN" in str(caught.value)
    for text in (str(caught.value), repr(caught.value)):
        assert PIN not in text and wrong not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert (softhsm.module, OTHER_TOKEN) not in Pkcs11Token._registry


def test_the_open_token_refuses_another_pin(token, softhsm):
    with pytest.raises(CaKeyError, match="wrong PIN"):
        Pkcs11Token.open(softhsm.module, TOKEN, PIN + "x")
    assert Pkcs11Token.open(softhsm.module, TOKEN, PIN.encode()) is token


@pytest.mark.parametrize("module, label, message", [
    ("/nonexistent/libpkcs11.so", TOKEN, "cannot load"),
    (MODULE, "no-such-token", "no PKCS#11 token"),
])
def test_a_missing_module_or_token_is_a_ca_key_error(softhsm, module, label, message):
    with pytest.raises(CaKeyError, match=message) as caught:
        Pkcs11Token.open(module, label, PIN)
    assert PIN not in str(caught.value)


def test_reprs_and_pickles_never_carry_the_pin(token, keys):
    for obj in (token, *keys.values()):
        assert PIN not in repr(obj) and PIN not in str(obj)
        with pytest.raises(TypeError):
            pickle.dumps(obj)
    assert keys[KeyType.EC_P256].reference in repr(keys[KeyType.EC_P256])


def test_a_key_opens_again_from_its_reference(keys, softhsm):
    original = keys[KeyType.RSA_2048]
    loaded = open_key(original.reference, module=softhsm.module, pin=PIN.encode())
    assert loaded.fingerprint == original.fingerprint and loaded.key_type is original.key_type
    assert loaded.reference == original.reference
    signature = loaded.sign_bytes(b"hello")
    original.public_key().verify(signature, b"hello", padding.PKCS1v15(), hashes.SHA256())


def test_a_key_loads_by_label_alone(keys, token):
    loaded = Pkcs11Key.load(token, f"ca-{KeyType.EC_P384.value}")
    assert loaded.fingerprint == keys[KeyType.EC_P384].fingerprint


@pytest.mark.parametrize("label, key_id", [("no-such-key", None),
                                           ("ca-ec-p256", b"\x00" * 16)])  # right label, other id
def test_loading_a_key_that_is_not_there_is_a_ca_key_error(keys, token, label, key_id):
    with pytest.raises(CaKeyError, match="has no private key"):
        Pkcs11Key.load(token, label, key_id)


def test_generate_refuses_a_label_in_use(keys, token):
    with pytest.raises(CaKeyError, match="already has a key"):
        Pkcs11Key.generate(token, KeyType.EC_P256, "ca-ec-p256")


def test_a_signature_that_does_not_verify_is_never_returned(keys, monkeypatch, now):
    key = keys[KeyType.EC_P256]
    wrong = throwaway_key(KeyType.EC_P256)
    monkeypatch.setattr(Pkcs11Key, "sign_bytes",
                        lambda self, data: wrong.sign(data, ec.ECDSA(hashes.SHA256())))
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
               .last_update(now).next_update(now + dt.timedelta(days=1)))
    with pytest.raises(CaKeyError, match="does not verify"):
        key.sign_crl(builder)


def test_closed_tokens_reopen_on_next_use(keys, token, softhsm):
    key = keys[KeyType.EC_P384]
    Pkcs11Token.close_all(softhsm.module)
    assert (softhsm.module, TOKEN) not in Pkcs11Token._registry
    signature = key.sign_bytes(b"after close")
    key.public_key().verify(signature, b"after close", ec.ECDSA(hashes.SHA384()))
    Pkcs11Token._registry[(softhsm.module, TOKEN)] = token  # the other tests share it again


# A lookup started on the dead session fails inside python-pkcs11's SearchIter.__enter__,
# whose __del__ then reports the same error as "unraisable": harmless, the session is gone.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_dropped_session_is_reopened(keys, token):
    key = keys[KeyType.EC_P256]
    generation = token.generation
    token._session.close()  # as if the HSM had reset: the handle is dead, the login gone
    signature = key.sign_bytes(b"after reset")
    key.public_key().verify(signature, b"after reset", ec.ECDSA(hashes.SHA256()))
    assert token.generation == generation + 1


def test_threads_can_share_a_token(keys):
    """The signer's threads sign concurrently: every signature must still be right."""
    failures: list[BaseException] = []

    def work(kt: KeyType, n: int) -> None:
        try:
            key = keys[kt]
            for i in range(10):
                data = f"{kt}-{n}-{i}".encode()
                signature = key.sign_bytes(data)
                if kt.is_ec:
                    key.public_key().verify(signature, data, ec.ECDSA(key.hash_algorithm()))
                else:
                    key.public_key().verify(signature, data, padding.PKCS1v15(),
                                            key.hash_algorithm())
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(kt, n)) for n in range(2) for kt in KEY_TYPES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


def _ocsp_builder(chain, now, encoding):
    return (ocsp.OCSPResponseBuilder()
            .add_response(cert=chain.leaf.certificate, issuer=chain.issuing,
                          algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
                          this_update=now, next_update=now + dt.timedelta(days=1),
                          revocation_time=None, revocation_reason=None)
            .responder_id(encoding, chain.issuing))


def test_an_ocsp_responder_named_by_name_is_kept(chains, now):
    chain = chains[KeyType.EC_P256]
    response = chain.issuing_key.sign_ocsp_response(
        _ocsp_builder(chain, now, ocsp.OCSPResponderEncoding.NAME))
    assert response.responder_name == chain.issuing.subject
    assert response.responder_key_hash is None
    chain.issuing_key.public_key().verify(response.signature, response.tbs_response_bytes,
                                          ec.ECDSA(response.signature_hash_algorithm))


def test_an_ocsp_responder_certificate_of_another_key_is_refused(chains, keys, now):
    chain = chains[KeyType.EC_P256]  # issuing key: P-384
    with pytest.raises(CaKeyError, match="does not carry this key"):
        keys[KeyType.EC_P256].sign_ocsp_response(
            _ocsp_builder(chain, now, ocsp.OCSPResponderEncoding.HASH))


def test_generate_key_needs_the_token_named_when_the_module_has_several(softhsm, token):
    with pytest.raises(CaKeyError, match="name the PKCS#11 token") as caught:
        generate_key(KeyType.EC_P256, label="unnamed", module=softhsm.module, pin=PIN)
    assert TOKEN in str(caught.value) and OTHER_TOKEN in str(caught.value)
    key = generate_key(KeyType.EC_P256, label="named", module=softhsm.module, pin=PIN,
                       token=TOKEN)
    assert key.token is token
    assert KeyReference.parse(key.reference).object == "named"
