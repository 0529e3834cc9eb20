"""The life of an order after issuance: reissue, revocation, refund, assignment, renewal,
and the scheduled work (a plan's automatic reissues, expiry).

Like :mod:`chancery_orders.handlers`, each function runs in one unit of work, raises a
problem before writing anything, emits its messages with ``uow.event`` and commits.
Functions that depend on the time take ``now`` so tests can move it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from chancery_shared import config as cfg
from chancery_shared.auth.tokens import Principal
from chancery_shared.messaging.envelope import Actor, Context, Envelope, isoformat, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.problems import Conflict, Forbidden, Unprocessable
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from chancery_orders import access, notices
from chancery_orders.compliance import not_after_for
from chancery_orders.csrs import CsrRejected, check_csr
from chancery_orders.handlers import (
    NewOrder,
    _account_domains,
    _check_csr_names,
    _check_names,
    _missing_domains,
    _money,
    _order_event,
    _order_of_message,
    _person,
    _Problems,
    _visible_order,
    domain_not_validated,
    key_policy,
    send_revoke_command,
    send_sign_command,
    submit_order,
)
from chancery_orders.mailer import Mail, Mailer, MailNotSent
from chancery_orders.model import (
    CANCELLED,
    CERT_ISSUED,
    CERT_REVOKED,
    FAILED,
    ISSUED,
    PLAN_REMAINDER_WORTH_A_CERTIFICATE,
    PLAN_RENEWAL,
    REFUND_WINDOW,
    REISSUE,
    REJECTED,
    RENEWABLE,
    Certificate,
    Issuance,
    Order,
    OrderAssignee,
    User,
    new_id,
    uncovered_names,
)

log = logging.getLogger(__name__)
SERVICE = "orders"
# A reissue needs something of the term left to cover.
MIN_TERM_LEFT_FOR_REISSUE = timedelta(hours=1)


def _days(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value
    return parse


@dataclasses.dataclass(frozen=True)
class LifecycleSettings:
    """When plans are reissued, and how often the lifecycle job looks."""

    # a plan's next certificate is requested this many days before the current expires
    plan_reissue_days: int = cfg.setting("CHANCERY_ORDERS_PLAN_REISSUE_DAYS", 30, _days(1, 90))
    # the account hears this many days ahead when a plan's next reissue would find a
    # validation too old (BR 4.2.1 on that day), so it can validate again in time
    plan_validation_notice_days: int = cfg.setting(
        "CHANCERY_ORDERS_PLAN_VALIDATION_NOTICE_DAYS", 14, _days(1, 60))
    interval_seconds: float = cfg.setting("CHANCERY_ORDERS_LIFECYCLE_INTERVAL_SECONDS", 3600.0,
                                          cfg.parse_positive_float)

    @property
    def reissue_before(self) -> timedelta:
        return timedelta(days=self.plan_reissue_days)

    @property
    def notice_before(self) -> timedelta:
        return timedelta(days=self.plan_validation_notice_days)


def _acting_on(uow: UnitOfWork, principal: Principal, order_id: str,
               allowed: Callable[[Principal, Order], bool], permission: str,
               refusal: str) -> Order:
    """The order, locked, if the caller may see it (else 404) and act on it (else 403)."""
    order = _visible_order(uow, principal, order_id, for_update=True)
    if not allowed(principal, order):
        raise Forbidden(refusal, missing_permission=permission)
    return order


def _must_be_issued(order: Order, action: str) -> None:
    if order.status != ISSUED:
        raise Conflict(f"order {order.short_id} is {order.status}; only issued orders can be "
                       f"{action}", code="invalid_order_state", order_status=order.status)


def _system(order: Order) -> Context:
    return Context(actor=Actor.service(SERVICE), account_id=order.account_id,
                   correlation_id=order.id)


# --- reissue ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReissueRequest:
    csr: str
    sans: tuple[str, ...] | None = None  # None: the same names
    revoke_previous: bool = True


def reissue_order(uow: UnitOfWork, principal: Principal, context: Context, order_id: str,
                  request: ReissueRequest, now: datetime) -> Order:
    """A new certificate for the same order and term, at no charge: a new CSR and/or
    names (within the product's limits and the account's validated domains)."""
    order = _acting_on(uow, principal, order_id, access.can_reissue, "reissue_certificates",
                       "only the requester, an assignee or an approver of the order may "
                       "reissue it")
    _must_be_issued(order, "reissued")
    if order.reissue_pending:
        raise Conflict(f"order {order.short_id} already has a reissue in progress",
                       code="reissue_pending", order_status=order.status)
    if order.plan_ends_at is not None and order.plan_ends_at <= now + MIN_TERM_LEFT_FOR_REISSUE:
        raise Conflict(f"the term of order {order.short_id} ends "
                       f"{isoformat(order.plan_ends_at)}; renew it instead",
                       code="term_ended", plan_ends_at=isoformat(order.plan_ends_at))
    problems = _Problems()
    if request.sans is None:
        names = order.names
    else:
        names = _check_names(NewOrder(product=order.product_code, term_years=order.term_years,
                                      server_type=order.server_type,
                                      common_name=order.common_name, sans=request.sans,
                                      csr=request.csr), order.product, problems)
    checked = None
    try:
        checked = check_csr(request.csr, key_policy(uow))
    except CsrRejected as exc:
        problems.add_csr_refusal(exc)
    if checked is not None and "sans" not in problems.errors:
        _check_csr_names(checked, names, problems)
    problems.raise_if_any()
    assert checked is not None
    uncovered = uncovered_names(names, _account_domains(uow, order.account_id), now,
                                public=order.product.publicly_trusted)
    if uncovered:
        raise domain_not_validated(uow, order.account_id, order.product, uncovered)

    issuance = Issuance(id=new_id(), order_id=order.id, attempt=len(order.issuances) + 1,
                        status="requested", requested_at=now, kind=REISSUE,
                        csr_pem=checked.pem, key_description=checked.key_description,
                        sans=names, revoke_previous=request.revoke_previous,
                        not_after=not_after_for(order.plan_ends_at, now),
                        requested_by_id=principal.user_id, requested_by_name=principal.name)
    added = [n for n in names if n not in order.names]
    removed = [n for n in order.names if n not in names]
    order.request_reissue(context.actor, issuance, {
        "sans": names, "added": added, "removed": removed, "key": checked.key_description,
        "revoke_previous": request.revoke_previous})
    uow.session.flush()  # the (order, attempt) constraint speaks before any command
    changes = ", ".join(part for part in (
        f"adding {', '.join(added)}" if added else "",
        f"removing {', '.join(removed)}" if removed else "") if part) or "same names"
    _order_event(uow, "orders.order.reissue_requested", context, order,
                 f"{_person(context)} asked to reissue {order.describe()} ({changes}, "
                 f"{checked.key_description} key"
                 + ("" if request.revoke_previous else ", keeping the current certificate")
                 + ")",
                 {"order_id": order.id, "issuance_id": issuance.id, "sans": names,
                  "revoke_previous": request.revoke_previous, "automatic": False})
    send_sign_command(uow, context, order, issuance,
                      f"orders asked ca-signer to reissue the certificate of "
                      f"{order.describe()} for {_person(context)} (no charge)")
    uow.commit()
    return order


# --- revocation and refund -------------------------------------------------------------


def _announce_revocation(uow: UnitOfWork, context: Context, order: Order,
                         certificates: list[Certificate], reason: str, why: str) -> None:
    _order_event(uow, "orders.order.revoked", context, order,
                 f"{_person(context)} revoked {order.describe()} ({reason})",
                 {"order_id": order.id, "reason": reason,
                  "serials": [c.serial for c in certificates]})
    for certificate in certificates:
        send_revoke_command(uow, context, order, certificate, reason, why)


def revoke_order(uow: UnitOfWork, principal: Principal, context: Context, order_id: str,
                 reason: str, now: datetime) -> Order:
    """Revoke the order's certificates (RFC 5280 reason); the order ends ``revoked``."""
    order = _acting_on(uow, principal, order_id, access.can_reissue, "reissue_certificates",
                       "only the requester, an assignee or an approver of the order may "
                       "revoke it")
    _must_be_issued(order, "revoked")
    certificates = order.revoke(context.actor, reason, now)
    _announce_revocation(uow, context, order, certificates, reason,
                         f"{_person(context)} revoked the order")
    uow.commit()
    return order


def refund_order(uow: UnitOfWork, principal: Principal, context: Context, order_id: str,
                 reason: str, note: str | None, now: datetime) -> Order:
    """Within 30 days of the first issuance an approver may take the certificate back:
    revoked, and the price returned to the account's available balance by ledger."""
    order = _acting_on(uow, principal, order_id, access.can_approve, "approve_orders",
                       "only an administrator of the account or of the order's business unit "
                       "may refund this order")
    _must_be_issued(order, "refunded")
    issued_at = order.issued_at
    assert issued_at is not None
    deadline = issued_at + REFUND_WINDOW
    if now > deadline:
        raise Conflict(f"order {order.short_id} was issued {isoformat(issued_at)}; refunds "
                       f"are possible for {REFUND_WINDOW.days} days, until "
                       f"{isoformat(deadline)}", code="refund_window_closed",
                       issued_at=isoformat(issued_at), refund_deadline=isoformat(deadline))
    certificates = order.revoke(context.actor, reason, now, {"refund": True})
    order.refunded_cents = order.price_cents
    order.record(context.actor, "refunded", {"amount_cents": order.price_cents,
                                             **({"note": note} if note else {})}, at=now)
    _announce_revocation(uow, context, order, certificates, reason,
                         f"{_person(context)} refunded the order")
    _order_event(uow, "orders.order.refunded", context, order,
                 f"{_person(context)} refunded {order.describe()} "
                 f"({_money(order.price_cents)} back to the account"
                 + (f": {note}" if note else "") + ")",
                 {"order_id": order.id, "amount_cents": order.price_cents, "note": note})
    uow.commit()
    return order


def certificate_revoked(uow: UnitOfWork, envelope: Envelope) -> None:
    """ca-signer confirms a revocation: orders' copy of the certificate says so. A current
    certificate revoked without the order asking (by the CA) ends the order too."""
    data = envelope.data
    certificate = uow.session.execute(
        select(Certificate).where(Certificate.serial == data["serial"])).scalar_one_or_none()
    if certificate is None:
        log.info("ca-signer revoked %s, which is no certificate of an order; ignored",
                 data["serial"])
        return
    order = _order_of_message(uow, envelope, certificate.order_id)
    if order is None or certificate.status == CERT_REVOKED:
        return
    revoked_at = datetime.fromisoformat(data["revoked_at"])
    cause = Actor.service(envelope.source)
    current = order.certificate is certificate
    certificate.mark_revoked(data["reason"], revoked_at)
    order.record(cause, "certificate_revoked", {"serial": certificate.serial,
                                                "reason": data["reason"],
                                                "revoked_at": data["revoked_at"]})
    if current and order.status == ISSUED:
        order.revoke(cause, data["reason"], revoked_at, {"by": "ca_signer"})
        _order_event(uow, "orders.order.revoked", Context.following(envelope, SERVICE), order,
                     f"{order.describe(capital=True)} ended: ca-signer revoked its "
                     f"certificate {certificate.serial} ({data['reason']})",
                     {"order_id": order.id, "reason": data["reason"],
                      "serials": [certificate.serial]})


# --- assignment ------------------------------------------------------------------------


def set_assignees(uow: UnitOfWork, principal: Principal, context: Context, order_id: str,
                  user_ids: list[str]) -> Order:
    """Who else may see, download and reissue the order: active users of its account."""
    order = _acting_on(uow, principal, order_id, access.can_assign, "assign_certificates",
                       "only an administrator of the account or of the order's business unit "
                       "may assign this order")
    wanted = list(dict.fromkeys(user_ids))
    users = {u.id: u for u in uow.session.execute(
        select(User).where(User.id.in_(wanted))).scalars()} if wanted else {}
    unknown = [uid for uid in wanted if uid not in users
               or users[uid].account_id != order.account_id or not users[uid].active]
    if unknown:
        raise Unprocessable(
            f"not active users of this account: {', '.join(unknown)}",
            code="validation_failed",
            errors={"user_ids": [f"{uid} is not an active user of this account"
                                 for uid in unknown]})
    before = order.assignee_ids
    added = [uid for uid in wanted if uid not in before]
    removed = [uid for uid in before if uid not in wanted]
    if not added and not removed:
        return order
    now = utcnow()
    for assignment in [a for a in order.assignments if a.user_id in removed]:
        order.assignments.remove(assignment)
    for uid in added:
        order.assignments.append(OrderAssignee(
            order_id=order.id, user_id=uid, assigned_at=now,
            assigned_by_id=principal.user_id, assigned_by_name=principal.name))
    order.updated_at = now
    order.record(context.actor, "assignees_changed", {
        "user_ids": wanted, "added": added, "removed": removed})
    names = ", ".join(users[uid].name for uid in wanted) or "nobody"
    _order_event(uow, "orders.order.assignees_changed", context, order,
                 f"{_person(context)} gave access to {order.describe()} to {names}",
                 {"order_id": order.id, "user_ids": wanted})
    uow.session.flush()
    uow.session.refresh(order)
    uow.commit()
    return order


# --- renewal ---------------------------------------------------------------------------

_ENDED_UNISSUED = (REJECTED, CANCELLED, FAILED)


def renew_order(uow: UnitOfWork, principal: Principal, context: Context, order_id: str,
                csr: str, notes: str | None) -> Order:
    """A new order pre-filled from this one (same product, term, server type, names, unit
    and notes; a new CSR), approved and paid like any order; both histories link them."""
    old = _acting_on(uow, principal, order_id, access.can_reissue, "reissue_certificates",
                     "only the requester, an assignee or an approver of the order may "
                     "renew it")
    if old.status not in RENEWABLE:
        raise Conflict(f"order {old.short_id} is {old.status}; only issued or expired orders "
                       "can be renewed", code="invalid_order_state", order_status=old.status)
    open_renewal = uow.session.execute(select(Order.id).where(
        Order.renewal_of == old.id, Order.status.not_in(_ENDED_UNISSUED))).scalar()
    if open_renewal is not None:
        raise Conflict(f"order {old.short_id} is already renewed by order {open_renewal[:8]}",
                       code="already_renewed", renewal_order_id=open_renewal)
    new = NewOrder(product=old.product_code, term_years=old.term_years,
                   server_type=old.server_type, common_name=old.common_name,
                   sans=tuple(old.sans), csr=csr, unit_id=old.unit_id,
                   notes=notes if notes is not None else old.notes,
                   organization_id=old.organization_id)
    return submit_order(uow, principal, context, new, renewal_of=old)


# --- the lifecycle job: plans and expiry -----------------------------------------------


@dataclasses.dataclass
class LifecycleRun:
    """What one pass did (for logs and tests)."""

    reissued: list[str] = dataclasses.field(default_factory=list)
    waiting: list[str] = dataclasses.field(default_factory=list)  # domains to revalidate
    expired: list[str] = dataclasses.field(default_factory=list)
    warned: list[str] = dataclasses.field(default_factory=list)  # told to validate ahead


def run_lifecycle(uow_factory: Callable[[], UnitOfWork], now: datetime, *,
                  reissue_before: timedelta, notice_before: timedelta = timedelta(days=14),
                  mailer: Mailer | None = None) -> LifecycleRun:
    """One pass of the scheduled work, safe to run on several workers at once.

    Plans: an issued order whose current certificate expires within ``reissue_before``
    while its term goes on gets its next certificate (same CSR and names, no charge),
    exactly once per certificate. Expiry: an issued order whose current certificate has
    expired (and nothing is coming) becomes ``expired``. Each order is its own
    transaction, so one bad order never blocks the others.
    """
    run = LifecycleRun()
    newer = aliased(Certificate)
    # the order's current certificate: none newer exists
    current = (Certificate.order_id == Order.id) & ~exists().where(
        newer.order_id == Certificate.order_id, newer.created_at > Certificate.created_at)
    with uow_factory() as uow:
        due = list(uow.session.execute(
            select(Order.id).where(
                Order.status == ISSUED, Order.plan_ends_at > now,
                exists().where(current, Certificate.status == CERT_ISSUED,
                               Certificate.not_after <= now + reissue_before,
                               ~exists().where(Issuance.plan_renewal_of == Certificate.id))
            )).scalars())
    with uow_factory() as uow:
        soon = list(uow.session.execute(
            select(Order.id).where(
                Order.status == ISSUED, Order.plan_ends_at > now,
                exists().where(current, Certificate.status == CERT_ISSUED,
                               Certificate.not_after > now + reissue_before,
                               Certificate.not_after <= now + reissue_before + notice_before))
            ).scalars())
    for order_id in soon:
        warning = _attempt(uow_factory, order_id,
                           lambda uow, oid: _warn_plan(uow, oid, now, reissue_before))
        if warning:
            run.warned.append(order_id)
            if warning.mail is not None:
                _send(mailer, warning.mail)
    for order_id in due:
        outcome = _attempt(uow_factory, order_id,
                           lambda uow, oid: _reissue_plan(uow, oid, now, reissue_before))
        if outcome == "requested":
            run.reissued.append(order_id)
        elif outcome == "waiting":
            run.waiting.append(order_id)
    with uow_factory() as uow:
        ended = list(uow.session.execute(
            select(Order.id).where(
                Order.status == ISSUED,
                exists().where(current, Certificate.not_after <= now))).scalars())
    for order_id in ended:
        if _attempt(uow_factory, order_id, lambda uow, oid: _expire(uow, oid, now)):
            run.expired.append(order_id)
    if run.reissued or run.waiting or run.expired:
        log.info("lifecycle: %d plan certificates requested, %d waiting for domain "
                 "validation, %d orders expired", len(run.reissued), len(run.waiting),
                 len(run.expired))
    return run


@dataclasses.dataclass(frozen=True)
class _Warning:
    """A plan warned (committed); the e-mail to send, if it has anyone to go to."""

    mail: Mail | None


def _warn_plan(uow: UnitOfWork, order_id: str, now: datetime,
               reissue_before: timedelta) -> _Warning | None:
    """A plan's next certificate is requested soon: when the validation of a name will be
    too old on that day (BR 4.2.1 counts at signing), say so now, once per certificate,
    with an event and the e-mail to send (after the commit)."""
    order = uow.session.get(Order, order_id, with_for_update=True)
    if order is None or order.status != ISSUED or order.plan_ends_at is None:
        return None
    current = order.certificate
    if current is None or current.not_after + PLAN_REMAINDER_WORTH_A_CERTIFICATE \
            >= order.plan_ends_at:
        return None  # the plan's last certificate: no reissue is coming
    if any(h.action == "plan_validation_needed"
           and h.details.get("follows_serial") == current.serial for h in order.history):
        return None
    reissue_at = current.not_after - reissue_before
    uncovered = uncovered_names(order.names, _account_domains(uow, order.account_id),
                                reissue_at, public=order.product.publicly_trusted)
    if not uncovered:
        return None
    domains = _missing_domains(uncovered)
    day = reissue_at.date().isoformat()
    context = _system(order)
    order.record(context.actor, "plan_validation_needed", {
        "follows_serial": current.serial, "names": uncovered, "domains": domains,
        "reissue_at": isoformat(reissue_at)}, at=now)
    _order_event(uow, "orders.order.validation_needed", context, order,
                 f"The plan of {order.describe()} reissues its certificate on {day}; by "
                 f"then no validation backs {', '.join(uncovered)}: validate "
                 f"{', '.join(domains)} again before that day",
                 {"order_id": order.id, "names": uncovered, "domains": domains,
                  "reissue_at": isoformat(reissue_at), "serial": current.serial})
    to = notices.order_recipients(uow, order)
    if not to:
        return _Warning(None)
    return _Warning(Mail(to=to, subject=f"Validate {', '.join(domains)} before {day}: the plan of "
                               f"{order.common_name} reissues then",
                body="\n".join([
                    f"The plan of order {order.id} ({order.common_name}) asks for its next "
                    f"certificate on {day}, at no charge.",
                    "",
                    "The Baseline Requirements count a validation's age on the day a "
                    f"certificate is signed; on {day} no validation of your account will "
                    f"back {', '.join(uncovered)}.",
                    "",
                    f"Validate {', '.join(domains)} again before that day (POST "
                    "/api/orders/v1/domains/{id}/check once the new token is published).",
                    "Otherwise the reissue waits until you do, and the current certificate "
                    f"expires on {current.not_after.date().isoformat()}.",
                ]) + "\n"))


def _send(mailer: Mailer | None, mail: Mail) -> None:
    """Best effort: the event and the order's history already carry the warning."""
    if mailer is None:
        return
    try:
        mailer.send(mail)
    except MailNotSent as exc:
        log.warning("could not mail the plan validation warning to %s: %s", mail.to, exc)


def _attempt(uow_factory: Callable[[], UnitOfWork], order_id: str,
             step: Callable[[UnitOfWork, str], Any]) -> Any:
    """One order's step in its own transaction; what it did, or None."""
    with uow_factory() as uow:
        try:
            outcome = step(uow, order_id)
            if outcome:
                uow.commit()
            return outcome
        except IntegrityError:
            # another worker took this certificate's reissue first: nothing to do
            log.info("lifecycle: order %s was handled by another worker", order_id)
            return None


def _reissue_plan(uow: UnitOfWork, order_id: str, now: datetime,
                  reissue_before: timedelta) -> str | None:
    order = uow.session.get(Order, order_id, with_for_update=True)
    if order is None or order.status != ISSUED or order.reissue_pending:
        return None
    current = order.certificate
    if (current is None or current.status != CERT_ISSUED or order.plan_ends_at is None
            or current.not_after > now + reissue_before
            or current.not_after + PLAN_REMAINDER_WORTH_A_CERTIFICATE >= order.plan_ends_at
            or any(i.plan_renewal_of == current.id for i in order.issuances)):
        return None
    uncovered = uncovered_names(order.names, _account_domains(uow, order.account_id), now,
                                public=order.product.publicly_trusted)
    if uncovered:
        # The Baseline Requirements allow no issuance on a stale validation: the plan
        # waits (and says why, once per certificate) until the domains are validated.
        waiting = [h for h in order.history if h.action == "plan_reissue_waiting"
                   and h.details.get("follows_serial") == current.serial]
        if waiting:
            return None
        order.record(Actor.service(SERVICE), "plan_reissue_waiting", {
            "follows_serial": current.serial, "names": uncovered,
            "domains": _missing_domains(uncovered),
            "reason": "the plan's next certificate waits for these domains to be "
                      "validated again"}, at=now)
        return "waiting"
    not_after = not_after_for(order.plan_ends_at, now)
    issuance = Issuance(id=new_id(), order_id=order.id, attempt=len(order.issuances) + 1,
                        status="requested", requested_at=now, kind=PLAN_RENEWAL,
                        revoke_previous=False, not_after=not_after,
                        plan_renewal_of=current.id, requested_by_name=SERVICE)
    context = _system(order)
    order.request_reissue(context.actor, issuance, {
        "follows_serial": current.serial, "not_after": isoformat(not_after) if not_after
        else None, "plan_ends_at": isoformat(order.plan_ends_at)})
    uow.session.flush()  # UNIQUE(plan_renewal_of): one reissue per certificate
    last = " (the plan's last certificate)" if not_after is not None else ""
    _order_event(uow, "orders.order.reissue_requested", context, order,
                 f"orders asked for the next certificate of the plan of {order.describe()}"
                 f"{last}: {current.serial} expires {current.not_after.date().isoformat()}, "
                 f"the plan runs until {order.plan_ends_at.date().isoformat()}",
                 {"order_id": order.id, "issuance_id": issuance.id, "sans": order.names,
                  "revoke_previous": False, "automatic": True})
    if not send_sign_command(uow, context, order, issuance,
                             f"orders asked ca-signer to reissue {order.describe()} within "
                             "its plan (no charge)", now=now):
        return None  # refused (CAA): recorded on the order, not retried
    return "requested"


def _expire(uow: UnitOfWork, order_id: str, now: datetime) -> str | None:
    order = uow.session.get(Order, order_id, with_for_update=True)
    if order is None or order.status != ISSUED or order.reissue_pending:
        return None
    current = order.certificate
    if current is None or current.not_after > now:
        return None
    context = _system(order)
    order.expire(context.actor)
    _order_event(uow, "orders.order.expired", context, order,
                 f"{order.describe(capital=True)} expired: its certificate {current.serial} "
                 f"ended {current.not_after.date().isoformat()}",
                 {"order_id": order.id, "serial": current.serial})
    return "expired"

