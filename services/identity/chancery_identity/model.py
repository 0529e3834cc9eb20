"""The identity domain: accounts (tenants), business units, users, their credentials.

Besides who people are, identity keeps everything that proves it: password hashes,
sign-in sessions with their rotating refresh tokens, API keys, the failed-attempt
counters behind lockout and throttling, and the keys that sign access tokens. All of it
lives in the database, so every worker process of every run mode sees the same state.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from chancery_shared.auth.tokens import OPERATOR, ROLES
from chancery_shared.db import UtcDateTime, service_metadata
from chancery_shared.messaging.envelope import isoformat, utcnow
from chancery_shared.messaging.tables import MessagingTables
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

metadata = service_metadata()
messaging = MessagingTables(metadata)
ACCOUNT_ROLES = ROLES


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = metadata


class Account(Base):
    """A customer of the CA operator: a tenant with its own units, users, money and log."""

    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Unit(Base):
    """A business unit (division) of an account; its name is unique within the account."""

    __tablename__ = "units"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_units_account_id_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


user_units = Table(
    "user_units", metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("unit_id", ForeignKey("units.id", ondelete="CASCADE"), primary_key=True),
)


class User(Base):
    """A person (or the platform operator's staff, who belong to no account)."""

    __tablename__ = "users"
    __table_args__ = (Index("ix_users_account_created", "account_id", "created_at", "id"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # consecutive failed password sign-ins since the last success or lock
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    password_changed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    units: Mapped[list[Unit]] = relationship(secondary=user_units, lazy="selectin")

    @property
    def unit_ids(self) -> list[str]:
        return sorted(unit.id for unit in self.units)

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR

    @property
    def is_active_admin(self) -> bool:
        return self.active and self.role == "admin"

    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def describe(self) -> str:
        return f"{self.name} <{self.email}>"

    def as_event_data(self) -> dict:
        return {"user_id": self.id, "email": self.email, "name": self.name, "role": self.role,
                "unit_ids": self.unit_ids, "active": self.active}

    def record_failed_login(self, now: datetime, max_failures: int,
                            lockout: timedelta) -> bool:
        """Count a wrong password; True when this failure locks the user."""
        self.failed_logins = (self.failed_logins or 0) + 1
        if self.failed_logins >= max_failures:
            self.locked_until = now + lockout
            self.failed_logins = 0
            return True
        return False

    def record_login(self, now: datetime) -> None:
        self.failed_logins = 0
        self.locked_until = None
        self.last_login_at = now


class SignInSession(Base):
    """A sign-in that the portal keeps alive with refresh tokens, up to an absolute expiry.

    Ending it (logout, deactivation, a stolen refresh token replayed) makes every one of
    its refresh tokens useless at once; its access tokens carry its id (claim ``sid``).
    """

    __tablename__ = "sign_in_sessions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(40))

    def is_live(self, now: datetime) -> bool:
        return self.ended_at is None and self.expires_at > now

    def end(self, now: datetime, reason: str) -> bool:
        """End the session; False when it had already ended."""
        if self.ended_at is not None:
            return False
        self.ended_at, self.end_reason = now, reason
        return True


class RefreshToken(Base):
    """One refresh token of a session, by its SHA-256: usable once, then consumed."""

    __tablename__ = "refresh_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sign_in_sessions.id",
                                                       ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    consumed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApiKey(Base):
    """A user's key for scripts: only its SHA-256 and its visible prefix are kept."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class LoginFailure(Base):
    """One failed sign-in from a client address: the sliding window behind IP throttling."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_ip_at", "ip", "at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class SigningKey(Base):
    """An Ed25519 key that signs access tokens; the private half is encrypted at rest.

    A key is published in the JWKS from its creation, signs from ``activates_at`` (a
    rotated-in key is published a little ahead so every verifier can know it before the
    first token it signs arrives) until ``retired_at`` (its successor's activation), and
    stays published until the last token it signed has expired.
    """

    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_key_pem: Mapped[str] = mapped_column(Text)  # PKCS#8, passphrase-encrypted
    public_jwk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    activates_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    def signs_at(self, now: datetime) -> bool:
        return self.activates_at <= now and (self.retired_at is None or self.retired_at > now)

    def published_at(self, now: datetime, token_lifetime: timedelta) -> bool:
        return self.retired_at is None or self.retired_at + token_lifetime > now

    def describe(self) -> str:
        return f"{self.kid} (signing from {isoformat(self.activates_at)})"
