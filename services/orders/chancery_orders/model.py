"""The registration authority's domain: products, domains, orders and their life.

An order moves through a small state machine (see README.md); every move goes through
:meth:`Order._move`, which refuses transitions the machine does not have and writes the
order's history. Which names a validated domain covers is decided in one place,
:func:`domain_covers`.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from chancery_orders.compliance import add_years, reusable_until

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

    @property
    def publicly_trusted(self) -> bool:
        """dv, ov and ev certificates chain to the public root and follow the BR; only
        ``private`` ones do not (an unknown level counts as public: the stricter rule)."""
        return self.validation_level != "private"

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

DOMAIN_METHODS = ("dns-txt", "http-file")  # the automated methods a domain is submitted for
DOMAIN_STATUSES = ("pending", "validated", "failed", "expired")
CHALLENGE_LABEL = "_chancery-challenge"
HTTP_FILE_PATH = "/.well-known/pki-validation/"
MANUAL = "manual"  # validation by the operator's review: not a BR 3.2.2.4 method


@dataclass(frozen=True)
class ValidationMethod:
    """What a validation made by one method is worth: the one place the scope is decided.

    ``br_section``: the Baseline Requirements method it implements (None: not a BR method).
    ``subdomains``: it covers names under the validated one (the validated name is then an
    Authorization Domain Name). ``wildcards``: it covers ``*.`` names under the validated
    one (BR 3.2.2.4: a wildcard is validated through the name without ``*.``, and only a
    method whose text allows it may be used for one). ``public``: it counts for publicly
    trusted products (dv, ov, ev); otherwise only for private ones.
    """

    code: str
    title: str
    br_section: str | None
    subdomains: bool
    wildcards: bool
    public: bool


VALIDATION_METHODS: dict[str, ValidationMethod] = {m.code: m for m in (
    # BR 3.2.2.4.7 DNS Change: the Random Value in a TXT record of the Authorization Domain
    # Name (or its _chancery-challenge label); the CA may issue for that FQDN and every FQDN
    # ending with its labels, wildcards included.
    ValidationMethod("dns-txt", "DNS Change", "3.2.2.4.7", subdomains=True, wildcards=True,
                     public=True),
    # BR 3.2.2.4.18 Agreed-Upon Change to Website v2: a file under
    # /.well-known/pki-validation/ of the FQDN; "the CA MUST NOT issue Certificates for other
    # FQDNs that end with all the labels of the validated FQDN" and "this method is NOT
    # suitable for validating Wildcard Domain Names": the exact name only.
    ValidationMethod("http-file", "Agreed-Upon Change to Website v2", "3.2.2.4.18",
                     subdomains=False, wildcards=False, public=True),
    # The operator's review of evidence the account gave (ownership records, a ticket):
    # no BR method, so never for a publicly trusted certificate; for the private
    # hierarchy it vouches for the domain and the names under it.
    ValidationMethod(MANUAL, "Operator review (not a BR 3.2.2.4 method)", None,
                     subdomains=True, wildcards=True, public=False),
)}


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
    # how the current validation was made: a key of VALIDATION_METHODS (its scope)
    validated_with: Mapped[str | None] = mapped_column(String(20))

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
    def reusable_until(self) -> datetime | None:
        """Until when the validation may back a certificate (BR 4.2.1 at signing)."""
        return self.validated_until

    @property
    def validation_method(self) -> ValidationMethod | None:
        """The scope of the current validation (None: none, or an unknown method)."""
        return VALIDATION_METHODS.get(self.validated_with or "")

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

    def validate_manually(self, by: Actor, evidence: ManualEvidence,
                          at: datetime) -> DomainValidationAttempt:
        """CA staff reviewed the evidence ``evidence`` describes and vouch for the domain:
        a validation for private products only (``VALIDATION_METHODS["manual"]``), kept as
        an attempt. Refused while a validation is current: it would replace a BR-method
        validation (which already covers private products) or one made with other
        evidence. The token is left alone: it belongs to the BR methods, so the account
        can still validate for public products with the record it published."""
        if self.status_at(at) == "validated":
            method = self.validation_method
            raise Conflict(f"the domain {self.name} is already validated (by "
                           f"{self.validated_with}, until {isoformat(self.validated_until)})"
                           + ("; a BR-method validation covers private products too"
                              if method is not None and method.public else ""),
                           code="invalid_domain_state", domain_status="validated",
                           validated_with=self.validated_with)
        self.status = "validated"
        self.validated_at = at
        self.validated_until = reusable_until(at)
        self.validated_by_id = by.user_id
        self.validated_by_name = by.user_name
        self.validation_note = evidence.checked
        self.validated_with = MANUAL
        return DomainValidationAttempt(
            id=new_id(), domain_id=self.id, method=MANUAL, token="",
            queried=evidence.reference[:2000],
            vantage=f"manual review by {by.user_name or by.user_id or 'the operator'}"[:300],
            answer=evidence.checked, outcome="validated (manual review: private products "
                                             "only)",
            validated=True, trigger="manual_review", requested_by_id=by.user_id,
            requested_by_name=by.user_name, checked=evidence.checked,
            reference=evidence.reference, document_sha256=evidence.document_sha256,
            created_at=at)

    def spend_token(self) -> None:
        """Tokens are single use (BR 3.2.2.4): once a validation is made, the next one
        (a re-check before expiry, or after) needs a fresh value."""
        self.token = new_token()

    def covers(self, name: str, at: datetime, *, public: bool) -> bool:
        return domain_covers(self, name, at, public=public)


@dataclass(frozen=True)
class ManualEvidence:
    """What a person checked, and where the proof is: required for every validation by
    review (domains for private products, organizations for OV)."""

    checked: str  # what was checked, in words ("WHOIS registrant matches; called ...")
    reference: str  # a URL, a ticket number or a document reference
    document_sha256: str | None = None  # the SHA-256 of the document kept elsewhere


def new_token() -> str:
    """A validation token: 192 random bits (BR: at least 112), URL- and DNS-safe."""
    return secrets.token_urlsafe(24)


def domain_covers(domain: Domain, name: str, at: datetime, *, public: bool) -> bool:
    """The coverage rule, from :data:`VALIDATION_METHODS`: a domain validated (and not
    expired) at ``at`` covers its exact name; names under it if its method covers
    subdomains; ``*.`` names under it if its method covers wildcards. For a publicly
    trusted product (``public``) only a BR method's validation counts. A domain without a
    known method covers nothing."""
    method = domain.validation_method
    if domain.status_at(at) != "validated" or method is None:
        return False
    if public and not method.public:
        return False
    wildcard = hostnames.is_wildcard(name)
    if wildcard and not method.wildcards:
        return False
    host = hostnames.base_of(name)
    if host == domain.name:
        return True
    return method.subdomains and host.endswith("." + domain.name)


class DomainValidationAttempt(Base):
    """Evidence: one validation attempt, what was asked, from where, what came back; for
    a manual review, who checked what and where the proof is."""

    __tablename__ = "domain_validation_attempts"
    __table_args__ = (Index("ix_domain_validation_attempts_domain", "domain_id",
                            "created_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    domain_id: Mapped[str] = mapped_column(ForeignKey("domains.id"))
    method: Mapped[str] = mapped_column(String(20))
    token: Mapped[str] = mapped_column(String(100))  # the value looked for ("" for manual)
    queried: Mapped[str] = mapped_column(String(2000))  # DNS names, URLs; manual: reference
    vantage: Mapped[str] = mapped_column(String(300))  # resolver / connect address, host
    answer: Mapped[str] = mapped_column(Text)  # what came back, truncated
    outcome: Mapped[str] = mapped_column(String(1000))  # "validated" or "failed: why"
    validated: Mapped[bool] = mapped_column(Boolean)
    trigger: Mapped[str] = mapped_column(String(20))  # on_demand, scheduled, manual_review
    requested_by_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # a manual review's evidence (null for the automated methods)
    requested_by_id: Mapped[str | None] = mapped_column(String(36))
    checked: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(500))
    document_sha256: Mapped[str | None] = mapped_column(String(64))
    # written by the migration from a validation made before evidence was kept
    migrated: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


def uncovered_names(names: Iterable[str], domains: Iterable[Domain], at: datetime, *,
                    public: bool) -> list[str]:
    """The names no domain in ``domains`` covers at ``at`` (in the order given), for a
    publicly trusted product (``public``) or a private one."""
    domains = list(domains)
    return [name for name in names
            if not any(domain_covers(d, name, at, public=public) for d in domains)]


def covered_only_by_review(names: Iterable[str], domains: Iterable[Domain],
                           at: datetime) -> list[str]:
    """Of ``names``, those only a manual (private-only) validation covers: what to tell a
    public order whose names are "validated" in the account but not by a BR method."""
    domains = list(domains)
    return [name for name in names
            if any(domain_covers(d, name, at, public=False) for d in domains)
            and not any(domain_covers(d, name, at, public=True) for d in domains)]


# --- orders ---------------------------------------------------------------------------

PENDING_APPROVAL = "pending_approval"
APPROVED = "approved"
AWAITING_FUNDS = "awaiting_funds"
# paid for (the money stays held) but a name's or the organization's validation is too
# old to back a certificate signed now (BR 4.2.1); issuing resumes once it is renewed
AWAITING_VALIDATION = "awaiting_validation"
ISSUING = "issuing"
ISSUED = "issued"
REJECTED = "rejected"
CANCELLED = "cancelled"
FAILED = "failed"
REVOKED = "revoked"
EXPIRED = "expired"
ORDER_STATUSES = (PENDING_APPROVAL, APPROVED, AWAITING_FUNDS, AWAITING_VALIDATION, ISSUING,
                  ISSUED, REJECTED, CANCELLED, FAILED, REVOKED, EXPIRED)
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING_APPROVAL: frozenset({APPROVED, REJECTED, CANCELLED}),
    APPROVED: frozenset({AWAITING_FUNDS, AWAITING_VALIDATION, ISSUING, CANCELLED}),
    AWAITING_FUNDS: frozenset({AWAITING_VALIDATION, ISSUING, CANCELLED}),
    AWAITING_VALIDATION: frozenset({ISSUING, CANCELLED}),
    ISSUING: frozenset({ISSUED, FAILED, AWAITING_VALIDATION}),
    ISSUED: frozenset({REVOKED, EXPIRED}),
}
CANCELLABLE = (PENDING_APPROVAL, APPROVED, AWAITING_FUNDS, AWAITING_VALIDATION)
RENEWABLE = (ISSUED, EXPIRED)
# RFC 5280 CRLReason names a subscriber may give (5.3.1), in the API's snake_case.
REVOCATION_REASONS = ("unspecified", "key_compromise", "affiliation_changed", "superseded",
                      "cessation_of_operation", "privilege_withdrawn")
REFUND_WINDOW = timedelta(days=30)
# A plan is reissued only while more than this is left of it after the current certificate.
PLAN_REMAINDER_WORTH_A_CERTIFICATE = timedelta(days=1)
# issuance kinds: the order's first certificate, a reissue someone asked for, and the
# automatic reissue of a multi-year plan
INITIAL, REISSUE, PLAN_RENEWAL = "initial", "reissue", "plan_renewal"
# certificate statuses (orders' copy)
CERT_ISSUED, CERT_REVOKING, CERT_REVOKED = "issued", "revocation_requested", "revoked"
SERVER_TYPES = ("apache", "nginx", "iis", "tomcat", "f5", "haproxy", "aws", "azure", "other")


class Order(Base):
    """A request for a certificate, from submission to issuance (or its end)."""

    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_account_created", "account_id", "created_at", "id"),
                      # one order per requester and Idempotency-Key, stored with the order
                      Index("uq_orders_requester_submission_key", "requester_id",
                            "submission_key", unique=True))
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
    # the Idempotency-Key it was submitted with, written in the same transaction as the
    # order: a retry whose first attempt committed but never answered finds it here
    submission_key: Mapped[str | None] = mapped_column(String(255))
    requester_name: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    price_cents: Mapped[int] = mapped_column(Integer)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # the end of the term paid for: first issuance + term_years (set at first issuance);
    # certificates are reissued within it (a plan) and never outlast it
    plan_ends_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    renewal_of: Mapped[str | None] = mapped_column(ForeignKey("orders.id"), index=True)
    # OV/EV: the validated organization the certificate names (organizations.py)
    organization_id: Mapped[str | None] = mapped_column(String(36), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revocation_reason: Mapped[str | None] = mapped_column(String(40))
    refunded_cents: Mapped[int | None] = mapped_column(Integer)

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
    assignments: Mapped[list[OrderAssignee]] = relationship(
        back_populates="order", order_by="OrderAssignee.assigned_at", lazy="selectin",
        cascade="all, delete-orphan")

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
        """The current certificate: the newest one (a reissue replaces it on arrival)."""
        return self.certificates[0] if self.certificates else None

    @property
    def first_certificate(self) -> Certificate | None:
        return self.certificates[-1] if self.certificates else None

    @property
    def issued_at(self) -> datetime | None:
        """When the order's first certificate was issued (the refund window counts from it)."""
        first = self.first_certificate
        return first.not_before if first else None

    @property
    def is_plan(self) -> bool:
        """A term longer than one certificate may last: reissued within it, automatically."""
        first = self.first_certificate
        return (self.plan_ends_at is not None and first is not None
                and first.not_after + PLAN_REMAINDER_WORTH_A_CERTIFICATE < self.plan_ends_at)

    @property
    def plan(self) -> dict[str, Any] | None:
        if not self.is_plan:
            return None
        return {"ends_at": self.plan_ends_at, "certificates": len(
            [i for i in self.issuances if i.status == "issued"])}

    @property
    def pending_reissue(self) -> Issuance | None:
        """A reissue (asked for, or a plan's) sent to ca-signer and not answered yet."""
        return next((i for i in self.issuances
                     if i.kind != INITIAL and i.status == "requested"), None)

    @property
    def reissue_pending(self) -> bool:
        return self.pending_reissue is not None

    @property
    def assignee_ids(self) -> list[str]:
        return [a.user_id for a in self.assignments]

    @property
    def assignees(self) -> list[dict[str, str | None]]:
        return [{"id": a.user_id, "name": a.user.name if a.user else None}
                for a in self.assignments]

    @property
    def unrevoked_certificates(self) -> list[Certificate]:
        return [c for c in self.certificates if c.status == CERT_ISSUED]

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

    def wait_for_validation(self, actor: Actor, reason: str, names: list[str],
                            organization: bool) -> None:
        """The validation behind some names (or the organization) is too old to back a
        certificate signed now: the order waits, its money held, until it is renewed."""
        self.failure_reason = reason
        self._move(AWAITING_VALIDATION, actor, "awaiting_validation",
                   {"reason": reason, "names": names, "organization": organization})

    def start_issuing(self, actor: Actor, issuance: Issuance) -> None:
        self.failure_reason = None
        self._move(ISSUING, actor, "issuing", {"issuance_id": issuance.id,
                                               "attempt": issuance.attempt})
        self.issuances.append(issuance)

    def mark_issued(self, actor: Actor, certificate: Certificate) -> None:
        # The term starts with the first certificate; every later one stays within it.
        self.plan_ends_at = add_years(certificate.not_before, self.term_years)
        self._move(ISSUED, actor, "issued", {"serial": certificate.serial,
                                             "not_after": isoformat(certificate.not_after),
                                             "term_ends_at": isoformat(self.plan_ends_at)})
        self.certificates.insert(0, certificate)

    def edit(self, actor: Actor, changes: dict[str, list[Any]]) -> None:
        """An approver changed details before approval; the diff stays in the history."""
        if self.status != PENDING_APPROVAL:
            raise Conflict(f"order {self.short_id} is {self.status}; only orders pending "
                           "approval can be edited", code="invalid_order_state",
                           order_status=self.status)
        self.updated_at = utcnow()
        self.record(actor, "edited", {"changes": changes}, at=self.updated_at)

    def request_reissue(self, actor: Actor, issuance: Issuance, details: dict[str, Any]) -> None:
        """A new certificate was asked for; the order stays issued until it arrives."""
        if self.status != ISSUED:
            raise Conflict(f"order {self.short_id} is {self.status}; only issued orders can "
                           "be reissued", code="invalid_order_state", order_status=self.status)
        if self.reissue_pending:
            raise Conflict(f"order {self.short_id} already has a reissue in progress",
                           code="reissue_pending", order_status=self.status)
        self.issuances.append(issuance)
        self.updated_at = utcnow()
        self.record(actor, "reissue_requested" if issuance.kind == REISSUE
                    else "plan_reissue_requested",
                    {"issuance_id": issuance.id, **details}, at=self.updated_at)

    def accept_reissue(self, actor: Actor, issuance: Issuance, certificate: Certificate) -> None:
        """The reissued certificate arrived: it is the order's certificate from now on."""
        previous = self.certificate
        self.certificates.insert(0, certificate)
        if issuance.csr_pem:
            self.csr_pem = issuance.csr_pem
            self.key_description = issuance.key_description or self.key_description
        if issuance.sans:
            self.sans = list(issuance.sans)
            self.common_name = issuance.sans[0]
        self.updated_at = utcnow()
        self.record(actor, "reissued", {
            "issuance_id": issuance.id, "serial": certificate.serial,
            "previous_serial": previous.serial if previous else None,
            "not_after": isoformat(certificate.not_after), "automatic": issuance.kind ==
            PLAN_RENEWAL}, at=self.updated_at)

    def reissue_failed(self, actor: Actor, issuance: Issuance, reason: str,
                       findings: list[dict[str, Any]]) -> None:
        """ca-signer refused the reissue: the current certificate stays; the reason is kept."""
        issuance.failure_reason = reason
        self.updated_at = utcnow()
        self.record(actor, "reissue_failed", {"issuance_id": issuance.id, "reason": reason,
                                              "lint_findings": findings}, at=self.updated_at)

    def revoke(self, actor: Actor, reason: str, at: datetime,
               details: dict[str, Any] | None = None) -> list[Certificate]:
        """The order ends revoked; returns the certificates to revoke at ca-signer."""
        certificates = self.unrevoked_certificates
        self._move(REVOKED, actor, "revoked", {
            "reason": reason, "serials": [c.serial for c in certificates], **(details or {})})
        self.revoked_at, self.revocation_reason = at, reason
        for certificate in certificates:
            certificate.request_revocation(reason, at)
        return certificates

    def expire(self, actor: Actor) -> None:
        current = self.certificate
        self._move(EXPIRED, actor, "expired",
                   {"serial": current.serial if current else None,
                    "not_after": isoformat(current.not_after) if current else None})

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
    kind: Mapped[str] = mapped_column(String(20), default=INITIAL, server_default=INITIAL)
    # a reissue's own request (the order's own CSR and names for the first certificate)
    csr_pem: Mapped[str | None] = mapped_column(Text)
    key_description: Mapped[str | None] = mapped_column(String(40))
    sans: Mapped[list[str] | None] = mapped_column(JSON)
    revoke_previous: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    not_after: Mapped[datetime | None] = mapped_column(UtcDateTime)  # what was asked for
    requested_by_id: Mapped[str | None] = mapped_column(String(36))
    requested_by_name: Mapped[str | None] = mapped_column(String(200))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # A plan's automatic reissue names the certificate it follows; UNIQUE makes it one per
    # certificate whatever the number of workers running the plan job.
    plan_renewal_of: Mapped[str | None] = mapped_column(String(36), unique=True)

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
    status: Mapped[str] = mapped_column(String(20), default=CERT_ISSUED)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revocation_reason: Mapped[str | None] = mapped_column(String(40))
    revocation_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    order: Mapped[Order] = relationship(back_populates="certificates")

    def request_revocation(self, reason: str, at: datetime) -> None:
        """Asked ca-signer to revoke it; ``revoked`` once ca-signer confirms."""
        if self.status == CERT_ISSUED:
            self.status = CERT_REVOKING
            self.revocation_reason, self.revocation_requested_at = reason, at

    def mark_revoked(self, reason: str, at: datetime) -> None:
        self.status, self.revocation_reason, self.revoked_at = CERT_REVOKED, reason, at


class OrderAssignee(Base):
    """A user of the account given access to an order (see, download, reissue)."""

    __tablename__ = "order_assignees"
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"),
                                          primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), primary_key=True, index=True)
    assigned_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    assigned_by_id: Mapped[str | None] = mapped_column(String(36))
    assigned_by_name: Mapped[str | None] = mapped_column(String(200))

    order: Mapped[Order] = relationship(back_populates="assignments")
    user: Mapped[User | None] = relationship(
        primaryjoin="foreign(OrderAssignee.user_id) == User.id", viewonly=True,
        lazy="selectin")


def csr_fingerprint(pem: str) -> str:
    """A short, stable name for a CSR in diffs and history (never the PEM itself)."""
    return "sha256:" + hashlib.sha256(pem.strip().encode()).hexdigest()[:16]


class BlockedKey(Base):
    """orders' copy of ca-signer's blocklist of compromised subscriber keys (from
    ``ca_signer.key.blocked``), by SPKI SHA-256: a request with such a key is refused
    when it is placed (``key_blocked``), in any account, before anything is charged."""

    __tablename__ = "blocked_keys"
    spki_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(40))
    blocked_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
