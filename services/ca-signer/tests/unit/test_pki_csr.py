import secrets

import pytest
from chancery_ca_signer.pki.csr import CsrRejected, check_subscriber_public_key, parse_csr
from chancery_shared.weak_keys import next_prime, roca_style_prime
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# --- weak RSA moduli: chancery_shared.weak_keys builds them --------------------------


def _rsa_public(n: int, e: int = 65537) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(e, n).public_key()


# --- accepted CSRs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "curve, label", [(ec.SECP256R1, "P-256"), (ec.SECP384R1, "P-384"), (ec.SECP521R1, "P-521")]
)
def test_ecdsa_csr_on_allowed_curves_is_accepted(curve, label, make_csr):
    info = parse_csr(make_csr(ec.generate_private_key(curve())))
    assert info.key_type == f"ECDSA {label}"


def test_rsa_2048_csr_is_accepted_and_names_are_extracted(rsa_key, make_csr):
    info = parse_csr(make_csr(rsa_key, ("www.example.com", "api.example.com"), ips=("192.0.2.7",)))
    assert info.key_type == "RSA 2048"
    assert info.common_names == ("www.example.com",)
    assert info.dns_names == ("www.example.com", "api.example.com")
    assert info.ip_addresses == ("192.0.2.7",)
    assert info.names == ("www.example.com", "api.example.com", "192.0.2.7")
    assert len(info.spki_sha256) == 64


def test_der_csr_is_accepted(ec_key, make_csr):
    from cryptography import x509

    der = x509.load_pem_x509_csr(make_csr(ec_key)).public_bytes(serialization.Encoding.DER)
    assert parse_csr(der).dns_names == ("www.example.com",)


def test_csr_without_names_is_accepted_with_empty_names(ec_key, make_csr):
    info = parse_csr(make_csr(ec_key, names=(), cn=False))
    assert info.names == ()


# --- rejected CSRs -----------------------------------------------------------------------


def test_rsa_1024_csr_is_rejected(make_csr):
    with pytest.raises(CsrRejected, match="at least 2048") as excinfo:
        parse_csr(make_csr(rsa.generate_private_key(65537, 1024)))
    assert excinfo.value.field == "csr"


def test_rsa_modulus_not_multiple_of_8_is_rejected(make_csr):
    key = rsa.generate_private_key(65537, 2052)
    assert key.key_size == 2052 and key.key_size % 8
    with pytest.raises(CsrRejected, match="multiple of 8"):
        parse_csr(make_csr(key))


def test_rsa_exponent_3_is_rejected(make_csr):
    with pytest.raises(CsrRejected, match="exponent"):
        parse_csr(make_csr(rsa.generate_private_key(3, 2048)))


def test_ed25519_csr_is_rejected(make_csr):
    with pytest.raises(CsrRejected, match="Ed25519 keys are not allowed"):
        parse_csr(make_csr(ed25519.Ed25519PrivateKey.generate()))


@pytest.mark.parametrize("curve", [ec.SECP192R1, ec.SECP256K1, ec.SECP224R1])
def test_ecdsa_on_other_curves_is_rejected(curve, make_csr):
    with pytest.raises(CsrRejected, match=f"curve {curve.name} is not allowed"):
        parse_csr(make_csr(ec.generate_private_key(curve())))


def test_tampered_csr_signature_is_rejected(ec_key, make_csr):
    pem = make_csr(ec_key, ("aaaa.example.com",))
    from cryptography import x509

    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    tampered = der.replace(b"aaaa.example.com", b"bbbb.example.com")
    assert tampered != der
    with pytest.raises(CsrRejected, match="signature does not verify"):
        parse_csr(tampered)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ],
)
def test_malformed_csr_is_rejected(data):
    with pytest.raises(CsrRejected):
        parse_csr(data)


def test_oversized_csr_is_rejected():
    with pytest.raises(CsrRejected, match="larger than"):
        parse_csr(b"0" * 70_000)


def test_roca_vulnerable_rsa_key_is_rejected():
    n = roca_style_prime(1024) * roca_style_prime(1024)
    assert n.bit_length() == 2048
    with pytest.raises(CsrRejected, match="ROCA"):
        check_subscriber_public_key(_rsa_public(n))


def test_rsa_key_with_close_primes_is_rejected(rsa_key):
    p = rsa_key.private_numbers().p  # a random 1024-bit prime (top two bits set)
    q = next_prime(p + 2**20)
    n = p * q
    assert n.bit_length() == 2048
    with pytest.raises(CsrRejected, match="Fermat"):
        check_subscriber_public_key(_rsa_public(n))


def test_rsa_modulus_with_small_factor_is_rejected():
    # 751 * (an odd cofactor), sized to exactly 2048 bits: obviously weak.
    low, high = (1 << 2047) // 751 + 1, (1 << 2048) // 751
    weak = 751 * ((low + secrets.randbelow(high - low)) | 1)
    assert weak.bit_length() == 2048
    with pytest.raises(CsrRejected, match="small prime factor"):
        check_subscriber_public_key(_rsa_public(weak))


def test_ordinary_rsa_key_passes_weak_key_checks(rsa_key):
    assert check_subscriber_public_key(rsa_key.public_key()) == "RSA 2048"


def test_blocklisted_key_is_rejected(ec_key, make_csr):
    info = parse_csr(make_csr(ec_key))
    with pytest.raises(CsrRejected, match="compromised"):
        parse_csr(make_csr(ec_key), is_key_blocked=lambda spki: spki == info.spki_sha256)
