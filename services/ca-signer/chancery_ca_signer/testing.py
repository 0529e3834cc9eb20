"""Test support: throwaway SoftHSM2 tokens for the PKCS#11 backend's tests, and the
validation evidence a signing command carries, and a check that an issued certificate
passes the linter meant for its profile.

Used by ca-signer's tests and by anyone checking an HSM setup by hand. SoftHSM2 reads
SOFTHSM2_CONF when the library is initialised, so the library is re-initialised for the
temporary token directory and finalised again afterwards (the next user initialises it
with its own configuration).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from chancery_shared.messaging.envelope import isoformat, utcnow

from chancery_ca_signer.pki.pkcs11 import DEFAULT_SOFTHSM2_MODULE, Pkcs11Token

__all__ = ["assert_lints_clean", "evidence_for", "softhsm_module", "softhsm_tokens"]


def evidence_for(sans: Sequence[str], profile: str = "dv",
                 validated_at: datetime | None = None) -> list[dict[str, object]]:
    """The ``validations`` of a signing command as orders sends them: one DNS-change
    validation covering every name and, for OV/EV, the organization's; validated now
    unless ``validated_at`` says otherwise."""
    at = isoformat(validated_at or utcnow())
    evidence: list[dict[str, object]] = [
        {"kind": "domain", "name": sans[0].removeprefix("*."), "method": "dns-txt",
         "validated_at": at, "names": list(sans)}]
    if profile in ("ov", "ev"):
        evidence.append({"kind": "organization", "name": "Example Corp",
                         "method": "operator_review", "validated_at": at, "names": []})
    return evidence


def assert_lints_clean(certificate_pem: str, profile: str, private=None) -> None:
    """Lint an issued certificate again, from its PEM, with the linter of ``profile``
    (the CA/B Forum serverauth lint for dv/ov/ev, the private lint for private, with the
    ``private`` settings it was issued under); fail on any ERROR or FATAL finding."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from chancery_ca_signer.pki import lint

    der = x509.load_pem_x509_certificate(certificate_pem.encode()).public_bytes(Encoding.DER)
    report = lint.lint_subscriber_certificate(der, profile, private)
    assert report.ok, f"{profile} certificate fails its lint: {report.summary()}"


def softhsm_module() -> str | None:
    """The SoftHSM2 module to use, or None when SoftHSM2 is not installed."""
    module = os.environ.get("CHANCERY_PKCS11_MODULE") or DEFAULT_SOFTHSM2_MODULE
    if shutil.which("softhsm2-util") and Path(module).exists():
        return module
    return None


@contextlib.contextmanager
def softhsm_tokens(folder: Path, labels: Sequence[str], pin: str, so_pin: str,
                   module: str | None = None) -> Iterator[str]:
    """Fresh tokens ``labels`` in ``folder``, usable while the context lasts; yields the
    module path. Sets SOFTHSM2_CONF for the duration."""
    import pkcs11

    module = module or softhsm_module()
    if module is None:
        raise RuntimeError("SoftHSM2 is not installed (apt-get install softhsm2)")
    (folder / "tokens").mkdir(parents=True, exist_ok=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\n"
                    "objectstore.backend = file\nlog.level = ERROR\n")
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        for label in labels:
            subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                            "--pin", pin, "--so-pin", so_pin], check=True,
                           capture_output=True, timeout=30)
        Pkcs11Token.close_all(module)  # sessions opened earlier would not survive reinitialize
        lib = pkcs11.lib(module)
        lib.reinitialize()
        try:
            yield module
        finally:
            Pkcs11Token.close_all(module)
            lib.finalize()
    finally:
        if saved is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = saved
