"""Searching the log: filters, newest-first keyset pages, and refusals that name the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chancery_audit.model import AuditEntry
from chancery_shared.web.pagination import encode_cursor
from sqlalchemy import select

ENTRIES = "/api/audit/v1/entries"
ITEM_FIELDS = {"id", "at", "user_id", "user_name", "ip", "service", "action", "target",
               "description"}


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture
def story(record) -> dict[str, str]:
    """Five entries of one account: their event ids by label."""
    alice, bob = ("user-alice", "Alice Ng"), ("user-bob", "Bob Roe")
    envelopes = {
        "submitted": record(
            "orders.order.submitted", user=alice, at=t("2026-01-10T10:00:00Z"),
            subject=("order", "o1"),
            summary="Alice Ng requested a certificate for www.example.com",
            data={"order_id": "o1", "status": "pending_approval", "product": "ssl_basic",
                  "term_years": 1, "server_type": None, "common_name": "www.example.com",
                  "sans": ["www.example.com"], "unit_id": None, "requester_id": "user-alice",
                  "price_cents": 12900}),
        "approved": record(
            "orders.order.approved", user=bob, at=t("2026-01-11T08:00:00Z"),
            subject=("order", "o1"), summary="Bob Roe approved order o1",
            data={"order_id": "o1", "price_cents": 12900, "unit_id": None}),
        "reserved": record(
            "ledger.funds.reserved", system="ledger", at=t("2026-01-12T00:00:00Z"),
            subject=("order", "o1"), summary="ledger reserved $129.00 for order o1",
            data={"order_id": "o1", "amount_cents": 12900, "available_cents": 0}),
        "user_created": record(
            "identity.user.created", user=alice, at=t("2026-02-01T09:00:00Z"),
            subject=("user", "u9"), summary="Alice Ng created limited user Carol <carol@ex.com>",
            data={"user_id": "u9", "email": "carol@ex.com", "name": "Carol", "role": "limited",
                  "unit_ids": []}),
        "issued": record(
            "ca_signer.certificate.issued", system="ca_signer", at=t("2026-02-02T00:00:00Z"),
            subject=("certificate", "0a1b"),
            summary="ca_signer issued certificate 0a1b for www.example.com",
            data={"order_id": "o1", "issuance_id": "i1", "serial": "0a1b", "issuer_id": "ca1",
                  "not_before": "2026-02-02T00:00:00Z", "not_after": "2027-02-02T00:00:00Z",
                  "sans": ["www.example.com"], "certificate_pem": "x", "chain_pem": "x"}),
    }
    return {label: envelope.event_id for label, envelope in envelopes.items()}


@pytest.fixture
def search(client, as_role, audit, story):
    """Search as this account's admin; answer the labels of the entries found, in order."""
    with audit.uow() as uow:
        event_of = dict(uow.session.execute(select(AuditEntry.id, AuditEntry.event_id)).all())
    label_of = {event_id: label for label, event_id in story.items()}

    def run(**params: str) -> list[str]:
        response = client.get(ENTRIES, query_string=params, headers=as_role("admin"))
        assert response.status_code == 200, response.json
        return [label_of[event_of[item["id"]]] for item in response.json["items"]]

    return run


ALL_NEWEST_FIRST = ["issued", "user_created", "reserved", "approved", "submitted"]


@pytest.mark.parametrize(("params", "expected"), [
    ({}, ALL_NEWEST_FIRST),
    ({"user_id": "", "q": "", "from": "", "action": ""}, ALL_NEWEST_FIRST),  # empty form fields
    ({"user_id": "user-alice"}, ["user_created", "submitted"]),
    ({"user_id": "nobody"}, []),
    ({"from": "2026-01-11T00:00:00Z"}, ["issued", "user_created", "reserved", "approved"]),
    ({"to": "2026-01-12T00:00:00Z"}, ["approved", "submitted"]),  # `to` is exclusive
    ({"from": "2026-01-11T01:00:00+01:00", "to": "2026-02-01T00:00:00Z"},
     ["reserved", "approved"]),
    ({"from": "2026-01-11T01:00:00 01:00"}, ["issued", "user_created", "reserved", "approved"]),
    ({"action": "orders.order"}, ["approved", "submitted"]),
    ({"action": "orders.order.approved"}, ["approved"]),
    ({"action": "ledger"}, ["reserved"]),
    ({"action": "orders.order."}, ["approved", "submitted"]),
    ({"action": "orders.ord"}, []),  # whole parts of the type, never half of one
    ({"action": "order"}, []),
    ({"q": "www.example.com"}, ["issued", "submitted"]),
    ({"q": "CAROL"}, ["user_created"]),  # case-insensitive
    ({"q": "ledger"}, ["reserved"]),  # the name of the service that acted
    ({"q": "certificate:0a"}, ["issued"]),  # the target
    ({"q": "%"}, []),  # wildcards are text, not patterns
    ({"target": "order:o1"}, ["reserved", "approved", "submitted"]),
    ({"target": "user"}, ["user_created"]),  # a subject type alone
    ({"target": "order:o"}, []),
    ({"user_id": "user-alice", "action": "orders"}, ["submitted"]),
])
def test_search_filters(params, expected, search):
    assert search(**params) == expected


def test_an_item_says_who_did_what_when_from_where_to_what(client, as_role, record):
    envelope = record("orders.order.approved", user=("user-bob", "Bob Roe"), ip="198.51.100.4",
                      at=t("2026-01-11T08:00:00.123456Z"), subject=("order", "o1"),
                      summary="Bob Roe approved order o1", correlation_id="o1",
                      data={"order_id": "o1", "price_cents": 100, "unit_id": None})

    [item] = client.get(ENTRIES, headers=as_role("admin")).json["items"]

    assert ITEM_FIELDS <= set(item)
    assert {k: v for k, v in item.items() if k != "id"} == {
        "at": "2026-01-11T08:00:00.123456Z", "account_id": envelope.account_id,
        "user_id": "user-bob", "user_name": "Bob Roe", "ip": "198.51.100.4",
        "service": "orders", "action": "orders.order.approved", "target": "order:o1",
        "description": "Bob Roe approved order o1", "correlation_id": "o1"}


def test_pages_return_every_entry_once_newest_first(client, as_role, record, audit):
    start = t("2026-01-01T00:00:00Z")
    for n in range(120):  # three entries share each instant: the id breaks the tie
        record(at=start + timedelta(minutes=n // 3))
    headers = as_role("admin")

    first = client.get(ENTRIES, headers=headers).json
    assert len(first["items"]) == 50 and first["next_cursor"]  # the default page size

    seen, cursor, pages = [], None, 0
    while True:
        response = client.get(ENTRIES, headers=headers,
                              query_string={"limit": 7, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200
        page = response.json
        assert len(page["items"]) <= 7
        seen.extend((item["at"], item["id"]) for item in page["items"])
        pages += 1
        if pages == 2:  # newer entries arriving meanwhile neither shift nor repeat a page
            for n in range(5):
                record(at=start + timedelta(days=30, minutes=n))
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == 18
    assert len(seen) == len(set(seen)) == 120
    assert seen == sorted(seen, reverse=True)
    assert all(at < "2026-01-31" for at, _ in seen)


@pytest.mark.parametrize(("params", "field"), [
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-01-01T00:00:00"}, "from"),  # RFC 3339 needs the offset
    ({"from": "2026-01-01"}, "from"),
    ({"to": "2026-13-01T00:00:00Z"}, "to"),
    ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": encode_cursor({"page": 2})}, "cursor"),
    ({"cursor": encode_cursor({"at": "soon", "id": "x"})}, "cursor"),
])
def test_unacceptable_criteria_are_refused_naming_the_field(params, field, client, as_role):
    response = client.get(ENTRIES, query_string=params, headers=as_role("admin"))

    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert list(response.json["errors"]) == [field]


def test_the_largest_page_is_allowed(client, as_role, record):
    record()
    response = client.get(ENTRIES, query_string={"limit": 500}, headers=as_role("admin"))
    assert response.status_code == 200 and len(response.json["items"]) == 1
