"""Wiring of the identity service."""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from pathlib import Path

from chancery_shared import config as cfg
from chancery_shared.service import Runtime, Service

from chancery_identity import handlers, model, views
from chancery_identity.credentials import TokenIssuer

log = logging.getLogger(__name__)
DEV_KEY_PASSPHRASE = "chancery-dev-identity-key-passphrase"


@dataclasses.dataclass(frozen=True)
class IdentitySettings:
    access_token_seconds: int = cfg.setting("CHANCERY_ACCESS_TOKEN_SECONDS", 600, int)
    key_passphrase: str = cfg.setting("CHANCERY_IDENTITY_KEY_PASSPHRASE", DEV_KEY_PASSPHRASE,
                                      secret=True)


class IdentityService(Service):
    name = "identity"
    api_name = "identity"
    title = "Chancery identity"
    description = "Accounts, business units, users and roles; access tokens and their keys."
    metadata = model.metadata
    messaging = model.messaging
    migrations_dir = Path(__file__).parent / "migrations"

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.settings = cfg.load(IdentitySettings, runtime.environ)
        if self.settings.key_passphrase == DEV_KEY_PASSPHRASE:
            log.warning("identity token keys use the development passphrase; "
                        "set CHANCERY_IDENTITY_KEY_PASSPHRASE")
        self.tokens = TokenIssuer(
            issuer=self.platform.token_issuer, audience=self.platform.token_audience,
            lifetime=timedelta(seconds=self.settings.access_token_seconds),
            passphrase=self.settings.key_passphrase.encode())

    def blueprints(self):
        return [views.api, views.wellknown]

    def bootstrap_dev(self) -> None:
        with self.uow() as uow:
            handlers.bootstrap_development(uow, self.platform.dev_password)
