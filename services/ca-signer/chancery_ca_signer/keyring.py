"""Where ca-signer's signing keys come from: one place that turns an issuer row into a key.

- ``software`` issuers: the PKCS#8 PEM in the database, decrypted with the service
  passphrase (CHANCERY_CA_KEY_PASSPHRASE_FILE) the first time it is needed;
- ``pkcs11`` issuers: the key stays in the HSM; the row holds its PKCS#11 URI, opened
  with the module and PIN of the service settings (CHANCERY_PKCS11_MODULE,
  CHANCERY_PKCS11_PIN_FILE);
- ``offline`` issuers (roots): there is no key here, and asking for one is an error.

OCSP responder keys are always software keys under the service passphrase.
Decrypted keys are held in this process's memory only, once per issuer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from chancery_ca_signer.pki.keys import CaKey, CaKeyError, EncryptedPemKey

__all__ = ["KeyRing", "Pkcs11Settings", "KeyOffline", "SOFTWARE", "PKCS11", "OFFLINE"]

SOFTWARE, PKCS11, OFFLINE = "software", "pkcs11", "offline"


class KeyOffline(CaKeyError):
    """The issuer's key is not on this system (an offline root)."""


class _KeyRow(Protocol):
    id: str
    subject: str
    key_backend: str
    encrypted_key_pem: str | None
    key_reference: str | None


@dataclass(frozen=True)
class Pkcs11Settings:
    """The PKCS#11 module and the PIN of the token(s) holding CA keys."""

    module: str
    pin: bytes

    def __repr__(self) -> str:
        return f"Pkcs11Settings(module={self.module!r}, pin=<hidden>)"


class KeyRing:
    """Decrypted or opened CA keys, loaded once per issuer, kept in memory only."""

    def __init__(self, passphrase: bytes, pkcs11: Pkcs11Settings | None = None):
        self._passphrase = passphrase
        self._pkcs11 = pkcs11
        self._keys: dict[str, CaKey] = {}
        self._lock = threading.Lock()

    def key_for(self, issuer: _KeyRow) -> CaKey:
        """The signing key of ``issuer`` (or of an OCSP responder row, always software)."""
        with self._lock:
            key = self._keys.get(issuer.id)
            if key is None:
                key = self._keys[issuer.id] = self._open(issuer)
            return key

    def _open(self, issuer: _KeyRow) -> CaKey:
        backend = getattr(issuer, "key_backend", SOFTWARE)
        if backend == SOFTWARE:
            if not issuer.encrypted_key_pem:
                raise CaKeyError(f"issuer {issuer.id} has no stored key")
            return EncryptedPemKey.load(issuer.encrypted_key_pem, self._passphrase)
        if backend == PKCS11:
            if self._pkcs11 is None:
                raise CaKeyError(f"the key of issuer {issuer.id} is in an HSM, and "
                                 "CHANCERY_PKCS11_MODULE is not set")
            if not issuer.key_reference:
                raise CaKeyError(f"issuer {issuer.id} has no PKCS#11 key reference")
            from chancery_ca_signer.pki.pkcs11 import open_key

            return open_key(issuer.key_reference, module=self._pkcs11.module,
                            pin=self._pkcs11.pin)
        if backend == OFFLINE:
            raise KeyOffline(f"the key of {issuer.subject} is offline; sign with chancery-ca")
        raise CaKeyError(f"issuer {issuer.id} has an unknown key backend {backend!r}")

    def has_online_key(self, issuer: _KeyRow) -> bool:
        return getattr(issuer, "key_backend", SOFTWARE) != OFFLINE

    def new_software_key(self, key_type) -> EncryptedPemKey:
        return EncryptedPemKey.generate(key_type, self._passphrase)

    @property
    def pkcs11(self) -> Pkcs11Settings | None:
        return self._pkcs11

    @property
    def passphrase(self) -> bytes:
        return self._passphrase

    def __repr__(self) -> str:
        return f"<KeyRing {len(self._keys)} key(s) loaded>"
