"""The hash chain, checkpoints and retention: tampering is found, and named.

Every tampering test edits the database directly, as someone with access to it would,
then expects verification to fail at the right entry with the right finding.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chancery_audit import chain, cli
from chancery_audit.model import AuditCheckpoint, AuditEntry, AuditLog, log_key
from chancery_audit.retention import purge
from chancery_audit.verify import verify_logs
from chancery_shared.messaging.consumer import MessageConsumer
from chancery_shared.messaging.envelope import Actor, Context
from sqlalchemy import select, text

from .conftest import ACCOUNT, AUDIT_QUEUE, OTHER_ACCOUNT

KEY = log_key(ACCOUNT)
ENTRIES = 8


def check(audit, account_id: str | None = ACCOUNT):
    with audit.uow() as uow:
        [result] = verify_logs(uow.session, account_id)
    return result


def sql(audit, statement: str, **params) -> None:
    with audit.engine.begin() as connection:
        connection.execute(text(statement), params)


@pytest.fixture
def logged(record, audit):
    """An account log of ENTRIES entries, with a signed checkpoint of its head."""
    for n in range(ENTRIES):
        record(summary=f"Alice Ng approved order number {n + 1}")
    audit.sign_checkpoints()
    return audit


def test_an_untouched_log_verifies_from_genesis_to_its_head(logged):
    result = check(logged)

    assert result.ok, result.first_bad
    assert result.entries_checked == ENTRIES
    with logged.uow() as uow:
        audit_log = uow.session.get(AuditLog, KEY)
        entries = list(uow.session.execute(select(AuditEntry).where(AuditEntry.log_key == KEY)
                                           .order_by(AuditEntry.sequence)).scalars())
        assert entries[0].prev_hash == chain.genesis(KEY)
        assert [e.prev_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]
        assert audit_log.head_hash == entries[-1].hash == result.head_hash


TAMPERING = {
    "an edited description": (
        "UPDATE audit_entries SET description = 'nothing happened' "
        "WHERE log_key = :key AND sequence = 4", 4, "modified"),
    "an edited IP address": (
        "UPDATE audit_entries SET ip = '198.51.100.9' WHERE log_key = :key AND sequence = 2",
        2, "modified"),
    "an edited time": (
        "UPDATE audit_entries SET at = '2020-01-01 00:00:00.000000' "
        "WHERE log_key = :key AND sequence = 6", 6, "modified"),
    "a deleted entry": (
        "DELETE FROM audit_entries WHERE log_key = :key AND sequence = 5", 5, "missing"),
    "a deleted last entry": (
        f"DELETE FROM audit_entries WHERE log_key = :key AND sequence = {ENTRIES}",
        ENTRIES, "truncated"),
    "two entries swapped": (
        "UPDATE audit_entries SET sequence = CASE sequence WHEN 3 THEN 4 ELSE 3 END "
        "WHERE log_key = :key AND sequence IN (3, 4)", 3, "out_of_order"),
    "a deleted entry with the later ones renumbered": (
        "DELETE FROM audit_entries WHERE log_key = :key AND sequence = 3; "
        "UPDATE audit_entries SET sequence = sequence - 1 WHERE log_key = :key "
        "AND sequence > 3", 3, "out_of_order"),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_tampering_is_found_at_the_entry_it_touched(logged, case):
    statements, sequence, problem = TAMPERING[case]
    for statement in statements.split("; "):
        if "sequence = CASE" in statement:  # two steps: the (log, sequence) pair is unique
            sql(logged, "UPDATE audit_entries SET sequence = -3 WHERE log_key = :key "
                        "AND sequence = 3", key=KEY)
            sql(logged, "UPDATE audit_entries SET sequence = 3 WHERE log_key = :key "
                        "AND sequence = 4", key=KEY)
            sql(logged, "UPDATE audit_entries SET sequence = 4 WHERE log_key = :key "
                        "AND sequence = -3", key=KEY)
        elif "sequence = sequence - 1" in statement:
            for n in range(4, ENTRIES + 1):
                sql(logged, "UPDATE audit_entries SET sequence = :new WHERE log_key = :key "
                            "AND sequence = :old", key=KEY, new=n - 1, old=n)
        else:
            sql(logged, statement, key=KEY)

    result = check(logged)

    assert not result.ok
    assert (result.first_bad.sequence, result.first_bad.problem) == (sequence, problem), \
        result.first_bad


def test_an_inserted_entry_after_the_head_is_found(logged):
    with logged.uow() as uow:
        last = uow.session.execute(select(AuditEntry).where(
            AuditEntry.log_key == KEY, AuditEntry.sequence == ENTRIES)).scalar_one()
        forged = AuditEntry(**{c.name: getattr(last, c.name) for c in AuditEntry.__table__.c
                               if c.name not in ("id", "event_id", "sequence")},
                            id="forged-entry", event_id="forged-event", sequence=ENTRIES + 1)
        chain.seal(forged, last.hash, [])
        uow.session.add(forged)
        uow.commit()

    result = check(logged)

    assert (result.first_bad.sequence, result.first_bad.problem) == (ENTRIES + 1, "inserted")


def test_an_edit_whose_hash_was_recomputed_breaks_the_link_to_the_next_entry(logged):
    with logged.uow() as uow:
        entry = uow.session.execute(select(AuditEntry).where(
            AuditEntry.log_key == KEY, AuditEntry.sequence == 3)).scalar_one()
        entry.description = "a quieter story"
        chain.seal(entry, entry.prev_hash)  # the forger knows the algorithm
        uow.commit()

    result = check(logged)

    assert (result.first_bad.sequence, result.first_bad.problem) == (4, "out_of_order")


def rewrite_chain_from(audit, sequence: int) -> None:
    """What a forger with the algorithm can do: rehash every later entry and the head."""
    with audit.uow() as uow:
        entries = list(uow.session.execute(select(AuditEntry).where(AuditEntry.log_key == KEY)
                                           .order_by(AuditEntry.sequence)).scalars())
        previous = entries[sequence - 2].hash if sequence > 1 else chain.genesis(KEY)
        for entry in entries[sequence - 1:]:
            previous = chain.seal(entry, previous)
        audit_log = uow.session.get(AuditLog, KEY)
        audit_log.head_hash, audit_log.last_sequence = previous, entries[-1].sequence
        uow.commit()


def test_a_rewritten_chain_is_caught_by_the_signed_checkpoint(logged):
    sql(logged, "UPDATE audit_entries SET description = 'rewritten' WHERE log_key = :key "
                "AND sequence = 2", key=KEY)
    rewrite_chain_from(logged, 2)

    result = check(logged)

    assert (result.first_bad.sequence, result.first_bad.problem) == (ENTRIES,
                                                                    "checkpoint_mismatch")


def test_a_cut_tail_with_a_rewritten_head_is_caught_by_the_signed_checkpoint(logged):
    sql(logged, "DELETE FROM audit_entries WHERE log_key = :key AND sequence > 5", key=KEY)
    rewrite_chain_from(logged, 5)

    result = check(logged)

    assert (result.first_bad.sequence, result.first_bad.problem) == (ENTRIES, "truncated")


def test_a_forged_checkpoint_signature_is_found(logged):
    with logged.uow() as uow:
        checkpoint = uow.session.execute(select(AuditCheckpoint)).scalars().first()
        checkpoint.head_hash = "0" * 64
        uow.commit()

    result = check(logged)

    assert result.first_bad.problem == "bad_signature"


def test_the_checkpoint_is_published_with_what_an_outsider_needs_to_check_it(logged):
    import base64
    import json

    from chancery_audit.checkpoints import signed_bytes
    from chancery_audit.model import messaging
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    with logged.engine.connect() as connection:
        [body] = connection.execute(select(messaging.outbox.c.body).where(
            messaging.outbox.c.type == "audit.checkpoint.signed")).scalars()
    data = json.loads(body)["data"]
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(data["public_key"]))
    public.verify(base64.b64decode(data["signature"]), signed_bytes(
        data["log_key"], data["sequence"], data["head_hash"],
        datetime.fromisoformat(data["signed_at"]), data["key_id"]))
    assert (data["log_key"], data["sequence"]) == (KEY, ENTRIES)


def test_checkpoints_are_signed_only_for_logs_that_grew(logged, record):
    assert logged.sign_checkpoints() == []
    record(summary="one more")
    assert logged.sign_checkpoints() == [KEY]


def test_the_audit_services_own_checkpoints_are_not_entries(logged, consumer):
    from chancery_audit.model import messaging
    from chancery_shared.messaging.envelope import parse

    with logged.engine.connect() as connection:
        [body] = connection.execute(select(messaging.outbox.c.body).where(
            messaging.outbox.c.type == "audit.checkpoint.signed")).scalars()
    assert consumer.handle(parse(body)) is True
    assert check(logged).entries_checked == ENTRIES


def test_two_consumers_at_once_keep_one_valid_chain(audit, record):
    consumers = [MessageConsumer(AUDIT_QUEUE, audit.message_handlers()[AUDIT_QUEUE],
                                 audit.uow, "memory://") for _ in range(2)]
    from chancery_shared.messaging.envelope import new_envelope

    def envelopes(n: int):
        return [new_envelope(type="orders.order.approved", source="orders",
                             context=Context(actor=Actor(user_id="u", user_name="U"),
                                             account_id=ACCOUNT),
                             subject_type="order", subject_id=f"o-{n}-{i}", summary="approved",
                             data={"order_id": f"o-{n}-{i}", "price_cents": 1, "unit_id": None})
                for i in range(25)]

    batches = [envelopes(n) for n in range(2)]
    start = threading.Barrier(2)

    def run(consumer, batch):
        start.wait()
        for envelope in batch:
            assert consumer.handle(envelope) is True

    threads = [threading.Thread(target=run, args=pair)
               for pair in zip(consumers, batches, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    result = check(audit)
    assert result.ok, result.first_bad
    assert result.entries_checked == 50


def test_a_redelivered_message_is_one_entry_and_the_chain_holds(record, consumer, audit):
    envelope = record()
    consumer.handle(envelope)  # the inbox has it already: nothing is appended

    assert check(audit).entries_checked == 1 and check(audit).ok


# --- the HTTP endpoint ---------------------------------------------------------------


def test_get_verify_answers_for_the_admins_account(logged, client, as_role):
    response = client.get("/api/audit/v1/verify", headers=as_role("admin"))

    assert response.status_code == 200, response.json
    assert response.json["ok"] is True
    assert response.json["entries_checked"] == ENTRIES
    assert response.json["head_hash"] == check(logged).head_hash


def test_get_verify_names_the_first_bad_entry(logged, client, as_role):
    sql(logged, "UPDATE audit_entries SET user_name = 'Mallory' WHERE log_key = :key "
                "AND sequence = 7", key=KEY)

    body = client.get("/api/audit/v1/verify", headers=as_role("admin")).json

    assert body["ok"] is False
    assert (body["first_bad"]["sequence"], body["first_bad"]["problem"]) == (7, "modified")
    entry_id = logged.engine.connect().execute(text(
        "SELECT id FROM audit_entries WHERE log_key = :key AND sequence = 7"),
        {"key": KEY}).scalar_one()
    assert body["first_bad"]["entry_id"] == entry_id


def test_an_admin_does_not_see_another_accounts_breakage(logged, record, client, as_role):
    record(account_id=OTHER_ACCOUNT)
    sql(logged, "UPDATE audit_entries SET description = 'x' WHERE log_key = :key",
        key=log_key(OTHER_ACCOUNT))

    assert client.get("/api/audit/v1/verify", headers=as_role("admin")).json["ok"] is True
    operator = client.get("/api/audit/v1/verify", headers=as_role("operator")).json
    assert operator["ok"] is False
    assert operator["first_bad"]["sequence"] == 1


@pytest.mark.parametrize("role, status", [("unit_admin", 403), ("finance", 403),
                                          ("limited", 403)])
def test_other_roles_may_not_verify(client, as_role, role, status):
    response = client.get("/api/audit/v1/verify", headers=as_role(role))
    assert response.status_code == status
    assert "verify_audit_log" in response.get_data(as_text=True)


# --- retention -----------------------------------------------------------------------

NOW = datetime(2026, 11, 26, tzinfo=UTC)
#: a message about no certificate, order or CA: kept two years from its own time
DEPOSIT = {"deposit_id": "dep-1", "method": "card", "amount_cents": 50000}


def test_a_purge_keeps_two_years_records_itself_and_the_chain_still_verifies(record, audit):
    for days in (1000, 900, 800, 10, 5):
        record("ledger.deposit.settled", data=DEPOSIT, subject=("deposit", "dep-1"),
               at=NOW - timedelta(days=days), summary=f"{days} days ago")
    operator = Context(actor=Actor(user_id="op-1", user_name="Olga Operator"), account_id=None)

    [purged] = purge(audit.uow, audit.signer, operator, before=NOW - timedelta(days=750),
                     now=NOW)

    assert (purged.entries, purged.through_sequence) == (3, 3)
    result = check(audit)
    assert result.ok, result.first_bad
    with audit.uow() as uow:
        kept = list(uow.session.execute(select(AuditEntry).where(AuditEntry.log_key == KEY)
                                        .order_by(AuditEntry.sequence)).scalars())
    assert [e.sequence for e in kept] == [4, 5, 6]
    assert kept[-1].action == "audit.log.purged"
    assert "Olga Operator purged 3 audit entries" in kept[-1].description


def test_a_purge_refuses_anything_younger_than_two_years(audit):
    from chancery_shared.web.problems import InvalidField

    operator = Context(actor=Actor(user_id="op-1", user_name="Olga"), account_id=None)
    with pytest.raises(InvalidField, match="two years"):
        purge(audit.uow, audit.signer, operator, before=NOW - timedelta(days=700), now=NOW)


def test_deleting_old_entries_without_the_purge_command_is_found(record, audit):
    for days in (1000, 900, 10):
        record(at=NOW - timedelta(days=days))
    sql(audit, "DELETE FROM audit_entries WHERE log_key = :key AND sequence = 1", key=KEY)

    assert (check(audit).first_bad.sequence, check(audit).first_bad.problem) == (1, "missing")


# --- the command ---------------------------------------------------------------------


def test_chancery_audit_verify_exits_nonzero_and_names_the_entry(logged, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_service", lambda: logged)
    assert cli.main(["verify"]) == 0
    assert f"{KEY}: ok, {ENTRIES} entries" in capsys.readouterr().out

    sql(logged, "UPDATE audit_entries SET action = 'nothing' WHERE log_key = :key "
                "AND sequence = 2", key=KEY)
    assert cli.main(["verify"]) == 3
    assert f"{KEY}: BROKEN at entry 2 (modified)" in capsys.readouterr().out


def test_the_command_is_installed():
    result = subprocess.run([str(Path(sys.executable).parent / "chancery-audit"), "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "verify" in result.stdout and "purge" in result.stdout
