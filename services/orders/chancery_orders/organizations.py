"""Organizations for OV and EV certificates: who the certificate says the subscriber is.

An account submits its organization (name, country, state or province, locality, and
optionally street and postal code); the platform operator checks it against one of the
sources BR 3.2.2.1 allows and validates it; the validation backs certificates until
``compliance.reusable_until(..., ORGANIZATION)`` (BR 4.2.1: 398 days for subject
identity data from 2026-03-15, counted at the signing day). The validation keeps its
evidence as an :class:`OrganizationValidationAttempt` (who, when, which source, what
was checked, the reference), shown by ``GET /organizations/{id}/attempts``. OV and EV
orders name a validated organization, and the signing command's subject carries its
fields; DV orders never carry organization fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import iso3166
from chancery_shared.auth.tokens import Principal
from chancery_shared.db import UtcDateTime
from chancery_shared.messaging.envelope import Context, isoformat, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.problems import Conflict, InvalidField, NotFound
from sqlalchemy import Boolean, ForeignKey, Index, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from chancery_orders.compliance import ORGANIZATION, reusable_until
from chancery_orders.model import Base, ManualEvidence, new_id

PENDING, VALIDATED, EXPIRED = "pending", "validated", "expired"
STATUSES = (PENDING, VALIDATED, EXPIRED)
# Validation levels whose certificates name the organization (catalog ``validation_level``)
ORGANIZATION_LEVELS = frozenset({"ov", "ev"})
# X.520 upper bounds (RFC 5280 appendix A)
MAX_LENGTHS = {"name": 64, "state_or_province": 128, "locality": 128,
               "street_address": 128, "postal_code": 40}
# Where BR 3.2.2.1 lets a CA verify an applicant's identity and address
SOURCES = {
    "government_agency": "a government agency in the jurisdiction of the applicant's legal "
                         "creation, existence or recognition (a QGIS)",
    "reliable_data_source": "a third-party database that is periodically updated and "
                            "considered a Reliable Data Source (a QIIS)",
    "site_visit": "a site visit by the CA or a third party acting as its agent",
    "attestation_letter": "an attestation letter (BR 3.2.2.1: e.g. from a lawyer or "
                          "accountant)",
}
ATTEMPTS_SHOWN = 20


class Organization(Base):
    """An account's organization, as the operator validated it."""

    __tablename__ = "organizations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(36), index=True)
    name: Mapped[str] = mapped_column(String(64))
    country: Mapped[str] = mapped_column(String(2))
    state_or_province: Mapped[str] = mapped_column(String(128))
    locality: Mapped[str] = mapped_column(String(128))
    street_address: Mapped[str | None] = mapped_column(String(128))
    postal_code: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default=PENDING)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    submitted_by_id: Mapped[str | None] = mapped_column(String(36))
    submitted_by_name: Mapped[str | None] = mapped_column(String(200))
    validated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    validated_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    validated_by_id: Mapped[str | None] = mapped_column(String(36))
    validated_by_name: Mapped[str | None] = mapped_column(String(200))
    validation_note: Mapped[str | None] = mapped_column(Text)

    def status_at(self, at: datetime) -> str:
        """A validation past its reuse period has expired."""
        if self.status == VALIDATED and self.validated_until is not None \
                and self.validated_until <= at:
            return EXPIRED
        return self.status

    @property
    def current_status(self) -> str:
        return self.status_at(utcnow())

    @property
    def reusable_until(self) -> datetime | None:
        """Until when the validation may back a certificate (BR 4.2.1 at signing)."""
        return self.validated_until

    def is_validated(self, at: datetime) -> bool:
        return self.status_at(at) == VALIDATED

    def subject(self) -> dict[str, str]:
        """The subject fields ca-signer puts in an OV/EV certificate (its key names)."""
        return {"organization_name": self.name, "country": self.country,
                "state_or_province": self.state_or_province, "locality": self.locality}


class OrganizationValidationAttempt(Base):
    """Evidence of one validation of an organization: who checked what, in which source
    (BR 3.2.2.1), and where the proof is kept."""

    __tablename__ = "organization_validation_attempts"
    __table_args__ = (Index("ix_organization_validation_attempts_organization",
                            "organization_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    source: Mapped[str] = mapped_column(String(40))  # a key of SOURCES ("" when migrated)
    checked: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(String(500))
    document_sha256: Mapped[str | None] = mapped_column(String(64))
    validated: Mapped[bool] = mapped_column(Boolean, default=True)
    validated_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    checked_by_id: Mapped[str | None] = mapped_column(String(36))
    checked_by_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # written by the migration from a validation made before evidence was kept
    migrated: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


def _clean(body: dict[str, Any]) -> dict[str, Any]:
    """Trimmed fields; 422 naming the first bad one."""
    values: dict[str, Any] = {}
    for field in ("name", "state_or_province", "locality", "street_address", "postal_code"):
        raw = body.get(field)
        value = raw.strip() if isinstance(raw, str) else None
        if not value:
            if field in ("street_address", "postal_code"):
                values[field] = None
                continue
            raise InvalidField(field, "is required")
        if len(value) > MAX_LENGTHS[field]:
            raise InvalidField(field, f"is longer than {MAX_LENGTHS[field]} characters")
        values[field] = value
    country = str(body.get("country") or "").strip().upper()
    if len(country) != 2 or country not in iso3166.countries_by_alpha2:
        raise InvalidField("country", "must be an ISO 3166-1 alpha-2 country code (US, DE)")
    values["country"] = country
    return values


def _person(context: Context) -> str:
    return context.actor.user_name or context.actor.system or "someone"


def _data(organization: Organization) -> dict[str, Any]:
    return {"organization_id": organization.id, "name": organization.name,
            "country": organization.country,
            "state_or_province": organization.state_or_province,
            "locality": organization.locality,
            "validated_until": isoformat(organization.validated_until)
            if organization.validated_until else None}


def submit_organization(uow: UnitOfWork, principal: Principal, context: Context,
                        body: dict[str, Any]) -> Organization:
    """An account states its organization; it waits for the operator's validation."""
    assert principal.account_id is not None
    values = _clean(body)
    organization = Organization(id=new_id(), account_id=principal.account_id, status=PENDING,
                                created_at=utcnow(), submitted_by_id=principal.user_id,
                                submitted_by_name=principal.name, **values)
    uow.session.add(organization)
    uow.session.flush()
    uow.event("orders.organization.submitted", context, subject=("organization",
                                                                 organization.id),
              summary=f"{_person(context)} submitted the organization {organization.name} "
                      f"({organization.locality}, {organization.country}) for validation",
              data=_data(organization), correlation_id=organization.id)
    uow.commit()
    return organization


def list_organizations(uow: UnitOfWork, principal: Principal, *, status: str | None,
                       limit: int, cursor: str | None) -> tuple[list[Organization], str | None]:
    """The account's organizations, newest first; the operator sees every account's."""
    from chancery_orders.handlers import _page

    query = select(Organization)
    if not principal.is_operator:
        query = query.where(Organization.account_id == principal.account_id)
    if status:
        now = utcnow()
        if status == EXPIRED:
            query = query.where(Organization.status == VALIDATED,
                                Organization.validated_until <= now)
        elif status == VALIDATED:
            query = query.where(Organization.status == VALIDATED,
                                Organization.validated_until > now)
        else:
            query = query.where(Organization.status == status)
    return _page(uow, query, Organization, limit, cursor)


def get_organization(uow: UnitOfWork, principal: Principal, organization_id: str, *,
                     for_update: bool = False) -> Organization:
    """404 for an unknown id and for another account's (the operator sees all)."""
    organization = uow.session.get(Organization, organization_id, with_for_update=for_update)
    if organization is None or not (principal.is_operator
                                    or organization.account_id == principal.account_id):
        raise NotFound("no such organization")
    return organization


def approve_organization(uow: UnitOfWork, principal: Principal, context: Context,
                         organization_id: str, source: str,
                         evidence: ManualEvidence) -> Organization:
    """The operator checked the organization in ``source`` (one of :data:`SOURCES`): it
    may back OV and EV certificates for the reuse period, and the evidence is kept as an
    attempt. Re-validating an expired one is allowed; a still-valid one is a 409."""
    if source not in SOURCES:
        raise InvalidField("source", f"must be one of {', '.join(SOURCES)} (BR 3.2.2.1)")
    organization = get_organization(uow, principal, organization_id, for_update=True)
    now = utcnow()
    if organization.is_validated(now):
        raise Conflict(f"the organization {organization.name} is already validated",
                       code="invalid_organization_state",
                       organization_status=organization.status_at(now))
    organization.status, organization.validated_at = VALIDATED, now
    organization.validated_until = reusable_until(now, ORGANIZATION)
    organization.validated_by_id = context.actor.user_id
    organization.validated_by_name = context.actor.user_name
    organization.validation_note = evidence.checked
    uow.session.add(OrganizationValidationAttempt(
        id=new_id(), organization_id=organization.id, source=source,
        checked=evidence.checked, reference=evidence.reference,
        document_sha256=evidence.document_sha256, validated=True,
        validated_until=organization.validated_until, checked_by_id=context.actor.user_id,
        checked_by_name=context.actor.user_name, created_at=now))
    uow.event("orders.organization.validated", context.with_account(organization.account_id),
              subject=("organization", organization.id),
              summary=f"{_person(context)} validated the organization {organization.name} "
                      f"by {source.replace('_', ' ')} ({evidence.checked}; reference "
                      f"{evidence.reference}), valid until "
                      f"{organization.validated_until.date().isoformat()}",
              data={**_data(organization), "note": evidence.checked, "source": source,
                    "reference": evidence.reference}, correlation_id=organization.id)
    # OV/EV orders waiting for this validation go on to be signed, in this transaction
    from chancery_orders.handlers import resume_waiting_orders
    resume_waiting_orders(uow, context.with_account(organization.account_id),
                          organization.account_id)
    uow.commit()
    return organization


def list_attempts(uow: UnitOfWork, principal: Principal,
                  organization_id: str) -> list[OrganizationValidationAttempt]:
    """The organization's last ``ATTEMPTS_SHOWN`` validations with their evidence, newest
    first (404 for another account's)."""
    get_organization(uow, principal, organization_id)
    return list(uow.session.execute(
        select(OrganizationValidationAttempt)
        .where(OrganizationValidationAttempt.organization_id == organization_id)
        .order_by(OrganizationValidationAttempt.created_at.desc(),
                  OrganizationValidationAttempt.id.desc())
        .limit(ATTEMPTS_SHOWN)).scalars())
