"""orders' service layer: one function per command or event, each in one unit of work.

Functions raise :mod:`chancery_shared.web.problems` errors before anything is written,
emit their messages with ``uow.event`` and commit, so a state change and the events
that describe it are stored together or not at all.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import idna
from chancery_shared.auth.tokens import Principal
from chancery_shared.messaging.envelope import Actor, Context, Envelope, isoformat, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.pagination import decode_cursor, encode_cursor
from chancery_shared.web.problems import (
    Conflict,
    Forbidden,
    InvalidField,
    NotFound,
    Unprocessable,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import lazyload

from chancery_orders import access, caa, downloads, organizations
from chancery_orders import names as hostnames
from chancery_orders.compliance import add_years, not_after_for
from chancery_orders.csrs import CheckedCsr, CsrRejected, KeyPolicy, check_csr
from chancery_orders.model import (
    APPROVED,
    AWAITING_FUNDS,
    AWAITING_VALIDATION,
    CERT_ISSUED,
    INITIAL,
    ISSUED,
    ISSUING,
    PENDING_APPROVAL,
    PLAN_RENEWAL,
    BlockedKey,
    Certificate,
    Domain,
    Issuance,
    ManualEvidence,
    Order,
    Product,
    Unit,
    User,
    covered_only_by_review,
    csr_fingerprint,
    domain_covers,
    new_id,
    uncovered_names,
)

log = logging.getLogger(__name__)
# ca-signer's rejection code for evidence too old on its signing day (BR 4.2.1)
VALIDATION_EXPIRED = "validation_expired"
SUBMIT_DOMAIN_URL = "/api/orders/v1/domains"
MAX_COMMON_NAME_LENGTH = 64  # X.520 ub-common-name
CERTIFICATE_FORMATS = {
    "pem": ("application/x-pem-file", "pem"),
    "pem-chain": ("application/x-pem-file", "chain.pem"),
    "der": ("application/pkix-cert", "cer"),
    "p7b": ("application/pkcs7-mime", "p7b"),
}

# --- shared helpers --------------------------------------------------------------------


def _page(uow: UnitOfWork, query: Select, entity: Any, limit: int,
          cursor: str | None) -> tuple[list[Any], str | None]:
    """Keyset pagination, newest first, on ``(created_at, id)``."""
    position = decode_cursor(cursor)
    if position is not None:
        try:
            at = datetime.fromisoformat(str(position["at"]))
            last_id = str(position["id"])
        except (KeyError, ValueError) as exc:
            raise InvalidField("cursor", "is not a cursor this endpoint returned") from exc
        query = query.where(or_(entity.created_at < at,
                                and_(entity.created_at == at, entity.id < last_id)))
    rows = list(uow.session.execute(
        query.order_by(entity.created_at.desc(), entity.id.desc()).limit(limit + 1)
    ).scalars())
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor({"at": last.created_at.isoformat(), "id": last.id})
    return rows[:limit], next_cursor


def _money(cents: int) -> str:
    """US dollars for summaries, without ever going through a float."""
    return f"${cents // 100:,}.{cents % 100:02d}"


def _person(context: Context) -> str:
    return context.actor.user_name or context.actor.system or "someone"


def _order_event(uow: UnitOfWork, type_: str, context: Context, order: Order, summary: str,
                 data: dict[str, Any]) -> None:
    """Every message of an order's flow carries the order id as its correlation id."""
    uow.event(type_, context.with_account(order.account_id), subject=("order", order.id),
              summary=summary, data=data, correlation_id=order.id)


# --- products --------------------------------------------------------------------------


def list_products(uow: UnitOfWork) -> list[Product]:
    return list(uow.session.execute(
        select(Product).where(Product.active.is_(True)).order_by(Product.position)).scalars())


# --- domains ---------------------------------------------------------------------------


def submit_domain(uow: UnitOfWork, principal: Principal, context: Context, name: str,
                  method: str) -> Domain:
    """Start validating control of ``name`` for the caller's account."""
    assert principal.account_id is not None
    try:
        normalised = hostnames.normalise(name)
    except hostnames.NameRejected as exc:
        raise InvalidField("name", str(exc)) from exc
    taken = uow.session.execute(select(Domain.id).where(
        Domain.account_id == principal.account_id, Domain.name == normalised)).first()
    if taken:
        raise Conflict(f"{normalised} has already been submitted for this account",
                       code="domain_exists", domain_id=taken[0])
    domain = Domain(id=new_id(), account_id=principal.account_id, name=normalised,
                    method=method, status="pending", token=secrets.token_urlsafe(24),
                    created_at=utcnow(), submitted_by_id=principal.user_id,
                    submitted_by_name=principal.name)
    uow.session.add(domain)
    try:
        uow.session.flush()
    except IntegrityError as exc:  # a concurrent twin submitted it first
        raise Conflict(f"{normalised} has already been submitted for this account",
                       code="domain_exists") from exc
    uow.event("orders.domain.submitted", context, subject=("domain", domain.id),
              summary=f"{_person(context)} submitted the domain {normalised} for validation "
                      f"by {method}",
              data={"domain_id": domain.id, "name": normalised, "method": method,
                    "validated_until": None},
              correlation_id=domain.id)
    uow.commit()
    return domain


def _domain_filter(status: str | None, at: datetime) -> Any:
    if status == "validated":
        return and_(Domain.status == "validated", Domain.validated_until > at)
    if status == "expired":
        return or_(Domain.status == "expired",
                   and_(Domain.status == "validated", Domain.validated_until <= at))
    return Domain.status == status


def _name_fragment(text: str) -> str:
    fragment = text.strip().lower().rstrip(".")
    if not fragment.isascii():
        try:
            fragment = idna.encode(fragment, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            pass
    return re.sub(r"([\\%_])", r"\\\1", fragment)


def list_domains(uow: UnitOfWork, principal: Principal, *, status: str | None,
                 name: str | None, limit: int, cursor: str | None
                 ) -> tuple[list[Domain], str | None]:
    """The account's domains; for the platform operator, every account's (to find the
    pending ones to validate)."""
    query = select(Domain)
    if not principal.is_operator:
        query = query.where(Domain.account_id == principal.account_id)
    if status:
        query = query.where(_domain_filter(status, utcnow()))
    if name:
        query = query.where(Domain.name.like(f"%{_name_fragment(name)}%", escape="\\"))
    return _page(uow, query, Domain, limit, cursor)


def _visible_domain(uow: UnitOfWork, principal: Principal, domain_id: str,
                    for_update: bool = False) -> Domain:
    domain = uow.session.get(Domain, domain_id, with_for_update=for_update)
    if domain is None or not (principal.is_operator
                              or domain.account_id == principal.account_id):
        raise NotFound("no such domain")
    return domain


def get_domain(uow: UnitOfWork, principal: Principal, domain_id: str) -> Domain:
    return _visible_domain(uow, principal, domain_id)


def approve_domain(uow: UnitOfWork, principal: Principal, context: Context, domain_id: str,
                   evidence: ManualEvidence) -> Domain:
    """Manual validation by CA staff, with its evidence kept as an attempt: the domain
    backs private products (never public ones) for the reuse period."""
    domain = _visible_domain(uow, principal, domain_id, for_update=True)
    attempt = domain.validate_manually(context.actor, evidence, utcnow())
    uow.session.add(attempt)
    assert domain.validated_until is not None
    until = domain.validated_until.date().isoformat()
    uow.event("orders.domain.validated", context.with_account(domain.account_id),
              subject=("domain", domain.id),
              summary=f"{_person(context)} validated the domain {domain.name} by manual review "
                      f"for private products only ({evidence.checked}; reference "
                      f"{evidence.reference}), valid until {until}",
              data={"domain_id": domain.id, "name": domain.name, "method": domain.method,
                    "validated_until": isoformat(domain.validated_until),
                    "validation": "manual_review", "note": evidence.checked,
                    "reference": evidence.reference},
              correlation_id=domain.id)
    resume_waiting_orders(uow, context.with_account(domain.account_id), domain.account_id)
    uow.commit()
    return domain


def _account_domains(uow: UnitOfWork, account_id: str) -> list[Domain]:
    return list(uow.session.execute(select(Domain).where(
        Domain.account_id == account_id, Domain.status == "validated")).scalars())


def _uncovered(uow: UnitOfWork, order: Order) -> list[str]:
    return uncovered_names(order.names, _account_domains(uow, order.account_id), utcnow(),
                           public=order.product.publicly_trusted)


def _missing_domains(names: list[str]) -> list[str]:
    """The base domains to submit for ``names`` (one per registrable domain)."""
    return sorted({hostnames.registrable_domain(name) for name in names})


def uncovered_reason(uow: UnitOfWork, account_id: str, product: Product,
                     uncovered: list[str]) -> str:
    """Why ``uncovered`` names of an order for ``product`` lack a validation: the names
    and the domains to validate, and, for a public product, which of them a manual
    (private-only) validation of the account would have covered."""
    domains = _missing_domains(uncovered)
    reason = (f"these names are not covered by a validated domain of the account: "
              f"{', '.join(uncovered)}; submit and validate {', '.join(domains)} first")
    if product.publicly_trusted:
        reviewed = covered_only_by_review(uncovered, _account_domains(uow, account_id),
                                          utcnow())
        if reviewed:
            reason += (f" ({', '.join(reviewed)} {'is' if len(reviewed) == 1 else 'are'} "
                       f"validated by manual review, which does not count for the public "
                       f"product {product.code}: validate by dns-txt or http-file, BR "
                       "3.2.2.4)")
    return reason


def domain_not_validated(uow: UnitOfWork, account_id: str, product: Product,
                         uncovered: list[str]) -> Unprocessable:
    """The 422 ``domain_not_validated`` for names no validation covers for ``product``."""
    return Unprocessable(uncovered_reason(uow, account_id, product, uncovered),
                         code="domain_not_validated", domains=_missing_domains(uncovered),
                         names=uncovered, submit_domain_url=SUBMIT_DOMAIN_URL)


# --- placing an order ------------------------------------------------------------------


@dataclass(frozen=True)
class NewOrder:
    product: str
    term_years: int
    server_type: str
    common_name: str
    sans: tuple[str, ...]
    csr: str
    unit_id: str | None = None
    notes: str | None = None
    organization_id: str | None = None  # OV/EV products only
    submission_key: str | None = None  # the request's Idempotency-Key, if it had one


class _Problems:
    """Collects every bad field of a request, so the answer names them all at once."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}
        self.key_rule: str | None = None  # the key policy rule that blocked the CSR's key

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def add_csr_refusal(self, refusal: CsrRejected) -> None:
        self.add("csr", str(refusal))
        if refusal.key_blocked:
            self.key_rule = refusal.rule

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        detail = "; ".join(f"{field}: {' '.join(messages)}"
                           for field, messages in self.errors.items())
        if self.key_rule is not None:  # a key that must never be certified says so
            raise Unprocessable(detail, code="key_blocked", rule=self.key_rule,
                                errors=self.errors)
        raise Unprocessable(detail, code="validation_failed", errors=self.errors)


def key_policy(uow: UnitOfWork) -> KeyPolicy:
    """The key policy of this service: orders' copy of the blocklist (keys by SPKI
    SHA-256) and the curves on offer (carried by the service's units of work)."""
    return KeyPolicy(lambda spki: uow.session.get(BlockedKey, spki) is not None,
                     getattr(uow, "subscriber_curves", None),
                     getattr(uow, "debian_weak_keys", None))


def key_blocked(uow: UnitOfWork, envelope: Envelope) -> None:
    """``ca_signer.key.blocked``: keep the key in orders' copy of the blocklist (once)."""
    spki = envelope.data["spki_sha256"]
    if uow.session.get(BlockedKey, spki) is None:
        uow.session.add(BlockedKey(spki_sha256=spki, reason=envelope.data["reason"],
                                   blocked_at=utcnow()))
    uow.commit()


def _check_names(new: NewOrder, product: Product | None, problems: _Problems) -> list[str]:
    """Normalised, deduplicated names with the common name first."""
    allow_wildcard = product.wildcard if product is not None else True
    wildcard_refusal = (f"is a wildcard, which the product {product.code} does not allow"
                        if product is not None else "")
    common_name = None
    try:
        common_name = hostnames.normalise(new.common_name, allow_wildcard=True)
        if hostnames.is_wildcard(common_name) and not allow_wildcard:
            problems.add("common_name", f"{common_name} {wildcard_refusal}")
        elif len(common_name) > MAX_COMMON_NAME_LENGTH:
            problems.add("common_name", f"is longer than {MAX_COMMON_NAME_LENGTH} characters; "
                                        "put the long name in sans and a shorter one here")
    except hostnames.NameRejected as exc:
        problems.add("common_name", str(exc))
    names: dict[str, None] = {common_name: None} if common_name else {}
    for raw in new.sans:
        try:
            name = hostnames.normalise(raw, allow_wildcard=True)
        except hostnames.NameRejected as exc:
            problems.add("sans", str(exc))
            continue
        if hostnames.is_wildcard(name) and not allow_wildcard:
            problems.add("sans", f"{name} {wildcard_refusal}")
            continue
        names.setdefault(name, None)
    if product is not None and len(names) > product.max_sans:
        problems.add("sans", f"{len(names)} names (the common name included) exceed the "
                             f"{product.max_sans} the product {product.code} allows")
    return list(names)


def _check_unit(uow: UnitOfWork, principal: Principal, unit_id: str | None,
                problems: _Problems) -> str | None:
    if unit_id is None:
        # Default to the requester's only unit, so that unit's administrators approve it.
        if len(principal.unit_ids) == 1:
            unit = uow.session.get(Unit, principal.unit_ids[0])
            if unit is not None and unit.account_id == principal.account_id:
                return unit.id
        return None
    unit = uow.session.get(Unit, unit_id)
    if unit is None or unit.account_id != principal.account_id:
        problems.add("unit_id", "is not a business unit of this account")
    elif principal.role != "admin" and not principal.in_unit(unit_id):
        problems.add("unit_id", "is not one of your business units")
    return unit_id


def _check_csr_names(csr: CheckedCsr, names: list[str], problems: _Problems) -> None:
    """The names a CSR carries (CN, SANs) must all be among the order's names: a CSR made
    for other names is a mistake the requester should see before approval."""
    foreign = []
    for raw in csr.names:
        try:
            name = hostnames.normalise(raw, allow_wildcard=True)
        except hostnames.NameRejected:
            name = None
        if name not in names:
            foreign.append(raw)
    if foreign:
        problems.add("csr", f"names {', '.join(foreign)}, which "
                            f"{'is' if len(foreign) == 1 else 'are'} not among the requested "
                            f"names ({', '.join(names)}); make a CSR for these names or "
                            "request the names it carries")


def _check_organization(uow: UnitOfWork, principal: Principal, product: Product | None,
                        organization_id: str | None, problems: _Problems) -> None:
    """OV/EV orders name an organization of the account; DV ones never carry one."""
    if product is None:
        return
    if product.validation_level not in organizations.ORGANIZATION_LEVELS:
        if organization_id is not None:
            problems.add("organization_id", f"the product {product.code} is "
                                            f"{product.validation_level.upper()}: its "
                                            "certificates carry no organization")
        return
    if organization_id is None:
        problems.add("organization_id", f"is required: the product {product.code} is "
                                        f"{product.validation_level.upper()} and names the "
                                        "organization (POST /api/orders/v1/organizations)")
        return
    found = uow.session.get(organizations.Organization, organization_id)
    if found is None or found.account_id != principal.account_id:
        problems.add("organization_id", "is not an organization of this account")


def _unvalidated_organization(uow: UnitOfWork, order: Order) -> Unprocessable | None:
    """The 422 to answer when the order's organization is not validated now (else None)."""
    if order.organization_id is None:
        return None
    organization = uow.session.get(organizations.Organization, order.organization_id)
    if organization is not None and organization.is_validated(utcnow()):
        return None
    name = organization.name if organization is not None else order.organization_id
    return Unprocessable(f"the organization {name} is not validated; the platform operator "
                         "validates it first", code="organization_not_validated",
                         organization_id=order.organization_id)


@dataclass(frozen=True)
class _CheckedRequest:
    product: Product
    names: list[str]
    csr: CheckedCsr
    unit_id: str | None


def _check_request(uow: UnitOfWork, principal: Principal, new: NewOrder, *,
                   unit: str = "requester") -> _CheckedRequest:
    """Every rule a request must satisfy, all problems at once (422 naming each field).

    ``unit``: ``"requester"`` checks the unit against the caller (a new order; an edit
    that moves the order), ``"kept"`` only that it is still a unit of the account (an
    edit that keeps it, a renewal that inherits it).
    """
    problems = _Problems()
    product = uow.session.get(Product, new.product)
    if product is None or not product.active:
        problems.add("product", f"{new.product} is not a product of the catalog "
                                "(GET /api/orders/v1/products lists them)")
        product = None
    elif not product.offers_term(new.term_years):
        problems.add("term_years", f"the product {product.code} is not sold for "
                                   f"{new.term_years} years")
    names = _check_names(new, product, problems)
    checked_csr = None
    try:
        checked_csr = check_csr(new.csr, key_policy(uow))
    except CsrRejected as exc:
        problems.add_csr_refusal(exc)
    if checked_csr is not None and not {"common_name", "sans"} & set(problems.errors):
        _check_csr_names(checked_csr, names, problems)
    if unit == "requester":
        unit_id = _check_unit(uow, principal, new.unit_id, problems)
    else:
        unit_id = new.unit_id
        found = uow.session.get(Unit, unit_id) if unit_id is not None else None
        if unit_id is not None and (found is None or found.account_id != principal.account_id):
            problems.add("unit_id", "is not a business unit of this account")
    _check_organization(uow, principal, product, new.organization_id, problems)
    problems.raise_if_any()
    assert product is not None and checked_csr is not None
    return _CheckedRequest(product=product, names=names, csr=checked_csr, unit_id=unit_id)


def submit_order(uow: UnitOfWork, principal: Principal, context: Context,
                 new: NewOrder, *, renewal_of: Order | None = None) -> Order:
    """Place an order; it is approved at once when the requester may approve it and every
    name is covered by a validated domain of the account.

    ``renewal_of``: the order this one renews (pre-filled from it; its unit is inherited).
    A submission with an Idempotency-Key this requester already placed an order with
    returns that order and does nothing else: the key is kept on the order in the same
    transaction, so even a retry after an answer was lost (the first attempt committed,
    then the database went away before the response was stored) orders only once.
    """
    assert principal.account_id is not None
    if new.submission_key is not None:
        placed = uow.session.execute(select(Order).where(
            Order.requester_id == principal.user_id,
            Order.submission_key == new.submission_key)).scalar_one_or_none()
        if placed is not None:
            return placed
    checked = _check_request(uow, principal, new,
                             unit="kept" if renewal_of is not None else "requester")
    product, names, checked_csr, unit_id = (checked.product, checked.names, checked.csr,
                                            checked.unit_id)

    now = utcnow()
    order = Order(id=new_id(), account_id=principal.account_id, product_code=product.code,
                  term_years=new.term_years, server_type=new.server_type,
                  common_name=names[0], sans=names, csr_pem=checked_csr.pem,
                  key_description=checked_csr.key_description, unit_id=unit_id,
                  requester_id=principal.user_id, requester_name=principal.name,
                  notes=new.notes or None, price_cents=product.price_cents(new.term_years,
                                                                           len(names)),
                  renewal_of=renewal_of.id if renewal_of is not None else None,
                  organization_id=new.organization_id, submission_key=new.submission_key,
                  created_at=now, updated_at=now)
    order.product = product
    order.submitted(context.actor)
    if renewal_of is not None:
        order.history[-1].details = {**order.history[-1].details, "renewal_of": renewal_of.id}
    uow.session.add(order)
    uow.session.flush()
    years = "year" if new.term_years == 1 else "years"
    renewing = f" renewing {renewal_of.describe()}" if renewal_of is not None else ""
    _order_event(uow, "orders.order.submitted", context, order,
                 f"{_person(context)} requested {order.describe()}{renewing} ({product.name}, "
                 f"{new.term_years} {years}, {len(names)} {'name' if len(names) == 1 else 'names'}"
                 f", {_money(order.price_cents)})",
                 {"order_id": order.id, "status": PENDING_APPROVAL, "product": product.code,
                  "term_years": order.term_years, "server_type": order.server_type,
                  "common_name": order.common_name, "sans": order.sans,
                  "unit_id": order.unit_id, "requester_id": order.requester_id,
                  "price_cents": order.price_cents,
                  **({"renewal_of": renewal_of.id} if renewal_of is not None else {})})
    if renewal_of is not None:
        renewal_of.record(context.actor, "renewal_requested", {"renewal_order_id": order.id})
    if access.may_self_approve(principal, unit_id):
        uncovered = _uncovered(uow, order)
        unvalidated = _unvalidated_organization(uow, order)
        if unvalidated is not None:
            order.record(context.actor, "approval_waiting", {
                "reason": "not approved automatically: the organization is not validated",
                "organization_id": order.organization_id})
        elif uncovered:
            order.record(context.actor, "approval_waiting", {
                "reason": "not approved automatically: "
                          + uncovered_reason(uow, order.account_id, product, uncovered),
                "names": uncovered, "domains": _missing_domains(uncovered)})
        else:
            _approve(uow, order, context, automatic=True, note=None)
    uow.session.flush()
    uow.session.refresh(order)  # load its relationships now: the answer is built after close
    uow.commit()
    return order


# --- editing before approval -----------------------------------------------------------

EDITABLE = ("product", "term_years", "server_type", "common_name", "sans", "csr", "unit_id",
            "notes", "organization_id")


def edit_order(uow: UnitOfWork, principal: Principal, context: Context, order_id: str,
               edits: dict[str, Any]) -> Order:
    """An approver changes any detail of a pending order. The result is checked exactly
    like a new request, the price follows, and the diff ``{field: [old, new]}`` is kept in
    the order's history (the CSR by fingerprint and key, never the PEM)."""
    order = _approvable(uow, principal, order_id, "edit")
    unknown = set(edits) - set(EDITABLE)
    assert not unknown, unknown  # the schema lets nothing else through
    new = NewOrder(
        product=edits.get("product", order.product_code),
        term_years=edits.get("term_years", order.term_years),
        server_type=edits.get("server_type", order.server_type),
        common_name=edits.get("common_name", order.common_name),
        sans=tuple(edits["sans"]) if "sans" in edits else tuple(order.sans),
        csr=edits.get("csr", order.csr_pem),
        unit_id=edits.get("unit_id", order.unit_id),
        notes=edits["notes"] if "notes" in edits else order.notes,
        organization_id=edits.get("organization_id", order.organization_id))
    moves_unit = "unit_id" in edits and edits["unit_id"] != order.unit_id
    checked = _check_request(uow, principal, new, unit="requester" if moves_unit else "kept")
    after = {"product": checked.product.code, "term_years": new.term_years,
             "server_type": new.server_type, "common_name": checked.names[0],
             "sans": checked.names, "csr": csr_fingerprint(checked.csr.pem),
             "key_type": checked.csr.key_description, "unit_id": checked.unit_id,
             "notes": new.notes or None, "organization_id": new.organization_id,
             "price_cents": checked.product.price_cents(new.term_years, len(checked.names))}
    before = {"product": order.product_code, "term_years": order.term_years,
              "server_type": order.server_type, "common_name": order.common_name,
              "sans": list(order.sans), "csr": csr_fingerprint(order.csr_pem),
              "key_type": order.key_description, "unit_id": order.unit_id,
              "notes": order.notes, "organization_id": order.organization_id,
              "price_cents": order.price_cents}
    changes = {field: [before[field], after[field]] for field in after
               if before[field] != after[field]}
    if not changes:
        return order
    order.product_code, order.product = checked.product.code, checked.product
    order.term_years, order.server_type = new.term_years, new.server_type
    order.common_name, order.sans = checked.names[0], checked.names
    order.csr_pem, order.key_description = checked.csr.pem, checked.csr.key_description
    order.unit_id, order.notes = checked.unit_id, new.notes or None
    order.organization_id = new.organization_id
    order.price_cents = after["price_cents"]
    order.edit(context.actor, changes)
    fields = ", ".join(f for f in changes if f != "key_type")
    _order_event(uow, "orders.order.edited", context, order,
                 f"{_person(context)} edited {order.describe()} before approval ({fields})",
                 {"order_id": order.id, "changes": changes})
    uow.session.flush()
    uow.session.refresh(order)
    uow.commit()
    return order


# --- reading orders --------------------------------------------------------------------


def _visible_order(uow: UnitOfWork, principal: Principal, order_id: str,
                   for_update: bool = False) -> Order:
    order = uow.session.get(Order, order_id, with_for_update=for_update)
    if order is None or not access.can_see(principal, order):
        raise NotFound("no such order")
    return order


def get_order(uow: UnitOfWork, principal: Principal, order_id: str) -> Order:
    return _visible_order(uow, principal, order_id)


# --- approving, rejecting, cancelling --------------------------------------------------


def _approvable(uow: UnitOfWork, principal: Principal, order_id: str, action: str) -> Order:
    # The row lock makes two approvers at once serial: one acts, the other sees the result.
    order = _visible_order(uow, principal, order_id, for_update=True)
    if not access.can_approve(principal, order):
        raise Forbidden(f"only an administrator of the account or of the order's business "
                        f"unit may {action} this order", missing_permission="approve_orders")
    if order.status != PENDING_APPROVAL:
        done = "edited" if action == "edit" else f"{action}d"
        raise Conflict(f"order {order.short_id} is {order.status}; only orders pending "
                       f"approval can be {done}", code="invalid_order_state",
                       order_status=order.status)
    return order


def _approve(uow: UnitOfWork, order: Order, context: Context, *, automatic: bool,
             note: str | None) -> None:
    order.approve(context.actor, automatic=automatic, note=note)
    how = "automatically approved" if automatic else "approved"
    _order_event(uow, "orders.order.approved", context, order,
                 f"{_person(context)} {how} {order.describe()} ({_money(order.price_cents)})",
                 {"order_id": order.id, "price_cents": order.price_cents,
                  "unit_id": order.unit_id, "product": order.product_code})


def approve_order(uow: UnitOfWork, principal: Principal, context: Context, order_id: str,
                  note: str | None) -> Order:
    """An approver accepts the order; refused while a name lacks a validated domain."""
    order = _approvable(uow, principal, order_id, "approve")
    uncovered = _uncovered(uow, order)
    if uncovered:
        raise domain_not_validated(uow, order.account_id, order.product, uncovered)
    unvalidated = _unvalidated_organization(uow, order)
    if unvalidated is not None:
        raise unvalidated
    _approve(uow, order, context, automatic=False, note=note)
    uow.commit()
    return order


def reject_order(uow: UnitOfWork, principal: Principal, context: Context, order_id: str,
                 reason: str) -> Order:
    order = _approvable(uow, principal, order_id, "reject")
    order.reject(context.actor, reason)
    _order_event(uow, "orders.order.rejected", context, order,
                 f"{_person(context)} rejected {order.describe()}: {reason}",
                 {"order_id": order.id, "reason": reason})
    uow.commit()
    return order


def cancel_order(uow: UnitOfWork, principal: Principal, context: Context, order_id: str,
                 reason: str | None) -> Order:
    """The requester or an approver withdraws the order before it is being issued."""
    order = _visible_order(uow, principal, order_id, for_update=True)
    if not access.can_cancel(principal, order):
        raise Forbidden("only the requester or an approver of the order may cancel it",
                        missing_permission="cancel_orders")
    order.cancel(context.actor, reason)
    _order_event(uow, "orders.order.cancelled", context, order,
                 f"{_person(context)} cancelled {order.describe()}"
                 + (f": {reason}" if reason else ""),
                 {"order_id": order.id, "reason": reason})
    uow.commit()
    return order


# --- downloads -------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    body: bytes
    mimetype: str
    filename: str


def certificate_download(uow: UnitOfWork, principal: Principal, order_id: str,
                         fmt: str | None) -> Download:
    """The order's certificate as PEM, PEM with its chain, DER or PKCS#7 (by default the
    format its server type installs: :func:`downloads.default_format`)."""
    if fmt is not None and fmt not in CERTIFICATE_FORMATS:
        raise InvalidField("format", f"must be one of {', '.join(CERTIFICATE_FORMATS)}")
    order = _visible_order(uow, principal, order_id)
    fmt = fmt or downloads.default_format(order.server_type)
    if not access.can_download(principal, order):
        raise Forbidden("finance users download only the certificates they requested",
                        missing_permission="download_certificates")
    certificate = order.certificate
    if certificate is None:
        raise Conflict(f"order {order.short_id} is {order.status}; it has no certificate yet",
                       code="not_issued", order_status=order.status)
    mimetype, extension = CERTIFICATE_FORMATS[fmt]
    leaf_pem = certificate.certificate_pem.strip() + "\n"
    if fmt == "pem":
        body = leaf_pem.encode()
    elif fmt == "pem-chain":
        chain = certificate.chain_pem.strip()
        body = (leaf_pem + (chain + "\n" if chain else "")).encode()
    else:
        leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
        if fmt == "der":
            body = leaf.public_bytes(Encoding.DER)
        else:
            chain_certs = (x509.load_pem_x509_certificates(certificate.chain_pem.encode())
                           if certificate.chain_pem.strip() else [])
            body = pkcs7.serialize_certificates([leaf, *chain_certs], Encoding.DER)
    stem = re.sub(r"[^a-z0-9.-]", "_", order.common_name.replace("*", "star"))
    return Download(body=body, mimetype=mimetype, filename=f"{stem}.{extension}")


# --- the saga: answers from ledger and ca-signer ---------------------------------------


def _order_of_message(uow: UnitOfWork, envelope: Envelope, order_id: str) -> Order | None:
    """The order a message is about, locked; None (and a warning) if it is not ours.

    Its unit and assignees, which the saga's answers do not use, are left to load on
    first access instead of with the order: two queries fewer per message (make bench).
    """
    order = uow.session.get(Order, order_id, with_for_update=True,
                            options=[lazyload(Order.unit_record), lazyload(Order.assignments)])
    if order is None or order.account_id != envelope.account_id:
        log.warning("%s %s names order %s, which is not an order of account %s; ignored",
                    envelope.type, envelope.event_id, order_id, envelope.account_id)
        return None
    return order


def _cause(envelope: Envelope) -> Actor:
    """History entries name the service whose answer moved the order."""
    return Actor.service(envelope.source)


def funds_reserved(uow: UnitOfWork, envelope: Envelope) -> None:
    """ledger holds the money: send exactly one signing command for this approval."""
    order = _order_of_message(uow, envelope, envelope.data["order_id"])
    if order is None:
        return
    if order.status not in (APPROVED, AWAITING_FUNDS):
        log.info("funds reserved for order %s, which is %s; nothing to do", order.id,
                 order.status)
        return
    if envelope.data["amount_cents"] != order.price_cents:
        log.warning("ledger reserved %s cents for order %s, which costs %s cents",
                    envelope.data["amount_cents"], order.id, order.price_cents)
    _start_first_issuance(uow, Context.following(envelope, "orders"), order,
                          _cause(envelope),
                          f"orders asked ca-signer to sign the certificate of "
                          f"{order.describe()} ({_money(envelope.data['amount_cents'])} "
                          "reserved)")


@dataclass(frozen=True)
class ValidationEvidence:
    """What backs a certificate signed at ``at``: per covering domain, the newest
    validation and the names it covers; the organization's validation for OV and EV.
    ``stale`` names lack a validation still reusable at ``at`` (BR 4.2.1)."""

    validations: list[dict[str, Any]]
    stale: list[str]
    organization_stale: bool

    @property
    def complete(self) -> bool:
        return not self.stale and not self.organization_stale

    def reason(self) -> str:
        parts = []
        if self.stale:
            parts.append(f"no validation of the account can back {', '.join(self.stale)} "
                         f"today (validate {', '.join(_missing_domains(self.stale))} again)")
        if self.organization_stale:
            parts.append("the organization's validation is too old to back a certificate "
                         "today (the platform operator validates it again)")
        return "; ".join(parts)


def validation_evidence(uow: UnitOfWork, order: Order, names: list[str],
                        at: datetime) -> ValidationEvidence:
    """The evidence a certificate for ``names`` of ``order`` signed at ``at`` would rest
    on: what orders checks before it asks for a signature, and what the signing command
    carries for ca-signer to check again on the day it signs."""
    domains = _account_domains(uow, order.account_id)
    public = order.product.publicly_trusted
    by_domain: dict[str, dict[str, Any]] = {}
    stale: list[str] = []
    for name in names:
        covering = [d for d in domains if domain_covers(d, name, at, public=public)]
        if not covering:
            stale.append(name)
            continue
        newest = max(covering, key=lambda d: d.validated_at or at)
        entry = by_domain.setdefault(newest.id, {
            "kind": "domain", "name": newest.name, "method": newest.validated_with,
            "validated_at": isoformat(newest.validated_at), "names": []})
        entry["names"].append(name)
    validations = list(by_domain.values())
    organization_stale = False
    if order.organization_id is not None:
        organization = uow.session.get(organizations.Organization, order.organization_id)
        if organization is None or not organization.is_validated(at):
            organization_stale = True
        else:
            validations.append({"kind": "organization", "name": organization.name,
                                "method": "operator_review",
                                "validated_at": isoformat(organization.validated_at),
                                "names": []})
    return ValidationEvidence(validations, stale, organization_stale)


def send_sign_command(uow: UnitOfWork, context: Context, order: Order, issuance: Issuance,
                      summary: str, now: datetime | None = None) -> bool:
    """The ``ca_signer.certificate.sign`` command for one issuance of ``order``, after
    checking that every name (and the organization) rests on a validation reusable today
    and after the CAA check of every name: the one place every signing passes. A first
    issuance whose validation is too old waits (``awaiting_validation``, the money stays
    held); a reissue is refused as ca-signer's rejection would; returns whether the
    command was sent."""
    names = list(issuance.sans) if issuance.sans else order.names
    now = now or utcnow()
    evidence = validation_evidence(uow, order, names, now)
    if not evidence.complete:
        if issuance.kind == INITIAL:
            issuance.status, issuance.finished_at = "rejected", now
            issuance.failure_reason = evidence.reason()
            wait_for_validation(uow, context, order, evidence.reason(), evidence.stale,
                                evidence.organization_stale)
        else:
            _refuse_issuance(uow, context, order, issuance, evidence.reason())
        return False
    subject: dict[str, Any] = {"common_name": names[0]}
    if order.organization_id is not None:
        organization = uow.session.get(organizations.Organization, order.organization_id)
        assert organization is not None  # validation_evidence found it validated
        subject.update(organization.subject())
    try:
        findings = uow.caa.check(names)  # the service's checker (OrdersService.uow)
    except caa.CaaRefused as exc:
        _refuse_issuance(uow, context, order, issuance, f"CAA: {exc}")
        return False
    if uow.caa.enabled:  # the evidence of a check that passed stays with the order
        order.record(context.actor, "caa_checked", {
            "issuance_id": issuance.id, "checked_at": isoformat(utcnow()),
            "vantage": uow.caa.vantage, "names": [f.as_dict() for f in findings]})
    _order_event(uow, "ca_signer.certificate.sign", context, order, summary,
                 {"order_id": order.id, "issuance_id": issuance.id,
                  "csr_pem": issuance.csr_pem or order.csr_pem,
                  "profile": order.product.validation_level,
                  "subject": subject, "sans": names,
                  "not_after": isoformat(issuance.not_after) if issuance.not_after else None,
                  "validations": evidence.validations})
    return True


def wait_for_validation(uow: UnitOfWork, context: Context, order: Order, reason: str,
                        names: list[str], organization: bool) -> None:
    """The order's first certificate cannot be signed on today's evidence: it waits for
    the validation to be renewed, its money still held and nothing charged."""
    order.wait_for_validation(context.actor, reason, names, organization)
    _order_event(uow, "orders.order.awaiting_validation", context, order,
                 f"{order.describe(capital=True)} waits for validation: {reason}",
                 {"order_id": order.id, "reason": reason, "names": names,
                  "organization": organization})


def _start_first_issuance(uow: UnitOfWork, context: Context, order: Order, actor: Actor,
                          summary: str) -> bool:
    """Ask for the order's first certificate (on approval with funds, or on resuming)."""
    now = utcnow()
    # One certificate for the whole term when the rules allow it (never longer than the
    # term); otherwise the longest allowed, and the term is a plan reissued within it.
    not_after = not_after_for(add_years(now, order.term_years), now)
    issuance = Issuance(id=new_id(), order_id=order.id, attempt=len(order.issuances) + 1,
                        status="requested", requested_at=now, kind=INITIAL,
                        not_after=not_after)
    order.start_issuing(actor, issuance)
    uow.session.flush()  # the (order, attempt) constraint speaks here, before any command
    return send_sign_command(uow, context, order, issuance, summary)


def resume_waiting_orders(uow: UnitOfWork, context: Context, account_id: str) -> list[Order]:
    """After a validation of the account was renewed: ask again for the certificate of
    each of its orders awaiting validation that today's evidence now backs. The caller
    commits."""
    waiting = uow.session.execute(select(Order).where(
        Order.account_id == account_id, Order.status == AWAITING_VALIDATION)
        .order_by(Order.created_at).with_for_update()).scalars().all()
    resumed = []
    now = utcnow()
    for order in waiting:
        if not validation_evidence(uow, order, order.names, now).complete:
            continue
        if _start_first_issuance(uow, context, order, context.actor,
                                 f"orders asked ca-signer again to sign the certificate of "
                                 f"{order.describe()}: its validation was renewed"):
            resumed.append(order)
    return resumed


def _refuse_issuance(uow: UnitOfWork, context: Context, order: Order, issuance: Issuance,
                     reason: str) -> None:
    """orders itself refused to sign: a first issuance fails (ledger releases the money on
    ``orders.order.failed``); a reissue fails and the current certificate stays."""
    issuance.status, issuance.finished_at = "rejected", utcnow()
    if issuance.kind != INITIAL:
        order.reissue_failed(context.actor, issuance, reason, [])
        current = order.certificate
        _order_event(uow, "orders.order.reissue_failed", context, order,
                     f"orders refused to reissue {order.describe()} ({reason}); "
                     + (f"certificate {current.serial} stays current" if current
                        else "nothing changed"),
                     {"order_id": order.id, "issuance_id": issuance.id, "reason": reason})
        return
    order.mark_failed(context.actor, reason, [])
    _order_event(uow, "orders.order.failed", context, order,
                 f"{order.describe(capital=True)} failed: {reason}",
                 {"order_id": order.id, "reason": reason})


def funds_declined(uow: UnitOfWork, envelope: Envelope) -> None:
    """Not enough money: the order waits until ledger reserves it after a deposit."""
    order = _order_of_message(uow, envelope, envelope.data["order_id"])
    if order is None:
        return
    if order.status != APPROVED:
        log.info("funds declined for order %s, which is %s; nothing to do", order.id,
                 order.status)
        return
    amount, available = envelope.data["amount_cents"], envelope.data["available_cents"]
    order.wait_for_funds(_cause(envelope), amount, available)
    _order_event(uow, "orders.order.awaiting_funds", Context.following(envelope, "orders"),
                 order,
                 f"{order.describe(capital=True)} awaits funds: it costs {_money(amount)} "
                 f"and {_money(available)} is available",
                 {"order_id": order.id, "price_cents": order.price_cents,
                  "available_cents": available})


def _issuance_of(order: Order, envelope: Envelope) -> Issuance | None:
    issuance_id = envelope.data["issuance_id"]
    issuance = next((i for i in order.issuances if i.id == issuance_id), None)
    if issuance is None:
        log.warning("%s %s names issuance %s, unknown for order %s; ignored", envelope.type,
                    envelope.event_id, issuance_id, order.id)
        return None
    # The first certificate moves the order out of issuing; a reissue leaves it issued
    # (or finds it revoked meanwhile), so only the issuance's own status tells.
    settled = issuance.status != "requested" or (issuance.kind == INITIAL
                                                 and order.status != ISSUING)
    if settled:
        log.info("%s for issuance %s (%s) of order %s (%s); already settled, ignored",
                 envelope.type, issuance.id, issuance.status, order.id, order.status)
        return None
    return issuance


def send_revoke_command(uow: UnitOfWork, context: Context, order: Order,
                        certificate: Certificate, reason: str, why: str) -> None:
    """Ask ca-signer to revoke one certificate of ``order`` (it answers with revoked)."""
    uow.event("ca_signer.certificate.revoke", context.with_account(order.account_id),
              subject=("certificate", certificate.serial),
              summary=f"orders asked ca-signer to revoke certificate {certificate.serial} of "
                      f"{order.describe()} ({reason}): {why}",
              data={"serial": certificate.serial, "reason": reason}, correlation_id=order.id)


def certificate_issued(uow: UnitOfWork, envelope: Envelope) -> None:
    """ca-signer signed: keep a copy for downloads and mark the order issued (or, for a
    reissue, make it the order's current certificate)."""
    data = envelope.data
    order = _order_of_message(uow, envelope, data["order_id"])
    issuance = _issuance_of(order, envelope) if order is not None else None
    if order is None or issuance is None:
        return
    now = utcnow()
    certificate = Certificate(
        id=new_id(), order_id=order.id, issuance_id=issuance.id, serial=data["serial"],
        issuer_id=data["issuer_id"], not_before=datetime.fromisoformat(data["not_before"]),
        not_after=datetime.fromisoformat(data["not_after"]),
        certificate_pem=data["certificate_pem"], chain_pem=data["chain_pem"],
        status=CERT_ISSUED, created_at=now)
    issuance.status, issuance.finished_at = "issued", now
    if issuance.kind != INITIAL:
        _reissue_issued(uow, envelope, order, issuance, certificate)
        return
    order.mark_issued(_cause(envelope), certificate)
    _order_event(uow, "orders.order.issued", Context.following(envelope, "orders"), order,
                 f"{order.describe(capital=True)} was issued (serial {certificate.serial}, "
                 f"valid until {certificate.not_after.date().isoformat()})",
                 {"order_id": order.id, "serial": certificate.serial})


def _reissue_issued(uow: UnitOfWork, envelope: Envelope, order: Order, issuance: Issuance,
                    certificate: Certificate) -> None:
    context = Context.following(envelope, "orders")
    now = certificate.created_at
    automatic = issuance.kind == PLAN_RENEWAL
    if order.status != ISSUED:
        # Revoked while ca-signer was signing: the new certificate must not live on.
        reason = order.revocation_reason or "cessation_of_operation"
        order.certificates.insert(0, certificate)
        certificate.request_revocation(reason, now)
        order.record(_cause(envelope), "reissued_after_revocation",
                     {"issuance_id": issuance.id, "serial": certificate.serial,
                      "reason": reason})
        send_revoke_command(uow, context, order, certificate, reason,
                            f"it was reissued after the order was {order.status}")
        return
    previous = order.certificate
    order.accept_reissue(_cause(envelope), issuance, certificate)
    supersede = (issuance.revoke_previous and previous is not None
                 and previous.status == CERT_ISSUED)
    what = "automatically reissued" if automatic else "reissued"
    _order_event(uow, "orders.order.reissued", context, order,
                 f"{order.describe(capital=True)} was {what} (serial {certificate.serial}, "
                 f"valid until {certificate.not_after.date().isoformat()}"
                 + (f"; {previous.serial} will be revoked as superseded)" if supersede
                    else ")"),
                 {"order_id": order.id, "issuance_id": issuance.id,
                  "serial": certificate.serial,
                  "previous_serial": previous.serial if previous else None,
                  "automatic": automatic})
    if supersede:
        assert previous is not None
        previous.request_revocation("superseded", now)
        send_revoke_command(uow, context, order, previous, "superseded",
                            f"reissued as {certificate.serial}")


def certificate_rejected(uow: UnitOfWork, envelope: Envelope) -> None:
    """ca-signer refused to sign: the order fails and shows why (a refused reissue leaves
    the current certificate in place and records why)."""
    data = envelope.data
    order = _order_of_message(uow, envelope, data["order_id"])
    issuance = _issuance_of(order, envelope) if order is not None else None
    if order is None or issuance is None:
        return
    issuance.status, issuance.finished_at = "rejected", utcnow()
    findings = data.get("lint_findings") or []
    context = Context.following(envelope, "orders")
    if issuance.kind != INITIAL:
        order.reissue_failed(_cause(envelope), issuance, data["reason"], findings)
        current = order.certificate
        _order_event(uow, "orders.order.reissue_failed", context, order,
                     f"ca-signer refused to reissue {order.describe()} ({data['reason']}); "
                     + (f"certificate {current.serial} stays current" if current
                        else "nothing changed"),
                     {"order_id": order.id, "issuance_id": issuance.id,
                      "reason": data["reason"]})
        return
    if data.get("code") == VALIDATION_EXPIRED:
        # The signer judged the evidence too old on its signing day (the clock crossed a
        # limit since orders checked): wait for a new validation, the money still held.
        issuance.failure_reason = data["reason"]
        wait_for_validation(uow, context, order, f"ca-signer: {data['reason']}",
                            data.get("names") or [], bool(data.get("organization")))
        return
    order.mark_failed(_cause(envelope), data["reason"], findings)
    _order_event(uow, "orders.order.failed", context, order,
                 f"{order.describe(capital=True)} failed: ca-signer refused to sign it "
                 f"({data['reason']})",
                 {"order_id": order.id, "reason": data["reason"]})


# --- read models fed by identity -------------------------------------------------------


def unit_changed(uow: UnitOfWork, envelope: Envelope) -> None:
    """Keep the business units' names (shown on orders) and accounts (checked on orders)."""
    if envelope.account_id is None:
        log.warning("%s %s has no account; ignored", envelope.type, envelope.event_id)
        return
    data = envelope.data
    unit = uow.session.get(Unit, data["unit_id"])
    if unit is None:
        uow.session.add(Unit(id=data["unit_id"], account_id=envelope.account_id,
                             name=data["name"], updated_at=utcnow()))
    elif unit.account_id == envelope.account_id:
        unit.name, unit.updated_at = data["name"], utcnow()


def user_changed(uow: UnitOfWork, envelope: Envelope) -> None:
    data = envelope.data
    user = uow.session.get(User, data["user_id"])
    active = False if envelope.type == "identity.user.deactivated" else data.get("active", True)
    if user is None:
        user = User(id=data["user_id"], account_id=envelope.account_id)
        uow.session.add(user)
    elif user.account_id != envelope.account_id:
        log.warning("%s moves user %s between accounts; ignored", envelope.type, user.id)
        return
    user.email, user.name, user.role = data["email"], data["name"], data["role"]
    user.active, user.updated_at = bool(active), utcnow()

