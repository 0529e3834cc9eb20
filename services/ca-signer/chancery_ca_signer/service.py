"""Wiring of the ca-signer service."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

from chancery_shared import config as cfg
from chancery_shared import hostnames
from chancery_shared.mail import Mailer, SmtpMailer, SmtpSettings
from chancery_shared.messaging.envelope import Envelope, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.service import Runtime, Service

from chancery_ca_signer import handlers, model, views
from chancery_ca_signer.keyring import KeyRing, Pkcs11Settings
from chancery_ca_signer.pki import lint
from chancery_ca_signer.pki.profiles import (
    DEFAULT_PRIVATE_MAX_VALIDITY_DAYS,
    DEFAULT_PRIVATE_POLICY_OID,
    PrivateProfile,
    parse_private_max_validity_days,
    parse_private_policy_oid,
)
from chancery_ca_signer.pki.urls import normalise_base_url

log = logging.getLogger(__name__)
DEV_PASSPHRASE = "chancery-dev-ca-key-passphrase"


def is_production(platform: cfg.PlatformSettings) -> bool:
    """A distributed deployment (a real broker) that is not a development one (no
    ``CHANCERY_DEV_BOOTSTRAP``). The embedded mode and the unit tests run on the in-memory
    bus; the test deployments seed development data."""
    return not platform.dev_bootstrap and not platform.broker_url.startswith("memory://")


def check_public_base_url(url: str) -> None:
    """In production the base of the URLs that public certificates carry must be
    reachable by every relying party: a reserved or internal name stops the process,
    naming the variable. Development keeps its documented placeholder."""
    try:
        hostnames.check_public_url(url)
    except hostnames.NameRejected as exc:
        raise cfg.ConfigError({"CHANCERY_PUBLIC_BASE_URL": (
            f"{exc}; public certificates carry their CRL, OCSP and issuer URLs under it, so "
            "it must be a public name every relying party can reach (set "
            "CHANCERY_PRIVATE_BASE_URL for an internal host for private certificates)")}
        ) from None


@dataclasses.dataclass(frozen=True)
class CaSignerSettings:
    public_base_url: str = cfg.setting("CHANCERY_PUBLIC_BASE_URL", "http://pki.example.com")
    key_passphrase: str = cfg.setting("CHANCERY_CA_KEY_PASSPHRASE", "", secret=True)
    key_passphrase_file: str = cfg.setting("CHANCERY_CA_KEY_PASSPHRASE_FILE", "")
    # how often the CRL job looks for stale (revocation) or day-old CRLs to republish
    # (and for OCSP responder certificates to renew)
    crl_check_seconds: float = cfg.setting("CHANCERY_CRL_CHECK_SECONDS", 60.0, parse=float)
    # PKCS#11: the module (e.g. /usr/lib/softhsm/libsofthsm2.so) and the token's user PIN
    pkcs11_module: str = cfg.setting("CHANCERY_PKCS11_MODULE", "")
    pkcs11_pin: str = cfg.setting("CHANCERY_PKCS11_PIN", "", secret=True)
    pkcs11_pin_file: str = cfg.setting("CHANCERY_PKCS11_PIN_FILE", "")
    # the private hierarchy: the policy OID private certificates carry (the operator's own
    # arc, never the CA/B Forum's), their longest validity, and the base of the CRL, OCSP
    # and caIssuers URLs in them (may be an internal host; empty: the public base URL)
    private_policy_oid: str = cfg.setting("CHANCERY_PRIVATE_POLICY_OID",
                                          DEFAULT_PRIVATE_POLICY_OID,
                                          parse=parse_private_policy_oid)
    private_max_validity_days: int = cfg.setting("CHANCERY_PRIVATE_MAX_VALIDITY_DAYS",
                                                 DEFAULT_PRIVATE_MAX_VALIDITY_DAYS,
                                                 parse=parse_private_max_validity_days)
    private_base_url: str = cfg.setting("CHANCERY_PRIVATE_BASE_URL", "",
                                        parse=normalise_base_url)
    # who hears of certificate problem reports by e-mail (with CHANCERY_SMTP_*)
    operator_emails: tuple[str, ...] = cfg.setting("CHANCERY_CA_OPERATOR_EMAILS", (),
                                                   parse=cfg.parse_list)

    def passphrase(self) -> bytes:
        """From the secret file if given, else the variable, else the development value."""
        if self.key_passphrase_file:
            return Path(self.key_passphrase_file).read_bytes().strip()
        if self.key_passphrase:
            return self.key_passphrase.encode()
        log.warning("CA keys use the development passphrase; set CHANCERY_CA_KEY_PASSPHRASE_FILE")
        return DEV_PASSPHRASE.encode()

    def pkcs11(self) -> Pkcs11Settings | None:
        """The HSM settings, or None when no PKCS#11 module is configured."""
        if not self.pkcs11_module:
            return None
        if self.pkcs11_pin_file:
            pin = Path(self.pkcs11_pin_file).read_bytes().strip()
        else:
            pin = self.pkcs11_pin.encode()
        return Pkcs11Settings(self.pkcs11_module, pin)

    def private_profile(self) -> PrivateProfile:
        """The operator's settings for private certificates."""
        return PrivateProfile(policy_oid=self.private_policy_oid,
                              max_validity_days=self.private_max_validity_days,
                              base_url=self.private_base_url or None)


class CaSignerService(Service):
    name = "ca-signer"
    api_name = "ca"
    title = "Chancery ca-signer"
    description = ("The certificate authority: CA keys, linted issuance, issued-certificate "
                   "records and the public CA downloads.")
    metadata = model.metadata
    messaging = model.messaging

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.settings = cfg.load(CaSignerSettings, runtime.environ)
        if is_production(runtime.platform):
            check_public_base_url(self.settings.public_base_url)
        smtp = cfg.load(SmtpSettings, runtime.environ)
        smtp.check()
        self.mailer: Mailer | None = SmtpMailer(smtp) if smtp.enabled else None
        self.keys = KeyRing(self.settings.passphrase(), self.settings.pkcs11())
        self.private = self.settings.private_profile()
        if self.private.policy_oid == DEFAULT_PRIVATE_POLICY_OID:
            log.info("private certificates carry the placeholder policy OID %s (an arc for "
                     "documentation); set CHANCERY_PRIVATE_POLICY_OID to your own",
                     DEFAULT_PRIVATE_POLICY_OID)

    def blueprints(self):
        return [views.api, views.public_ca]

    def message_handlers(self):
        return {"ca_signer.commands": {"ca_signer.certificate.sign": self._sign,
                                       "ca_signer.certificate.revoke": self._revoke}}

    def consumers(self, prefetch: int = 10):
        """A signing worker builds pkilint's validators once, before its first command
        (they take seconds to build and are reused for every certificate)."""
        lint.warm_up()
        return super().consumers(prefetch)

    def background_jobs(self):
        return [self._crl_job, self._operator_mail_job]

    def _operator_mail_job(self, stop: threading.Event) -> None:
        """Every CHANCERY_CRL_CHECK_SECONDS: mail the operator the problem reports not
        yet mailed (off without SMTP or without CHANCERY_CA_OPERATOR_EMAILS)."""
        if self.mailer is None or not self.settings.operator_emails:
            log.info("problem reports are not mailed: set CHANCERY_SMTP_HOST and "
                     "CHANCERY_CA_OPERATOR_EMAILS (they are listed at "
                     "GET /api/ca/v1/problem-reports)")
            return
        while not stop.is_set():
            self.notify_operator()
            stop.wait(self.settings.crl_check_seconds)

    def notify_operator(self) -> list[str]:
        """One pass of the operator mail job; failures are retried at the next pass."""
        if self.mailer is None or not self.settings.operator_emails:
            return []
        try:
            return handlers.notify_operator(self.uow, self.mailer,
                                            self.settings.operator_emails, utcnow())
        except Exception:
            log.exception("mailing problem reports failed; retrying at the next check")
            return []

    def _crl_job(self, stop: threading.Event) -> None:
        """Every CHANCERY_CRL_CHECK_SECONDS: republish stale or day-old CRLs, renew
        OCSP responder certificates nearing their end."""
        while not stop.is_set():
            self.publish_due_crls()
            self.renew_ocsp_responders()
            stop.wait(self.settings.crl_check_seconds)

    def publish_due_crls(self) -> list[tuple[str, int]]:
        """One pass of the CRL job; a failure is logged and retried at the next check."""
        try:
            return handlers.publish_due_crls(self.uow, self.keys, utcnow())
        except Exception:
            log.exception("CRL publication failed; retrying at the next check")
            return []

    def renew_ocsp_responders(self) -> list[str]:
        try:
            return handlers.renew_ocsp_responders(self.uow, self.keys, utcnow())
        except Exception:
            log.exception("OCSP responder renewal failed; retrying at the next check")
            return []

    def _sign(self, envelope: Envelope, uow: UnitOfWork) -> None:
        handlers.sign_certificate(envelope, uow, self.keys, self.settings.public_base_url,
                                  curves=frozenset(self.platform.subscriber_curves),
                                  private=self.private,
                                  debian_weak_keys=self.platform.debian_weak_keys)

    def _revoke(self, envelope: Envelope, uow: UnitOfWork) -> None:
        handlers.revoke_certificate(envelope, uow)

    def bootstrap_dev(self) -> None:
        with self.uow() as uow:
            handlers.create_development_hierarchy(uow, self.keys, self.settings.public_base_url,
                                                  self.private)
