"""The registration authority's domain: products, domains, orders and their life.

An order moves through a small state machine (see README.md); every move goes through
:meth:`Order._move`, which refuses transitions the machine does not have and writes the
order's history. Which names a validated domain covers is decided in one place,
:func:`domain_covers`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from chancery_shared.db import UtcDateTime, service_metadata
from chancery_shared.messaging.envelope import Actor, isoformat, utcnow
from chancery_shared.messaging.tables import MessagingTables
from chancery_shared.web.problems import Conflict
from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from chancery_orders import names as hostnames
from chancery_orders.compliance import validation_valid_until

metadata = service_metadata()
messaging = MessagingTables(metadata)


def new_id() -> str:
    return str(uuid.uuid4())




class Base(DeclarativeBase):
    metadata = metadata


# --- catalog --------------------------------------------------------------------------


class Product(Base):
    """A certificate product of the catalog (loaded from catalog.json, never edited here)."""

    __tablename__ = "products"
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    validation_level: Mapped[str] = mapped_column(String(20))  # dv, ov, ev, private
    wildcard: Mapped[bool] = mapped_column(Boolean)
    max_sans: Mapped[int] = mapped_column(Integer)
    included_sans: Mapped[int] = mapped_column(Integer)
    prices_cents: Mapped[dict[str, int]] = mapped_column(JSON)
    extra_san_prices_cents: Mapped[dict[str, int] | None] = mapped_column(JSON)
    position: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    def offers_term(self, term_years: int) -> bool:
        return str(term_years) in self.prices_cents

    def price_cents(self, term_years: int, name_count: int) -> int:
        """The price of a certificate for ``name_count`` names over ``term_years``."""
        price = int(self.prices_cents[str(term_years)])
        extra_names = max(0, name_count - self.included_sans)
        if extra_names and self.extra_san_prices_cents:
            price += extra_names * int(self.extra_san_prices_cents[str(term_years)])
        return price


# --- read models fed by identity's events ---------------------------------------------


class Unit(Base):
    """identity's business unit, as far as orders needs it (name, account)."""

    __tablename__ = "units"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(36), index=True)
    name: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class User(Base):
    """identity's user, as far as orders needs it (names for assignees and notices)."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(36), index=True)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


# --- domains --------------------------------------------------------------------------

DOMAIN_METHODS = ("dns-txt", "http-file")
DOMAIN_STATUSES = ("pending", "validated", "failed", "expired")
CHALLENGE_LABEL = "_chancery-challenge"
HTTP_FILE_PATH = "/.well-known/pki-validation/"


class Domain(Base):
    """A domain an account asks to use in certificates, and the evidence that it may."""

    __tablename__ = "domains"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_domains_account_name"),
                      Index("ix_domains_created", "created_at", "id"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(String(36), index=True)
    name: Mapped[str] = mapped_column(String(253))
    method: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    token: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    submitted_by_id: Mapped[str] = mapped_column(String(36))
    submitted_by_name: Mapped[str] = mapped_column(String(200))
    validated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    validated_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    validated_by_id: Mapped[str | None] = mapped_column(String(36))
    validated_by_name: Mapped[str | None] = mapped_column(String(200))
    validation_note: Mapped[str | None] = mapped_column(Text)

    def status_at(self, at: datetime) -> str:
        """The status as of ``at``: a validation past its reuse period has expired."""
        if self.status == "validated" and (self.validated_until is None
                                           or self.validated_until <= at):
            return "expired"
        return self.status

    @property
    def current_status(self) -> str:
        return self.status_at(utcnow())

    @property
    def http_file_name(self) -> str:
        return f"chancery-{self.id}.txt"

    @property
    def instructions(self) -> dict[str, str]:
        """What the customer publishes to prove control, for the chosen method."""
        if self.method == "dns-txt":
            record = f"{CHALLENGE_LABEL}.{self.name}"
            return {"method": "dns-txt", "record_name": record, "record_type": "TXT",
                    "record_value": self.token,
                    "text": f"Create a DNS TXT record named {record} with the value "
                            f"{self.token}, then ask for the check."}
        url = f"http://{self.name}{HTTP_FILE_PATH}{self.http_file_name}"
        return {"method": "http-file", "url": url, "content": self.token,
                "text": f"Publish a plain-text file at {url} containing only {self.token}, "
                        "then ask for the check."}

    def validate_manually(self, by: Actor, note: str | None, at: datetime) -> None:
        """CA staff looked at the evidence and vouch for it (BR 3.2.2.4 by a person)."""
        self.status = "validated"
        self.validated_at = at
        self.validated_until = validation_valid_until(at)
        self.validated_by_id = by.user_id
        self.validated_by_name = by.user_name
        self.validation_note = note

    def covers(self, name: str, at: datetime) -> bool:
        return domain_covers(self, name, at)


def domain_covers(domain: Domain, name: str, at: datetime) -> bool:
    """The coverage rule: a domain validated (and not expired) at ``at`` covers its own
    name, every name under it, and wildcards under it; any other domain covers nothing."""
    if domain.status_at(at) != "validated":
        return False
    host = hostnames.base_of(name)
    return host == domain.name or host.endswith("." + domain.name)


def uncovered_names(names: Iterable[str], domains: Iterable[Domain], at: datetime) -> list[str]:
    """The names no domain in ``domains`` covers at ``at`` (in the order given)."""
    domains = list(domains)
    return [name for name in names if not any(domain_covers(d, name, at) for d in domains)]


# --- orders ---------------------------------------------------------------------------

PENDING_APPROVAL = "pending_approval"
APPROVED = "approved"
AWAITING_FUNDS = "awaiting_funds"
ISSUING = "issuing"
ISSUED = "issued"
REJECTED = "rejected"
CANCELLED = "cancelled"
FAILED = "failed"
ORDER_STATUSES = (PENDING_APPROVAL, APPROVED, AWAITING_FUNDS, ISSUING, ISSUED, REJECTED,
                  CANCELLED, FAILED, "revoked", "expired")
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING_APPROVAL: frozenset({APPROVED, REJECTED, CANCELLED}),
    APPROVED: frozenset({AWAITING_FUNDS, ISSUING, CANCELLED}),
    AWAITING_FUNDS: frozenset({ISSUING, CANCELLED}),
    ISSUING: frozenset({ISSUED, FAILED}),
}
CANCELLABLE = (PENDING_APPROVAL, APPROVED, AWAITING_FUNDS)
SERVER_TYPES = ("apache", "nginx", "iis", "tomcat", "f5", "haproxy", "aws", "azure", "other")


class Order(Base):
    """A request for a certificate, from submission to issuance (or its end)."""

    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_account_created", "account_id", "created_at", "id"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(20), index=True)
    product_code: Mapped[str] = mapped_column(ForeignKey("products.code"))
    term_years: Mapped[int] = mapped_column(Integer)
    server_type: Mapped[str] = mapped_column(String(20))
    common_name: Mapped[str] = mapped_column(String(253))
    sans: Mapped[list[str]] = mapped_column(JSON)
    csr_pem: Mapped[str] = mapped_column(Text)
    key_description: Mapped[str] = mapped_column(String(40))
    unit_id: Mapped[str | None] = mapped_column(String(36), index=True)
    requester_id: Mapped[str] = mapped_column(String(36), index=True)
    requester_name: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    price_cents: Mapped[int] = mapped_column(Integer)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    # selectin, not joined: a row lock (FOR UPDATE) must take the order alone, never an
    # outer join (PostgreSQL refuses) nor the product row (it would serialise approvals).
    product: Mapped[Product] = relationship(lazy="selectin")
    unit_record: Mapped[Unit | None] = relationship(
        primaryjoin="foreign(Order.unit_id) == Unit.id", viewonly=True, lazy="selectin")
    history: Mapped[list[OrderHistory]] = relationship(
        back_populates="order", order_by="OrderHistory.seq", lazy="selectin",
        cascade="all, delete-orphan")
    certificates: Mapped[list[Certificate]] = relationship(
        back_populates="order", order_by="Certificate.created_at.desc()", lazy="selectin")
    issuances: Mapped[list[Issuance]] = relationship(
        back_populates="order", order_by="Issuance.attempt", lazy="selectin")

    # --- what the API shows ---------------------------------------------------------

    @property
    def requester(self) -> dict[str, str]:
        return {"id": self.requester_id, "name": self.requester_name}

    @property
    def unit(self) -> dict[str, str | None] | None:
        if self.unit_id is None:
            return None
        return {"id": self.unit_id, "name": self.unit_record.name if self.unit_record else None}

    @property
    def certificate(self) -> Certificate | None:
        return self.certificates[0] if self.certificates else None

    @property
    def names(self) -> list[str]:
        """Every name the certificate will carry (the common name first)."""
        return list(self.sans)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def describe(self, *, capital: bool = False) -> str:
        """For summaries: "order 7f3c2a1b for www.example.com"."""
        return f"{'Order' if capital else 'order'} {self.short_id} for {self.common_name}"

    # --- the state machine ----------------------------------------------------------

    def record(self, actor: Actor, action: str, details: dict[str, Any] | None = None,
               at: datetime | None = None) -> None:
        """Add a history entry (every transition does; notes without one may too)."""
        self.history.append(OrderHistory(
            at=at or utcnow(), actor_id=actor.user_id,
            actor_name=actor.user_name or actor.system or "someone", action=action,
            details=details or {}))

    def _move(self, to: str, actor: Actor, action: str, details: dict[str, Any] | None = None
              ) -> None:
        if to not in TRANSITIONS.get(self.status, frozenset()):
            raise Conflict(f"order {self.short_id} is {self.status}; it cannot become {to}",
                           code="invalid_order_state", order_status=self.status)
        now = utcnow()
        self.status = to
        self.updated_at = now
        self.record(actor, action, details, at=now)

    def submitted(self, actor: Actor) -> None:
        self.status = PENDING_APPROVAL
        self.record(actor, "submitted", {"product": self.product_code,
                                         "term_years": self.term_years,
                                         "price_cents": self.price_cents,
                                         "key": self.key_description})

    def approve(self, actor: Actor, *, automatic: bool = False, note: str | None = None) -> None:
        details: dict[str, Any] = {"automatic": automatic}
        if note:
            details["note"] = note
        self._move(APPROVED, actor, "approved", details)

    def reject(self, actor: Actor, reason: str) -> None:
        self._move(REJECTED, actor, "rejected", {"reason": reason})

    def cancel(self, actor: Actor, reason: str | None) -> None:
        if self.status not in CANCELLABLE:
            raise Conflict(f"order {self.short_id} is {self.status}; only orders not yet being "
                           "issued can be cancelled", code="invalid_order_state",
                           order_status=self.status)
        self._move(CANCELLED, actor, "cancelled", {"reason": reason} if reason else {})

    def wait_for_funds(self, actor: Actor, amount_cents: int, available_cents: int) -> None:
        self._move(AWAITING_FUNDS, actor, "awaiting_funds",
                   {"amount_cents": amount_cents, "available_cents": available_cents})

    def start_issuing(self, actor: Actor, issuance: Issuance) -> None:
        self._move(ISSUING, actor, "issuing", {"issuance_id": issuance.id,
                                               "attempt": issuance.attempt})
        self.issuances.append(issuance)

    def mark_issued(self, actor: Actor, certificate: Certificate) -> None:
        self._move(ISSUED, actor, "issued", {"serial": certificate.serial,
                                             "not_after": isoformat(certificate.not_after)})
        self.certificates.insert(0, certificate)

    def mark_failed(self, actor: Actor, reason: str, findings: list[dict[str, Any]]) -> None:
        self.failure_reason = reason
        self._move(FAILED, actor, "failed", {"reason": reason, "lint_findings": findings})


class OrderHistory(Base):
    """One step of an order's life: who, when, what, with the details that mattered."""

    __tablename__ = "order_history"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"),
                                          index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor_id: Mapped[str | None] = mapped_column(String(36))
    actor_name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    order: Mapped[Order] = relationship(back_populates="history")

    @property
    def actor(self) -> dict[str, str | None]:
        return {"id": self.actor_id, "name": self.actor_name}


class Issuance(Base):
    """One signing request sent to ca-signer for an order; (order, attempt) is unique, so
    a redelivered or duplicated "funds reserved" can never send a second command."""

    __tablename__ = "issuances"
    __table_args__ = (UniqueConstraint("order_id", "attempt",
                                       name="uq_issuances_order_attempt"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="requested")  # issued, rejected
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    order: Mapped[Order] = relationship(back_populates="issuances")


class Certificate(Base):
    """orders' copy of an issued certificate, kept for downloads."""

    __tablename__ = "certificates"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    issuance_id: Mapped[str] = mapped_column(ForeignKey("issuances.id"), unique=True)
    serial: Mapped[str] = mapped_column(String(80), unique=True)
    issuer_id: Mapped[str] = mapped_column(String(64))
    not_before: Mapped[datetime] = mapped_column(UtcDateTime)
    not_after: Mapped[datetime] = mapped_column(UtcDateTime)
    certificate_pem: Mapped[str] = mapped_column(Text)
    chain_pem: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="issued")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    order: Mapped[Order] = relationship(back_populates="certificates")
