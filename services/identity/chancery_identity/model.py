"""The identity domain: accounts (tenants), business units, users, token signing keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from chancery_shared.auth.tokens import OPERATOR, ROLES
from chancery_shared.db import service_metadata
from chancery_shared.messaging.envelope import utcnow
from chancery_shared.messaging.tables import MessagingTables
from sqlalchemy import Boolean, Column, DateTime, ForeignKey, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

metadata = service_metadata()
messaging = MessagingTables(metadata)


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = metadata


class Account(Base):
    """A customer of the CA operator: a tenant with its own units, users, money and log."""

    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Unit(Base):
    """A business unit (division) of an account."""

    __tablename__ = "units"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


user_units = Table(
    "user_units", metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("unit_id", ForeignKey("units.id", ondelete="CASCADE"), primary_key=True),
)


class User(Base):
    """A person (or the platform operator's staff, who belong to no account)."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    units: Mapped[list[Unit]] = relationship(secondary=user_units, lazy="selectin")

    @property
    def unit_ids(self) -> list[str]:
        return sorted(unit.id for unit in self.units)

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR

    def as_event_data(self) -> dict:
        return {"user_id": self.id, "email": self.email, "name": self.name, "role": self.role,
                "unit_ids": self.unit_ids, "active": self.active}


class SigningKey(Base):
    """An Ed25519 key that signs access tokens; the private half is encrypted at rest."""

    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_key_pem: Mapped[str] = mapped_column(Text)  # PKCS#8, passphrase-encrypted
    public_jwk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


ACCOUNT_ROLES = ROLES
