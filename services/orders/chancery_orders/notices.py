"""Renewal notices: who is told that a certificate expires, when, and exactly once.

An account has default notice days (90, 60, 30, 7 and 3 days before expiry until an
administrator changes them) and extra addresses; an order may override either, or turn
its notices off. A background job (:class:`RenewalNotices`) looks at the current
certificates of issued orders and, when a notice day is reached, mails the requester,
the order's assignees and the extra addresses.

Exactly once, whatever the number of workers: a notice is first *claimed* by inserting
its ``(serial, days_before)`` into ``renewal_notices_sent`` (UNIQUE) in a transaction of
its own; only the worker whose insert succeeded sends it, then marks it sent and emits
``orders.renewal.notice_sent`` in one transaction. A claim that was never marked sent
(the worker died while sending) may be taken over after ``claim_timeout``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from chancery_shared import config as cfg
from chancery_shared.auth.tokens import Principal
from chancery_shared.db import UtcDateTime
from chancery_shared.messaging.envelope import Actor, Context, isoformat, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.problems import Conflict, Forbidden, NotFound, Unprocessable
from marshmallow import ValidationError, validate
from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    and_,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, raiseload

from chancery_orders import access
from chancery_orders.mailer import Mail, Mailer, MailNotSent, SmtpMailer, SmtpSettings, recipients
from chancery_orders.model import ISSUED, Base, Certificate, Order, User, new_id

log = logging.getLogger(__name__)

DEFAULT_DAYS_BEFORE = (90, 60, 30, 7, 3)
MIN_DAYS, MAX_DAYS = 1, 365
MAX_NOTICE_DAYS = 12     # entries in one days_before list
MAX_EMAILS = 20          # extra addresses in one list
MAX_EMAIL_LENGTH = 254
# A notice day only counts when it falls at least this long after the certificate's
# start: a 90-day certificate gets no "expires in 90 days" mail the hour it is issued.
MIN_AGE_FOR_NOTICE = timedelta(days=1)
DAY = timedelta(days=1)


# --- tables -------------------------------------------------------------------------------


class RenewalSettings(Base):
    """An account's renewal-notice defaults (no row: :data:`DEFAULT_DAYS_BEFORE`, no
    extra addresses)."""

    __tablename__ = "renewal_settings"
    account_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    days_before: Mapped[list[int]] = mapped_column(JSON)
    emails: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_by_id: Mapped[str | None] = mapped_column(String(36))
    updated_by_name: Mapped[str | None] = mapped_column(String(200))


class OrderRenewalSettings(Base):
    """One order's override: ``None`` in a list means "as the account"."""

    __tablename__ = "order_renewal_settings"
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"),
                                          primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    days_before: Mapped[list[int] | None] = mapped_column(JSON)
    emails: Mapped[list[str] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_by_id: Mapped[str | None] = mapped_column(String(36))
    updated_by_name: Mapped[str | None] = mapped_column(String(200))


class RenewalNoticeSent(Base):
    """A notice claimed by a worker (``sent_at`` null) or sent: at most one per
    certificate and notice day."""

    __tablename__ = "renewal_notices_sent"
    __table_args__ = (UniqueConstraint("serial", "days_before",
                                       name="uq_renewal_notices_sent_serial_days_before"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    serial: Mapped[str] = mapped_column(String(80))
    days_before: Mapped[int] = mapped_column(Integer)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"),
                                          index=True)
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    claimed_by: Mapped[str] = mapped_column(String(120))
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    recipients: Mapped[list[str] | None] = mapped_column(JSON)


# --- what applies to an order ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NoticePlan:
    """The notices an order gets: its own values where it overrides, else the account's."""

    enabled: bool
    days_before: tuple[int, ...]
    emails: tuple[str, ...]
    override: OrderRenewalSettings | None = None

    def as_dict(self, order_id: str) -> dict[str, Any]:
        override = self.override
        return {"order_id": order_id, "enabled": self.enabled,
                "days_before": list(self.days_before), "emails": list(self.emails),
                "overrides": {
                    "days_before": override.days_before if override else None,
                    "emails": override.emails if override else None,
                    "enabled": override.enabled if override else None}}


def account_defaults(settings: RenewalSettings | None) -> tuple[tuple[int, ...], tuple[str, ...]]:
    if settings is None:
        return DEFAULT_DAYS_BEFORE, ()
    return tuple(settings.days_before), tuple(settings.emails)


def plan_for(account: RenewalSettings | None, override: OrderRenewalSettings | None
             ) -> NoticePlan:
    days, emails = account_defaults(account)
    if override is None:
        return NoticePlan(True, days, emails)
    return NoticePlan(
        override.enabled,
        tuple(override.days_before) if override.days_before is not None else days,
        tuple(override.emails) if override.emails is not None else emails,
        override)


def due_notice(plan: NoticePlan, not_before: datetime, not_after: datetime,
               now: datetime) -> int | None:
    """The notice day to send now for a certificate, or None.

    Several notice days may have passed at once (the job was stopped, the settings
    changed): only the nearest to expiry is sent, since the others' news is stale.
    """
    if not plan.enabled or not now < not_after:
        return None
    due = [days for days in plan.days_before
           if not_after - days * DAY <= now
           and not_after - days * DAY >= not_before + MIN_AGE_FOR_NOTICE]
    return min(due) if due else None


def days_left(not_after: datetime, now: datetime) -> int:
    """Whole days until expiry, rounded up (an hour left is "1 day")."""
    return max(1, math.ceil((not_after - now) / DAY))


# --- validating settings -------------------------------------------------------------------


def check_days(values: Sequence[int], errors: dict[str, list[str]]) -> list[int]:
    """Notice days: whole numbers of 1 to 365, each once; returned furthest first."""
    problems = []
    out_of_range = [value for value in values if not MIN_DAYS <= value <= MAX_DAYS]
    if out_of_range:
        problems.append(f"{', '.join(map(str, out_of_range))}: notice days are between "
                        f"{MIN_DAYS} and {MAX_DAYS} days before expiry")
    repeated = sorted({value for value in values if list(values).count(value) > 1})
    if repeated:
        problems.append(f"{', '.join(map(str, repeated))} appear more than once")
    if len(values) > MAX_NOTICE_DAYS:
        problems.append(f"at most {MAX_NOTICE_DAYS} notice days")
    if problems:
        errors["days_before"] = problems
    return sorted(set(values), reverse=True)


def check_emails(values: Sequence[str], errors: dict[str, list[str]]) -> list[str]:
    """Extra addresses: valid, each once (ignoring case); returned as given, trimmed."""
    problems = []
    emails = [value.strip() for value in values]
    for email in emails:
        try:
            validate.Email()(email)
            if len(email) > MAX_EMAIL_LENGTH:
                raise ValidationError("too long")
        except ValidationError:
            problems.append(f"{email!r} is not an e-mail address")
    lowered = [email.lower() for email in emails]
    repeated = sorted({email for email in lowered if lowered.count(email) > 1})
    if repeated:
        problems.append(f"{', '.join(repeated)} appear more than once")
    if len(emails) > MAX_EMAILS:
        problems.append(f"at most {MAX_EMAILS} addresses")
    if problems:
        errors["emails"] = problems
    return emails


def _store(uow: UnitOfWork) -> None:
    """Commit; two first-time saves of the same settings at once: the second is told."""
    try:
        uow.session.flush()
    except IntegrityError as exc:
        raise Conflict("these renewal-notice settings were changed at the same moment by "
                       "someone else; read them again and retry",
                       code="concurrent_change") from exc
    uow.commit()


def _refuse_if_any(errors: dict[str, list[str]]) -> None:
    if errors:
        detail = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
        raise Unprocessable(detail, code="validation_failed", errors=errors)


def _listing(days: Iterable[int]) -> str:
    values = [str(day) for day in days]
    if not values:
        return "no day"
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _describe(days: Sequence[int] | None, emails: Sequence[str] | None) -> str:
    parts = []
    if days is not None:
        parts.append(f"{_listing(days)} days before expiry")
    if emails is not None:
        parts.append(f"extra addresses {', '.join(emails)}" if emails else "no extra address")
    return "; ".join(parts) or "as the account's defaults"


# --- the HTTP side -----------------------------------------------------------------------


def _person(context: Context) -> str:
    return context.actor.user_name or context.actor.system or "someone"


def _require_admin(principal: Principal) -> None:
    if principal.role != "admin":
        raise Forbidden("only administrators of the account set its renewal-notice defaults; "
                        "unit administrators set notices per order "
                        "(PUT /orders/{id}/renewal-notices)",
                        missing_permission="renewal_settings")


def get_account_settings(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
    """The account's defaults (the built-in ones until an administrator sets them)."""
    _require_admin(principal)
    settings = uow.session.get(RenewalSettings, principal.account_id)
    days, emails = account_defaults(settings)
    return {"days_before": list(days), "emails": list(emails),
            "updated_at": settings.updated_at if settings else None,
            "updated_by": ({"id": settings.updated_by_id, "name": settings.updated_by_name}
                           if settings else None)}


def set_account_settings(uow: UnitOfWork, principal: Principal, context: Context,
                         days_before: Sequence[int], emails: Sequence[str]) -> dict[str, Any]:
    """Replace the account's defaults; orders without an override follow at once."""
    _require_admin(principal)
    assert principal.account_id is not None
    errors: dict[str, list[str]] = {}
    days = check_days(days_before, errors)
    addresses = check_emails(emails, errors)
    _refuse_if_any(errors)
    settings = uow.session.get(RenewalSettings, principal.account_id, with_for_update=True)
    if settings is None:
        settings = RenewalSettings(account_id=principal.account_id)
        uow.session.add(settings)
    elif settings.days_before == days and settings.emails == addresses:
        return get_account_settings(uow, principal)  # nothing changes, nothing to record
    settings.days_before, settings.emails = days, addresses
    settings.updated_at = utcnow()
    settings.updated_by_id, settings.updated_by_name = principal.user_id, principal.name
    uow.event("orders.renewal.settings_changed", context,
              subject=("account", principal.account_id),
              summary=f"{_person(context)} set the account's renewal notices to "
                      f"{_describe(days, addresses)}",
              data={"scope": "account", "order_id": None, "days_before": days,
                    "emails": addresses, "enabled": True})
    _store(uow)
    return get_account_settings(uow, principal)


def can_manage(principal: Principal, order: Order) -> bool:
    """roles.md: admins for every order of the account, unit administrators for the
    orders of their units (the order's unit, as for approvals)."""
    if not access.can_see(principal, order):
        return False
    return principal.role == "admin" or (principal.role == "unit_admin"
                                         and principal.in_unit(order.unit_id))


def _managed_order(uow: UnitOfWork, principal: Principal, order_id: str) -> Order:
    order = uow.session.get(Order, order_id)
    if order is None or not access.can_see(principal, order):
        raise NotFound("no such order")
    if not can_manage(principal, order):
        raise Forbidden("only an administrator of the account or of the order's business unit "
                        "sets its renewal notices", missing_permission="renewal_settings")
    return order


def order_recipients(uow: UnitOfWork, order: Order) -> tuple[str, ...]:
    """Who hears about an order's certificate: its requester and assignees, and the
    renewal-notice addresses of the order (or the account)."""
    return _recipients(uow, order, _plan_of(uow, order))


def _plan_of(uow: UnitOfWork, order: Order) -> NoticePlan:
    return plan_for(uow.session.get(RenewalSettings, order.account_id),
                    uow.session.get(OrderRenewalSettings, order.id))


def get_order_settings(uow: UnitOfWork, principal: Principal, order_id: str) -> dict[str, Any]:
    order = _managed_order(uow, principal, order_id)
    return _plan_of(uow, order).as_dict(order.id)


def set_order_settings(uow: UnitOfWork, principal: Principal, context: Context, order_id: str,
                       *, days_before: Sequence[int] | None, emails: Sequence[str] | None,
                       enabled: bool) -> dict[str, Any]:
    """Replace the order's override (a missing or null list follows the account's)."""
    order = _managed_order(uow, principal, order_id)
    errors: dict[str, list[str]] = {}
    days = check_days(days_before, errors) if days_before is not None else None
    addresses = check_emails(emails, errors) if emails is not None else None
    _refuse_if_any(errors)
    override = uow.session.get(OrderRenewalSettings, order.id, with_for_update=True)
    unchanged = (override is not None and override.enabled == enabled
                 and override.days_before == days and override.emails == addresses)
    if not unchanged:
        if override is None:
            override = OrderRenewalSettings(order_id=order.id)
            uow.session.add(override)
        override.enabled, override.days_before, override.emails = enabled, days, addresses
        override.updated_at = utcnow()
        override.updated_by_id, override.updated_by_name = principal.user_id, principal.name
        what = _describe(days, addresses) if enabled else "off"
        uow.event("orders.renewal.settings_changed", context.with_account(order.account_id),
                  subject=("order", order.id),
                  summary=f"{_person(context)} set the renewal notices of {order.describe()} "
                          f"to {what}",
                  data={"scope": "order", "order_id": order.id, "days_before": days,
                        "emails": addresses, "enabled": enabled},
                  correlation_id=order.id)
        _store(uow)
    return _plan_of(uow, order).as_dict(order.id)


# --- the job ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NoticeSettings:
    check_seconds: float = cfg.setting("CHANCERY_RENEWAL_CHECK_SECONDS", 3600.0,
                                       cfg.parse_positive_float)
    claim_timeout_seconds: float = cfg.setting("CHANCERY_RENEWAL_CLAIM_TIMEOUT_SECONDS", 900.0,
                                               cfg.parse_positive_float)


@dataclasses.dataclass
class RunReport:
    """What one run did (for logs and tests): notices as ``(order_id, days_before)``."""

    sent: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    without_recipients: list[tuple[str, int]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class _Candidate:
    order: Order
    certificate: Certificate
    days_before: int
    recipients: tuple[str, ...]


def _recipients(uow: UnitOfWork, order: Order, plan: NoticePlan) -> tuple[str, ...]:
    """The requester and the assignees (active users of the account, from identity's
    events), then the plan's extra addresses; each once."""
    user_ids = [order.requester_id, *order.assignee_ids]
    users = uow.session.execute(select(User).where(User.id.in_(user_ids),
                                                   User.account_id == order.account_id,
                                                   User.active.is_(True))).scalars()
    by_id = {user.id: user.email for user in users}
    return recipients([by_id.get(user_id) for user_id in user_ids], plan.emails)


class RenewalNotices:
    """Finds the notices due and sends each once; ``run(now)`` is one pass."""

    def __init__(self, uow_factory: Callable[[], UnitOfWork], mailer: Mailer | None, *,
                 interval: timedelta = timedelta(hours=1),
                 claim_timeout: timedelta = timedelta(minutes=15),
                 batch_size: int = 200):
        self.uow_factory = uow_factory
        self.mailer = mailer
        self.interval = interval
        self.claim_timeout = claim_timeout
        self.batch_size = batch_size

    @classmethod
    def from_environment(cls, uow_factory: Callable[[], UnitOfWork],
                         environ: Mapping[str, str]) -> RenewalNotices:
        """Settings validated at start-up (a bad value stops the process at once)."""
        smtp = cfg.load(SmtpSettings, environ)
        smtp.check()
        settings = cfg.load(NoticeSettings, environ)
        return cls(uow_factory, SmtpMailer(smtp) if smtp.enabled else None,
                   interval=timedelta(seconds=settings.check_seconds),
                   claim_timeout=timedelta(seconds=settings.claim_timeout_seconds))

    # --- the background job ---------------------------------------------------------------

    def job(self, stop: threading.Event) -> None:
        """Run a pass now and then every ``interval`` until ``stop`` is set."""
        if self.mailer is None:
            log.info("renewal notices are disabled: CHANCERY_SMTP_HOST is not set")
            return
        while True:
            try:
                report = self.run(utcnow())
                if report.sent or report.failed:
                    log.info("renewal notices: %d sent, %d failed", len(report.sent),
                             len(report.failed))
            except Exception:  # noqa: BLE001 - keep the job alive; the next pass retries
                log.exception("the renewal-notice pass failed")
            if stop.wait(self.interval.total_seconds()):
                return

    # --- one pass -------------------------------------------------------------------------

    def run(self, now: datetime) -> RunReport:
        """Send every notice due at ``now`` that no worker has sent or is sending."""
        report = RunReport()
        if self.mailer is None:
            return report
        worker = f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        for candidate in self._due(now, report):
            self._notify(candidate, now, worker, report)
        return report

    def _horizon(self, uow: UnitOfWork) -> timedelta:
        """The furthest notice day of any setting: certificates further out wait."""
        furthest = max(DEFAULT_DAYS_BEFORE)
        for table in (RenewalSettings, OrderRenewalSettings):
            for days in uow.session.execute(select(table.days_before)).scalars():
                furthest = max([furthest, *(days or [])])
        return min(furthest, MAX_DAYS) * DAY

    def _due(self, now: datetime, report: RunReport) -> Iterable[_Candidate]:
        """Issued orders' current certificates with a notice due and not yet claimed,
        read in batches (each in a short transaction)."""
        after: tuple[datetime, str] | None = None
        with self.uow_factory() as uow:
            horizon = self._horizon(uow)
        newest = (select(Certificate.id).where(Certificate.order_id == Order.id)
                  .order_by(Certificate.created_at.desc(), Certificate.id.desc()).limit(1)
                  .correlate(Order).scalar_subquery())
        while True:
            query = (select(Order, Certificate).join(Certificate, Certificate.id == newest)
                     .where(Order.status == ISSUED, Certificate.status == "issued",
                            Certificate.not_after > now, Certificate.not_after <= now + horizon)
                     .order_by(Certificate.not_after, Certificate.id).limit(self.batch_size)
                     .options(raiseload(Order.history), raiseload(Order.issuances)))
            if after is not None:
                query = query.where(or_(Certificate.not_after > after[0],
                                        and_(Certificate.not_after == after[0],
                                             Certificate.id > after[1])))
            found: list[_Candidate] = []
            with self.uow_factory() as uow:
                rows = list(uow.session.execute(query).all())
                serials = [certificate.serial for _, certificate in rows]
                claims = {(claim.serial, claim.days_before): claim for claim in
                          uow.session.execute(select(RenewalNoticeSent).where(
                              RenewalNoticeSent.serial.in_(serials))).scalars()}
                accounts = {settings.account_id: settings for settings in uow.session.execute(
                    select(RenewalSettings).where(RenewalSettings.account_id.in_(
                        {order.account_id for order, _ in rows}))).scalars()}
                overrides = {override.order_id: override for override in uow.session.execute(
                    select(OrderRenewalSettings).where(OrderRenewalSettings.order_id.in_(
                        [order.id for order, _ in rows]))).scalars()}
                for order, certificate in rows:
                    plan = plan_for(accounts.get(order.account_id), overrides.get(order.id))
                    days = due_notice(plan, certificate.not_before, certificate.not_after, now)
                    if days is None or not self._claimable(claims.get((certificate.serial,
                                                                        days)), now):
                        continue
                    people = _recipients(uow, order, plan)
                    if not people:
                        log.warning("the %d-day renewal notice of order %s has nobody to go to "
                                    "(no active requester, no extra address)", days, order.id)
                        report.without_recipients.append((order.id, days))
                        continue
                    found.append(_Candidate(order, certificate, days, people))
            yield from found
            if len(rows) < self.batch_size:
                return
            after = (rows[-1][1].not_after, rows[-1][1].id)

    def _claimable(self, claim: RenewalNoticeSent | None, now: datetime) -> bool:
        return claim is None or (claim.sent_at is None
                                 and claim.claimed_at <= now - self.claim_timeout)

    def _claim(self, candidate: _Candidate, now: datetime, worker: str) -> str | None:
        """Take the notice for this worker, in a transaction of its own; None when another
        worker has it (its insert won, or its claim is recent)."""
        serial, days = candidate.certificate.serial, candidate.days_before
        with self.uow_factory() as uow:
            existing = uow.session.execute(select(RenewalNoticeSent).where(
                RenewalNoticeSent.serial == serial,
                RenewalNoticeSent.days_before == days)).scalar_one_or_none()
            if existing is None:
                claim_id = new_id()
                uow.session.add(RenewalNoticeSent(
                    id=claim_id, serial=serial, days_before=days,
                    order_id=candidate.order.id, claimed_at=now, claimed_by=worker))
                try:
                    uow.commit()
                except IntegrityError:  # a concurrent worker inserted it first
                    return None
                return claim_id
            if not self._claimable(existing, now):
                return None
            # Take over an abandoned claim: only if nobody else took it over meanwhile.
            taken = uow.session.execute(
                update(RenewalNoticeSent)
                .where(RenewalNoticeSent.id == existing.id, RenewalNoticeSent.sent_at.is_(None),
                       RenewalNoticeSent.claimed_by == existing.claimed_by,
                       RenewalNoticeSent.claimed_at == existing.claimed_at)
                .values(claimed_at=now, claimed_by=worker)
                .execution_options(synchronize_session=False))
            if taken.rowcount != 1:
                return None
            uow.commit()
            log.warning("renewal notice %s of certificate %s: taking over the claim of %s, "
                        "abandoned since %s", days, serial, existing.claimed_by,
                        isoformat(existing.claimed_at))
            return existing.id

    def _release(self, claim_id: str, worker: str) -> None:
        with self.uow_factory() as uow:
            uow.session.execute(delete(RenewalNoticeSent).where(
                RenewalNoticeSent.id == claim_id, RenewalNoticeSent.claimed_by == worker,
                RenewalNoticeSent.sent_at.is_(None)))
            uow.commit()

    def _notify(self, candidate: _Candidate, now: datetime, worker: str,
                report: RunReport) -> None:
        order, days = candidate.order, candidate.days_before
        claim_id = self._claim(candidate, now, worker)
        if claim_id is None:
            return
        assert self.mailer is not None
        try:
            delivered = self.mailer.send(notice_mail(candidate, now))
        except MailNotSent as exc:
            log.warning("the %d-day renewal notice of order %s was not sent (%s); the next "
                        "pass retries", days, order.id, exc)
            self._release(claim_id, worker)
            report.failed.append((order.id, days))
            return
        with self.uow_factory() as uow:
            marked = uow.session.execute(
                update(RenewalNoticeSent)
                .where(RenewalNoticeSent.id == claim_id, RenewalNoticeSent.claimed_by == worker,
                       RenewalNoticeSent.sent_at.is_(None))
                .values(sent_at=now, recipients=delivered)
                .execution_options(synchronize_session=False))
            if marked.rowcount != 1:
                log.error("the %d-day renewal notice of order %s was sent, but another worker "
                          "took over its claim meanwhile (CHANCERY_RENEWAL_CLAIM_TIMEOUT_SECONDS "
                          "is shorter than a send)", days, order.id)
                return
            left = days_left(candidate.certificate.not_after, now)
            uow.event(
                "orders.renewal.notice_sent",
                Context(actor=Actor.service("orders"), account_id=order.account_id),
                subject=("order", order.id),
                summary=f"orders sent the {days}-day renewal notice of {order.describe()} "
                        f"(expires {candidate.certificate.not_after.date().isoformat()}, in "
                        f"{left} {'day' if left == 1 else 'days'}) to {', '.join(delivered)}",
                data={"order_id": order.id, "days_left": left, "recipients": delivered,
                      "serial": candidate.certificate.serial, "days_before": days},
                correlation_id=order.id)
            uow.commit()
        report.sent.append((order.id, days))


def notice_mail(candidate: _Candidate, now: datetime) -> Mail:
    """The e-mail: what expires when, which order it is, and what to do about it."""
    order, certificate = candidate.order, candidate.certificate
    left = days_left(certificate.not_after, now)
    in_days = f"{left} {'day' if left == 1 else 'days'}"
    expires = certificate.not_after.strftime("%Y-%m-%d %H:%M UTC")
    unit = order.unit
    lines = [
        f"The certificate for {order.common_name} expires on {expires}, in {in_days}.",
        "",
        f"Order:          {order.id}",
        f"Product:        {order.product.name} ({order.product_code})",
        f"Names:          {', '.join(order.sans)}",
        f"Serial number:  {certificate.serial}",
        f"Business unit:  {(unit['name'] or unit['id']) if unit else '-'}",
        f"Requested by:   {order.requester_name}",
        "",
        *_what_to_do(order, certificate),
        "",
        "You receive this notice as the requester or an assignee of the certificate, or "
        "because your account lists you for renewal notices. Administrators change the "
        f"notice days and addresses with PUT /api/orders/v1/orders/{order.id}/renewal-notices.",
    ]
    return Mail(to=candidate.recipients,
                subject=f"Renewal notice: the certificate for {order.common_name} expires in "
                        f"{in_days} ({certificate.not_after.date().isoformat()})",
                body="\n".join(lines) + "\n")


def _what_to_do(order: Order, certificate: Certificate) -> list[str]:
    """A plan's certificate is replaced at no charge before it expires; anything else is
    renewed by a new order."""
    plan_ends_at = order.plan_ends_at
    if plan_ends_at is not None and plan_ends_at > certificate.not_after + DAY:
        return [f"This certificate belongs to a plan that runs until "
                f"{plan_ends_at.date().isoformat()}: a replacement is issued automatically, "
                "at no charge, before it expires. Download the new certificate (GET "
                f"/api/orders/v1/orders/{order.id}/certificate) once it is issued and install "
                "it in place of this one."]
    return ["Renew it before then: request a new certificate for the same names (POST "
            f"/api/orders/v1/orders/{order.id}/renew, or a new order) and install it in place "
            "of this one."]
