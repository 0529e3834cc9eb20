"""Free text is matched against narrow copies of the entries' text fields
(``audit_entry_texts``): every way an entry comes or goes keeps the copy exact — recording,
the migration that filled the table from existing entries, and the purge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chancery_audit.model import AuditEntry, AuditEntryText, searchable_text
from chancery_audit.retention import purge
from chancery_shared import migrations
from chancery_shared.messaging.envelope import Actor, Context
from sqlalchemy import select

BEFORE_TEXT_ROWS = "c4e1d7a9b203"  # the revision before audit_entry_texts


def copies(service) -> dict[str, tuple[str | None, datetime, list[str], str]]:
    with service.uow() as uow:
        rows = uow.session.execute(select(AuditEntryText)).scalars()
        return {r.entry_id: (r.account_id, r.at.replace(tzinfo=None), list(r.unit_ids), r.text)
                for r in rows}


def expected(service) -> dict[str, tuple[str | None, datetime, list[str], str]]:
    with service.uow() as uow:
        entries = uow.session.execute(select(AuditEntry)).scalars()
        return {e.id: (e.account_id, e.at.replace(tzinfo=None), e.unit_ids,
                       searchable_text(e.description, e.user_name, e.target)) for e in entries}


def record_some(record) -> None:
    record(summary="Alice approved order 7",
           data={"order_id": "o-7", "price_cents": 100, "unit_ids": ["unit-b", "unit-a"]})
    record(system="orders", summary="orders captured funds", account_id=None)
    record(user=("u-2", "Zoë\tTab"), summary="a summary with\nnew lines and 100%_off")


@pytest.fixture
def audit(audit_on_each_database):
    """Each test on SQLite and on PostgreSQL."""
    return audit_on_each_database


def test_each_recorded_entry_has_its_text_row(record, audit):
    record_some(record)

    assert copies(audit) == expected(audit)
    assert len(copies(audit)) == 3
    assert any("Zoë\tTab\x1forder:" in text for *_, text in copies(audit).values())


def test_the_migration_fills_the_text_rows_of_existing_entries(record, audit):
    record_some(record)

    migrations.downgrade(audit.migrations_dir, audit.engine, BEFORE_TEXT_ROWS)
    migrations.upgrade(audit.migrations_dir, audit.engine)

    assert copies(audit) == expected(audit)
    assert len(copies(audit)) == 3


def test_a_purge_removes_the_text_rows_of_the_entries_it_removes(record, audit):
    now = datetime(2026, 11, 26, tzinfo=UTC)
    for days in (900, 800, 5):
        record("ledger.deposit.settled", subject=("deposit", "dep-1"),
               data={"deposit_id": "dep-1", "method": "card", "amount_cents": 100},
               at=now - timedelta(days=days), summary=f"{days} days ago")
    operator = Context(actor=Actor(user_id="op-1", user_name="Olga Operator"), account_id=None)

    purge(audit.uow, audit.signer, operator, before=now - timedelta(days=750), now=now)

    assert copies(audit) == expected(audit)
    assert sorted(text.split("\x1f")[0] for *_, text in copies(audit).values()) == [
        "5 days ago", "Olga Operator purged 2 audit entries recorded before 2024-11-06 "
        "(entries 1 to 2)"]


@pytest.mark.parametrize("q", ["a\x1fb", "line\nbreak", "tab\there", "\x7f"])
def test_free_text_with_a_control_character_is_refused(client, as_role, q):
    response = client.get("/api/audit/v1/entries", query_string={"q": q},
                          headers=as_role("admin"))

    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert "q" in str(response.json) and "control characters" in str(response.json)


def test_a_word_never_spans_two_fields(record, client, as_role):
    record(user=("u-9", "Grace"), summary="approved by")  # "by\x1fGrace" in the text row
    found = client.get("/api/audit/v1/entries", query_string={"q": "by Grace"},
                       headers=as_role("admin"))
    assert found.status_code == 200 and found.json["items"] == []


@pytest.mark.parametrize("recent", [1, 1_000])
def test_a_word_past_the_head_of_a_long_text_is_found(record, client, as_role, audit, recent,
                                                       monkeypatch):
    """The time indexes hold the first HEAD_CHARS characters; a word after them is still
    found, among the newest entries (recent=1000) and through the trigram index (1)."""
    from chancery_audit import handlers
    from chancery_audit.model import HEAD_CHARS

    monkeypatch.setattr(handlers, "RECENT_SCAN", recent)
    long = "x" * HEAD_CHARS + " zebra crossing"
    record(summary=long, at=datetime.now(UTC) - timedelta(days=3))
    for n in range(3):
        record(summary=f"newer {n}")

    for role in ("admin", "operator"):
        found = client.get("/api/audit/v1/entries", query_string={"q": "ZEBRA"},
                           headers=as_role(role))
        assert found.status_code == 200
        assert [item["description"] for item in found.json["items"]] == [long]
    with audit.uow() as uow:
        [row] = uow.session.execute(select(AuditEntryText).where(
            AuditEntryText.text.startswith(long))).scalars()
        assert (row.head, row.complete) == (long[:HEAD_CHARS], False)
