"""Fixtures for the ledger's tests: a migrated ledger on a SQLite file, tokens, messages.

Every test that uses the ``service`` fixture (directly or through ``client``, ``login``,
``consumer``) ends with the books proven: :func:`assert_books_balance` runs
``verify_balances`` after the test, so a flow that leaves an unbalanced transfer or a
cached balance that differs from the journal fails, whatever the test itself asserted.
A test that corrupts the books on purpose says so with ``@pytest.mark.books_tampered``.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chancery_ledger.journal import verify_balances
from chancery_ledger.model import messaging
from chancery_ledger.service import LedgerService
from chancery_shared.messaging.envelope import Actor, Context, Envelope, new_envelope
from chancery_shared.testing import TokenFactory, make_runtime
from sqlalchemy import select

VISA_OK = "4242424242424242"
VISA_DECLINED = "4000000000000002"
VISA_NO_FUNDS = "4000000000009995"


#: Tests that corrupt the books on purpose (to prove the check finds it) carry this marker.
TAMPERED = "books_tampered"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{TAMPERED}: the test corrupts the ledger's books on purpose; the journal "
        "invariant is not checked after it")


def assert_books_balance(service: LedgerService) -> None:
    """Fail unless every transfer sums to zero and every cached balance equals the journal."""
    with service.uow() as uow:
        result = verify_balances(uow)
    if not result.ok:
        lines = "\n".join(f"  account {d.customer_account_id or '-'}: {d.what}: journal says "
                          f"{d.expected}, found {d.found}" for d in result.discrepancies)
        pytest.fail(f"the ledger's books do not balance after the test "
                    f"({result.transfers_checked} transfers checked):\n{lines}", pytrace=False)


@pytest.fixture(autouse=True)
def books_balance_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that uses the ledger, prove its books (see the module docstring).

    The service is requested here, before the test body runs, so that it is torn down
    after this check rather than before it.
    """
    if "service" not in request.fixturenames or request.node.get_closest_marker(TAMPERED):
        yield
        return
    service: LedgerService = request.getfixturevalue("service")
    yield
    assert_books_balance(service)


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory) -> Path:
    """One database migrated with the real Alembic revisions, copied for every test."""
    var = tmp_path_factory.mktemp("template")
    template = LedgerService(make_runtime(var))
    template.migrate()
    template.dispose()  # checkpoints SQLite's WAL into the file
    return var / "ledger.db"


@pytest.fixture
def service(tmp_path, tokens, migrated_database) -> Iterator[LedgerService]:
    shutil.copyfile(migrated_database, tmp_path / "ledger.db")
    svc = LedgerService(make_runtime(tmp_path, tokens))
    yield svc
    svc.dispose()


@pytest.fixture
def client(service):
    return service.create_app().test_client()


@pytest.fixture
def consumer(service):
    (queue_consumer,) = service.consumers()
    return queue_consumer


@dataclass
class Caller:
    """A signed-in user of one account, with shortcuts for the ledger API."""

    client: Any
    headers: dict[str, str]
    account_id: str | None
    user_id: str

    def get(self, path: str, **kw: Any):
        return self.client.get(f"/api/ledger/v1{path}", headers={**self.headers,
                                                                  **kw.pop("headers", {})}, **kw)

    def post(self, path: str, json_body: Any = None, **kw: Any):
        return self.client.post(f"/api/ledger/v1{path}", json=json_body,
                                headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def deposit_card(self, amount_cents: int, number: str = VISA_OK, **kw: Any):
        return self.post("/deposits", card_deposit(amount_cents, number), **kw)


def card_deposit(amount_cents: int, number: str = VISA_OK, **card: Any) -> dict[str, Any]:
    return {"method": "card", "amount_cents": amount_cents,
            "card": {"number": number, "exp_month": 12, "exp_year": 2099, "cvc": "123", **card}}


@pytest.fixture
def login(client, tokens):
    """``login(role, account_id)`` -> a :class:`Caller`."""

    def make(role: str = "admin", account_id: str | None = "__new__", **claims: Any) -> Caller:
        if account_id == "__new__":
            account_id = str(uuid.uuid4())
        user_id = str(uuid.uuid4())
        headers = tokens.headers(role=role, account_id=account_id, user_id=user_id,
                                 name=claims.pop("name", f"{role.title()} {user_id[:4]}"),
                                 **claims)
        return Caller(client, headers, account_id, user_id)

    return make


def order_event(type_: str, account_id: str | None, order_id: str, **data: Any) -> Envelope:
    """A saga message as orders or ca-signer would publish it."""
    source = type_.split(".")[0]
    data = {"order_id": order_id, **data}
    defaults = {
        "orders.order.approved": {"price_cents": 0, "unit_id": None, "product": "ssl_plus"},
        "ca_signer.certificate.issued": {
            "issuance_id": str(uuid.uuid4()), "serial": "01ab", "issuer_id": "issuer-1",
            "not_before": "2026-01-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z",
            "sans": ["www.example.com"], "certificate_pem": "-----BEGIN CERTIFICATE-----",
            "chain_pem": "-----BEGIN CERTIFICATE-----"},
        "ca_signer.certificate.rejected": {"issuance_id": str(uuid.uuid4()),
                                           "reason": "lint failed", "lint_findings": []},
        "orders.order.rejected": {"reason": "not needed"},
        "orders.order.cancelled": {"reason": "changed my mind"},
        "orders.order.failed": {"reason": "signing failed", "serial": None},
    }.get(type_, {})
    context = Context(actor=Actor(user_id=str(uuid.uuid4()), user_name="Alice Ng",
                                  ip="192.0.2.7") if source == "orders"
                      else Actor.service(source),
                      account_id=account_id, correlation_id=order_id)
    return new_envelope(type=type_, source=source, context=context, subject_type="order",
                        subject_id=order_id, summary=f"test {type_} for {order_id}",
                        data={**defaults, **data})


def outbox(service: LedgerService, type_: str | None = None) -> list[dict[str, Any]]:
    """The messages the ledger has written to its outbox, oldest first."""
    with service.uow() as uow:
        rows = uow.session.execute(select(messaging.outbox.c.body)
                                   .order_by(messaging.outbox.c.seq)).scalars().all()
    messages = [json.loads(body) for body in rows]
    return [m for m in messages if type_ is None or m["type"] == type_]
