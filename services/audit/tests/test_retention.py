"""Retention counts from the end of what an entry concerns (BR 5.4.3): a subscriber
certificate's expiry or revocation, the certificates of an order, a CA certificate's
expiry; from the entry's own time only for entries about none of these. The clock is
the purge's ``now``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from chancery_audit import cli
from chancery_audit.model import (
    AuditCertificate,
    AuditCertificateName,
    AuditEntry,
    AuditEntryConcern,
    AuditIssuer,
    AuditOrder,
    log_key,
)
from chancery_audit.retention import MINIMUM_RETENTION, purge
from chancery_audit.verify import verify_logs
from chancery_shared import migrations
from chancery_shared.messaging.envelope import Actor, Context, isoformat
from sqlalchemy import select

from .conftest import ACCOUNT

KEY = log_key(ACCOUNT)
NOW = datetime(2026, 11, 26, tzinfo=UTC)  # before the purge's own entries (real time)
DAY = timedelta(days=1)
BEFORE_CONCERNS = "e5b2a8c41f07"  # the revision before audit_entry_concerns
OPERATOR = Context(actor=Actor(user_id="op-1", user_name="Olga Operator"), account_id=None)


def ago(days: float, now: datetime = NOW) -> datetime:
    return now - timedelta(days=days)


class Messages:
    """The messages of an order's life, and a few others, as the bus would bring them."""

    def __init__(self, record):
        self.record = record

    def order_submitted(self, order: str, at: datetime) -> None:
        self.record("orders.order.submitted", subject=("order", order), at=at, data={
            "order_id": order, "status": "pending_approval", "product": "ssl_basic",
            "term_years": 1, "server_type": None, "common_name": "www.example.com",
            "sans": ["www.example.com"], "unit_id": None, "requester_id": "user-bob",
            "price_cents": 12900})

    def order_rejected(self, order: str, at: datetime) -> None:
        self.record("orders.order.rejected", subject=("order", order), at=at,
                    data={"order_id": order, "reason": "not ours"})

    def issued(self, order: str, serial: str, at: datetime, not_after: datetime,
               sans: tuple[str, ...] = ("www.example.com",)) -> None:
        self.record("ca_signer.certificate.issued", subject=("certificate", serial), at=at,
                    system="ca_signer", data={
                        "order_id": order, "issuance_id": str(uuid.uuid4()), "serial": serial,
                        "issuer_id": "ica-1", "not_before": isoformat(at),
                        "not_after": isoformat(not_after), "sans": list(sans),
                        "certificate_pem": "-----BEGIN CERTIFICATE-----\n...",
                        "chain_pem": "-----BEGIN CERTIFICATE-----\n..."})

    def revoked(self, serial: str, at: datetime) -> None:
        self.record("ca_signer.certificate.revoked", subject=("certificate", serial), at=at,
                    system="ca_signer", data={"serial": serial, "reason": "superseded",
                                              "revoked_at": isoformat(at)})

    def revoke_asked(self, serial: str, at: datetime) -> None:
        self.record("ca_signer.certificate.revoke", subject=("certificate", serial), at=at,
                    data={"serial": serial, "reason": "superseded"})

    def domain_validated(self, name: str, at: datetime) -> None:
        self.record("orders.domain.validated", subject=("domain", "dom-" + name), at=at,
                    data={"domain_id": "dom-" + name, "name": name, "method": "dns-txt",
                          "validated_until": isoformat(at + 200 * DAY),
                          "validation": "dns-txt", "note": None})

    def deposit(self, at: datetime) -> None:
        self.record("ledger.deposit.settled", subject=("deposit", "dep-1"), at=at,
                    data={"deposit_id": "dep-1", "method": "card", "amount_cents": 500})

    def issuer_created(self, issuer: str, at: datetime, not_after: datetime) -> None:
        self.record("ca_signer.issuer.created", subject=("issuer", issuer), at=at,
                    account_id=None, system="ca_signer", data={
                        "issuer_id": issuer, "kind": "issuing", "parent_id": "root-1",
                        "subject": "CN=Example TLS Issuing CA,O=Example,C=US",
                        "key_type": "ec-p256", "key_backend": "software",
                        "not_before": isoformat(at), "not_after": isoformat(not_after)})

    def crl_published(self, issuer: str, at: datetime) -> None:
        self.record("ca_signer.crl.published", subject=("issuer", issuer), at=at,
                    account_id=None, system="ca_signer",
                    data={"issuer_id": issuer, "number": 3, "entries": 0})


@pytest.fixture
def bus(record) -> Messages:
    return Messages(record)


def run_purge(audit, now: datetime = NOW, before: datetime | None = None):
    """Purge at ``now`` everything whose retention ended (``before``: two years ago)."""
    done = purge(audit.uow, audit.signer, OPERATOR, before=before or now - MINIMUM_RETENTION,
                 now=now)
    return {p.log_key: p for p in done}


def actions(audit, key: str = KEY) -> list[str]:
    with audit.uow() as uow:
        return list(uow.session.execute(select(AuditEntry.action).where(
            AuditEntry.log_key == key).order_by(AuditEntry.sequence)).scalars())


def verifies(audit) -> bool:
    with audit.uow() as uow:
        results = verify_logs(uow.session, every=True)
    assert results and all(r.ok for r in results), [r.first_bad for r in results]
    return True


# --- certificates --------------------------------------------------------------------


def test_a_three_year_old_entry_about_a_certificate_still_valid_is_kept(bus, audit):
    order, serial = str(uuid.uuid4()), "0a01"
    bus.order_submitted(order, ago(3 * 365))
    bus.issued(order, serial, ago(3 * 365), not_after=NOW + 30 * DAY)

    done = run_purge(audit)

    assert actions(audit) == ["orders.order.submitted", "ca_signer.certificate.issued"]
    assert (done[KEY].entries, dict(done[KEY].kept)) == (0, {"certificate": 2})
    assert verifies(audit)


def test_it_goes_two_years_after_the_certificate_expired_and_not_a_day_sooner(bus, audit):
    order, serial = str(uuid.uuid4()), "0a02"
    expiry = ago(3 * 365) + 200 * DAY
    bus.order_submitted(order, ago(3 * 365))
    bus.issued(order, serial, ago(3 * 365), not_after=expiry)
    bus.deposit(ago(5))  # something young, so the log is not emptied

    a_day_short = run_purge(audit, now=expiry + MINIMUM_RETENTION - DAY,
                            before=expiry - DAY)
    assert a_day_short[KEY].entries == 0
    assert actions(audit)[:2] == ["orders.order.submitted", "ca_signer.certificate.issued"]

    done = run_purge(audit, now=expiry + MINIMUM_RETENTION + DAY)

    assert done[KEY].entries == 2 and not done[KEY].kept
    assert actions(audit) == ["ledger.deposit.settled", "audit.log.purged"]
    assert verifies(audit)


def test_a_revoked_certificate_counts_from_its_revocation(bus, audit):
    order, revoked, valid = str(uuid.uuid4()), "0a03", "0a04"
    bus.issued(order, revoked, ago(1000), not_after=NOW + 100 * DAY)
    bus.revoked(revoked, ago(800))
    other = str(uuid.uuid4())
    bus.issued(other, valid, ago(990), not_after=NOW + 100 * DAY)  # same expiry, not revoked

    done = run_purge(audit)

    assert done[KEY].entries == 2  # the first certificate's issuance and revocation
    assert dict(done[KEY].kept) == {"certificate": 1}
    assert actions(audit) == ["ca_signer.certificate.issued", "audit.log.purged"]
    with audit.uow() as uow:
        assert uow.session.get(AuditCertificate, revoked).revoked_at == ago(800)
    assert verifies(audit)


def test_an_entry_about_an_order_waits_for_every_certificate_of_the_order(bus, audit):
    """A reissue is a new certificate of the same order: the order's entries wait for
    it, while an entry about the first certificate alone does not."""
    order, first, reissued = str(uuid.uuid4()), "0a05", "0a06"
    bus.order_submitted(order, ago(1200))
    bus.issued(order, first, ago(1200), not_after=ago(1000))
    bus.revoke_asked(first, ago(1100))  # about the first certificate only
    bus.issued(order, reissued, ago(1010), not_after=NOW + 10 * DAY)

    done = run_purge(audit)

    # the submission and the first issuance (which names the order) wait for the
    # reissued certificate; the revocation request may go, but sits behind them
    assert done[KEY].entries == 0
    assert dict(done[KEY].kept) == {"certificate": 3, "chain": 1}


def test_an_entry_about_a_certificate_audit_never_saw_issued_is_kept(bus, audit):
    bus.revoke_asked("0bad", ago(1000))

    done = run_purge(audit)

    assert (done[KEY].entries, dict(done[KEY].kept)) == (0, {"unknown": 1})


def test_a_domain_s_validation_waits_for_the_certificates_that_may_have_relied_on_it(
        bus, audit):
    bus.domain_validated("example.com", ago(1000))
    bus.domain_validated("example.org", ago(999))   # no certificate: its own time
    bus.issued(str(uuid.uuid4()), "0a08", ago(990), not_after=NOW + 50 * DAY,
               sans=("*.shop.EXAMPLE.com",))
    bus.domain_validated("ample.com", ago(980))     # not a parent of shop.example.com

    done = run_purge(audit)

    assert done[KEY].entries == 0
    assert dict(done[KEY].kept) == {"domain": 1, "chain": 2, "certificate": 1}

    bus.revoked("0a08", ago(900))
    done = run_purge(audit)
    assert done[KEY].entries == 5


# --- orders without a certificate, and entries about nothing of the kind -------------


def test_an_order_with_no_certificate_yet_is_kept(bus, audit):
    bus.order_submitted(str(uuid.uuid4()), ago(1000))

    done = run_purge(audit)

    assert (done[KEY].entries, dict(done[KEY].kept)) == (0, {"order_open": 1})


def test_an_order_that_ended_without_a_certificate_counts_from_its_end(bus, audit):
    old, recent = str(uuid.uuid4()), str(uuid.uuid4())
    bus.order_submitted(old, ago(1000))
    bus.order_rejected(old, ago(900))
    bus.order_submitted(recent, ago(1000))
    bus.order_rejected(recent, ago(600))  # ended less than two years ago

    done = run_purge(audit)

    assert done[KEY].entries == 2
    assert dict(done[KEY].kept) == {"order_ended": 1}  # the recent order's submission
    assert actions(audit) == ["orders.order.submitted", "orders.order.rejected",
                              "audit.log.purged"]
    with audit.uow() as uow:
        assert uow.session.get(AuditOrder, recent).ended_at == ago(600)


def test_an_entry_about_no_certificate_follows_its_own_time(bus, audit):
    bus.deposit(ago(731))
    bus.deposit(ago(729))

    done = run_purge(audit)

    assert (done[KEY].entries, dict(done[KEY].kept)) == (1, {})
    assert actions(audit) == ["ledger.deposit.settled", "audit.log.purged"]
    assert verifies(audit)


def test_only_a_prefix_goes_and_the_chain_still_verifies(bus, audit):
    order = str(uuid.uuid4())
    bus.deposit(ago(1000))
    bus.order_submitted(order, ago(990))                     # open: holds the rest
    bus.deposit(ago(980))
    bus.deposit(ago(970))
    audit.sign_checkpoints()

    done = run_purge(audit)

    assert done[KEY].entries == 1
    assert dict(done[KEY].kept) == {"order_open": 1, "chain": 2}
    assert actions(audit) == ["orders.order.submitted", "ledger.deposit.settled",
                              "ledger.deposit.settled", "audit.log.purged"]
    assert verifies(audit)

    bus.order_rejected(order, ago(800))  # recorded late: the order is over after all
    done = run_purge(audit)
    assert done[KEY].entries == 3
    assert verifies(audit)


# --- CAs -----------------------------------------------------------------------------


def test_a_ca_s_entries_wait_for_its_certificate_to_expire(bus, audit):
    expiry = ago(800)
    bus.issuer_created("ica-old", ago(3000), not_after=expiry)
    bus.crl_published("ica-old", ago(900))
    bus.issuer_created("ica-new", ago(850), not_after=NOW + 1000 * DAY)
    bus.crl_published("ica-new", ago(849))

    done = run_purge(audit)

    platform = done[log_key(None)]
    assert platform.entries == 2 and dict(platform.kept) == {"issuer": 2}
    with audit.uow() as uow:
        assert uow.session.get(AuditIssuer, "ica-old").not_after == expiry


# --- the command ---------------------------------------------------------------------


def test_the_command_says_what_it_kept_and_why(bus, audit, monkeypatch, capsys):
    bus.order_submitted(str(uuid.uuid4()), ago(1000))
    bus.deposit(ago(990))
    monkeypatch.setattr(cli, "_service", lambda: audit)
    monkeypatch.setattr(cli, "utcnow", lambda: NOW)

    assert cli.main(["purge", "--before", f"{ago(740):%Y-%m-%d}",
                     "--operator", "Olga Operator"]) == 0

    out = capsys.readouterr().out
    assert f"{KEY}: purged 0 entries" in out and "kept 2 recorded before" in out
    assert "kept 1 about an order with no certificate yet" in out
    assert "kept 1 after a kept entry in the chain" in out


def test_the_purge_entry_says_what_it_kept(bus, audit):
    bus.deposit(ago(1000))
    bus.issued(str(uuid.uuid4()), "0a07", ago(995), not_after=NOW + DAY)

    run_purge(audit)

    with audit.uow() as uow:
        description = uow.session.execute(select(AuditEntry.description).where(
            AuditEntry.action == "audit.log.purged")).scalar_one()
    assert "purged 1 audit entries" in description
    assert "kept 1 older: 1 about a certificate still valid" in description


# --- what is learnt, and the migration that learnt it from older entries -------------


def facts(audit) -> tuple[set, set, set, set, set]:
    with audit.uow() as uow:
        session = uow.session
        return (
            {(c.entry_id, c.kind, c.ref) for c in session.execute(
                select(AuditEntryConcern)).scalars()},
            {(c.serial, c.order_id, c.account_id, c.not_after, c.revoked_at)
             for c in session.execute(select(AuditCertificate)).scalars()},
            {(o.order_id, o.ended_at, o.ended_as)
             for o in session.execute(select(AuditOrder)).scalars()},
            {(i.issuer_id, i.not_after) for i in session.execute(select(AuditIssuer)).scalars()},
            set(session.execute(select(AuditCertificateName.serial,
                                       AuditCertificateName.name)).all()))


@pytest.fixture
def a_history(bus) -> Iterator[None]:
    order, rejected = str(uuid.uuid4()), str(uuid.uuid4())
    bus.order_submitted(order, ago(400))
    bus.domain_validated("example.net", ago(401))
    bus.issued(order, "0b01", ago(399), not_after=ago(200), sans=("example.net", "*.Example.net"))
    bus.revoked("0b01", ago(300))
    bus.order_submitted(rejected, ago(100))
    bus.order_rejected(rejected, ago(99))
    bus.issuer_created("ica-9", ago(500), not_after=NOW + 900 * DAY)
    bus.deposit(ago(50))
    yield


def test_recording_learns_what_each_entry_concerns(a_history, audit):
    concerns, certificates, orders, issuers, names = facts(audit)

    assert {(kind, ref) for _, kind, ref in concerns} >= {
        ("certificate", "0b01"), ("issuer", "ica-9"), ("domain", "example.net")}
    assert len({entry for entry, *_ in concerns}) == 7  # all but the deposit
    assert names == {("0b01", "example.net")}
    [certificate] = certificates
    assert certificate[0] == "0b01" and certificate[3:] == (ago(200), ago(300))
    assert [o[2] for o in orders] == ["orders.order.rejected"]
    assert issuers == {("ica-9", NOW + 900 * DAY)}


def test_the_migration_learns_from_the_entries_already_recorded(a_history, audit):
    before = facts(audit)
    assert all(before)

    migrations.downgrade(audit.migrations_dir, audit.engine, BEFORE_CONCERNS)
    migrations.upgrade(audit.migrations_dir, audit.engine)

    assert facts(audit) == before
