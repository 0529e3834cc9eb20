import pickle

import pytest
from chancery_ca_signer.pki.keys import CaKey, CaKeyError, EncryptedPemKey, KeyType
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@pytest.fixture(scope="module")
def ec_ca_key(passphrase):
    return EncryptedPemKey.generate(KeyType.EC_P256, passphrase)


def _private_numbers_text(pem: bytes, passphrase: str) -> list[str]:
    key = serialization.load_pem_private_key(pem, password=passphrase.encode())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        value = key.private_numbers().private_value
        return [str(value), format(value, "x"), format(value, "X")]
    numbers = key.private_numbers()
    return [str(numbers.d), format(numbers.d, "x"), str(numbers.p)]


def test_key_pem_is_encrypted_pkcs8_at_rest(ec_ca_key):
    assert ec_ca_key.encrypted_pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert b"BEGIN PRIVATE KEY" not in ec_ca_key.encrypted_pem


def test_key_loads_with_the_right_passphrase(ec_ca_key, passphrase):
    loaded = EncryptedPemKey.load(ec_ca_key.encrypted_pem, passphrase)
    assert loaded.fingerprint == ec_ca_key.fingerprint
    assert loaded.key_type is KeyType.EC_P256


def test_key_does_not_load_with_a_wrong_passphrase_and_message_has_no_secret(ec_ca_key):
    wrong = "not the passphrase at all!"
    with pytest.raises(CaKeyError) as excinfo:
        EncryptedPemKey.load(ec_ca_key.encrypted_pem, wrong)
    assert wrong not in str(excinfo.value)
    assert "PRIVATE KEY" not in str(excinfo.value)
    assert excinfo.value.__cause__ is None


def test_unencrypted_pem_is_refused(passphrase):
    clear = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(CaKeyError, match="not an encrypted"):
        EncryptedPemKey.load(clear, passphrase)


def test_short_passphrase_is_refused_when_encrypting():
    with pytest.raises(CaKeyError, match="at least 16"):
        EncryptedPemKey.generate(KeyType.EC_P256, "short")


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.RSA_2048])
def test_repr_and_str_do_not_contain_key_material(key_type, passphrase):
    key = EncryptedPemKey.generate(key_type, passphrase)
    text = repr(key) + str(key) + f"{key}" + f"{key!r}"
    for secret in _private_numbers_text(key.encrypted_pem, passphrase):
        assert secret not in text
    pem_body = key.encrypted_pem.decode().splitlines()[1]
    assert pem_body not in text
    assert passphrase not in text
    assert key_type.value in text and key.fingerprint[:16] in text


def test_ca_key_cannot_be_pickled(ec_ca_key):
    with pytest.raises(TypeError):
        pickle.dumps(ec_ca_key)


def test_reencrypt_changes_the_passphrase(ec_ca_key, passphrase):
    new_pem = ec_ca_key.reencrypt("another long passphrase 123")
    assert (
        EncryptedPemKey.load(new_pem, "another long passphrase 123").fingerprint
        == ec_ca_key.fingerprint
    )
    with pytest.raises(CaKeyError):
        EncryptedPemKey.load(new_pem, passphrase)


@pytest.mark.parametrize(
    "key_type, expected_class, expected_hash",
    [
        (KeyType.EC_P256, ec.EllipticCurvePublicKey, "sha256"),
        (KeyType.EC_P384, ec.EllipticCurvePublicKey, "sha384"),
        (KeyType.RSA_2048, rsa.RSAPublicKey, "sha256"),
    ],
)
def test_generated_key_has_the_requested_type_and_hash(
    key_type, expected_class, expected_hash, passphrase
):
    key = EncryptedPemKey.generate(key_type, passphrase)
    assert isinstance(key, CaKey)
    assert isinstance(key.public_key(), expected_class)
    assert key.key_type is key_type
    assert key.hash_algorithm().name == expected_hash


def test_key_type_rejects_keys_a_ca_may_not_have():
    with pytest.raises(ValueError):
        KeyType.from_public_key(ec.generate_private_key(ec.SECP256K1()).public_key())
