"""Wiring of the identity service."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from chancery_shared import config as cfg
from chancery_shared.auth.revocations import MAX_ACCESS_TOKEN_SECONDS
from chancery_shared.messaging.envelope import Actor, utcnow
from chancery_shared.service import BackgroundJob, Runtime, Service
from chancery_shared.web import api_browser
from flask import Flask

from chancery_identity import handlers, model, sign_in, views
from chancery_identity.credentials import TokenIssuer
from chancery_identity.model import SigningKey
from chancery_identity.passwords import PROFILES, Passwords

log = logging.getLogger(__name__)
DEV_KEY_PASSPHRASE = "chancery-dev-identity-key-passphrase"
HOUSEKEEPING_SECONDS = 3600.0


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value
    return parse


def _profile(raw: str) -> str:
    if raw not in PROFILES:
        raise ValueError(f"must be one of {', '.join(PROFILES)}")
    return raw


@dataclasses.dataclass(frozen=True)
class IdentitySettings:
    # every service refuses a revoked token as soon as it hears identity's event; the
    # lifetime bounds what a process that missed the event (it was starting, or cut off
    # from the broker) accepts. The verifiers keep their deny lists as long as the longest
    # lifetime allowed here.
    access_token_seconds: int = cfg.setting("CHANCERY_ACCESS_TOKEN_SECONDS", 600,
                                            _bounded(60, MAX_ACCESS_TOKEN_SECONDS))
    session_hours: int = cfg.setting("CHANCERY_SESSION_HOURS", 10, _bounded(1, 24 * 30))
    key_rotation_days: int = cfg.setting("CHANCERY_TOKEN_KEY_ROTATION_DAYS", 30,
                                         _bounded(1, 3650))
    key_prepublish_seconds: int = cfg.setting("CHANCERY_TOKEN_KEY_PREPUBLISH_SECONDS", 300,
                                              _bounded(0, 86400))
    key_passphrase: str = cfg.setting("CHANCERY_IDENTITY_KEY_PASSPHRASE", DEV_KEY_PASSPHRASE,
                                      secret=True)
    login_max_failures: int = cfg.setting("CHANCERY_LOGIN_MAX_FAILURES", 5, _bounded(1, 1000))
    login_lockout_minutes: int = cfg.setting("CHANCERY_LOGIN_LOCKOUT_MINUTES", 15,
                                             _bounded(1, 24 * 60))
    login_ip_max_failures: int = cfg.setting("CHANCERY_LOGIN_IP_MAX_FAILURES", 20,
                                             _bounded(1, 100000))
    login_ip_window_minutes: int = cfg.setting("CHANCERY_LOGIN_IP_WINDOW_MINUTES", 10,
                                               _bounded(1, 24 * 60))
    # "fast" is for test suites only (cheap argon2 parameters); never set it in production
    password_hash_profile: str = cfg.setting("CHANCERY_PASSWORD_HASH_PROFILE", "default",
                                             _profile)


class IdentityService(Service):
    name = "identity"
    api_name = "identity"
    title = "Chancery identity"
    description = ("Accounts, business units, users and roles; sign-in, sessions, API keys, "
                   "access tokens and their keys.")
    metadata = model.metadata
    messaging = model.messaging

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.settings = s = cfg.load(IdentitySettings, runtime.environ)
        if s.key_passphrase == DEV_KEY_PASSPHRASE:
            log.warning("identity token keys use the development passphrase; "
                        "set CHANCERY_IDENTITY_KEY_PASSPHRASE")
        if s.password_hash_profile != "default":
            log.warning("CHANCERY_PASSWORD_HASH_PROFILE=%s: weak password hashing, for tests "
                        "only", s.password_hash_profile)
        tokens = TokenIssuer(
            issuer=self.platform.token_issuer, audience=self.platform.token_audience,
            lifetime=timedelta(seconds=s.access_token_seconds),
            passphrase=s.key_passphrase.encode(),
            rotate_after=timedelta(days=s.key_rotation_days),
            prepublish=timedelta(seconds=s.key_prepublish_seconds))
        rules = sign_in.SignInRules(
            max_failures=s.login_max_failures,
            lockout=timedelta(minutes=s.login_lockout_minutes),
            ip_max_failures=s.login_ip_max_failures,
            ip_window=timedelta(minutes=s.login_ip_window_minutes),
            session_lifetime=timedelta(hours=s.session_hours))
        self.credentials = sign_in.Credentials(tokens, Passwords(s.password_hash_profile), rules)
        # "now" for every rule of identity; tests set it to move time without sleeping
        self.clock: Callable[[], datetime] = utcnow

    @property
    def tokens(self) -> TokenIssuer:
        return self.credentials.tokens

    def blueprints(self):
        return [views.api, views.wellknown]

    def extra_routes(self, app: Flask) -> None:
        """The API browser over every service's OpenAPI document, at ``/api/docs/``: the
        front door integrators open first, served here beside sign-in."""
        app.register_blueprint(api_browser.blueprint())

    def background_jobs(self) -> list[BackgroundJob]:
        return [self._housekeeping]

    def _housekeeping(self, stop: threading.Event) -> None:
        """Hourly: forget old failures, long-ended sessions and keys no token needs."""
        while not stop.wait(HOUSEKEEPING_SECONDS):
            try:
                self.purge()
            except Exception:  # noqa: BLE001 - keep the job alive; the next hour retries
                log.exception("identity housekeeping failed")

    def purge(self) -> None:
        with self.uow() as uow:
            sign_in.purge(uow, self.credentials, self.clock())

    def rotate_signing_key(self, *, immediately: bool = False,
                           actor: Actor | None = None) -> SigningKey:
        """Publish a new signing key now; it signs after the pre-publication delay.

        ``immediately`` makes it sign at once (the old key's tokens stay valid until
        they expire); use it when the old key must stop signing right away.
        """
        now = self.clock()
        with self.uow() as uow:
            rotated = self.tokens.rotate(uow.session, now, immediately=immediately, force=True)
            assert rotated is not None
            new, previous = rotated
            sign_in.announce_rotation(uow, new, previous, actor or Actor.service("identity"),
                                      "the access-token signing key was rotated by hand")
            uow.commit()
            return new

    def bootstrap_dev(self) -> None:
        with self.uow() as uow:
            handlers.bootstrap_development(uow, self.credentials.passwords,
                                           self.platform.dev_password, self.clock())
