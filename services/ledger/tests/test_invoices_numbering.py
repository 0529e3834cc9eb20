"""Purchase-order invoices: a sequential, gap-free number per account and a due date."""

from __future__ import annotations

import re
import threading
import uuid
from datetime import date, timedelta

import pytest
from chancery_ledger import handlers
from chancery_ledger.model import Deposit
from chancery_shared.auth.tokens import Principal
from chancery_shared.messaging.envelope import Actor, Context, utcnow
from sqlalchemy import select

from .conftest import card_deposit

THREADS, PER_THREAD = 6, 4


def purchase_order(caller, cents: int = 50_000, **extra):
    return caller.post("/deposits", {"method": "purchase_order", "amount_cents": cents,
                                     "po_number": f"PO-{uuid.uuid4().hex[:6]}", **extra})


def number_of(invoice: str) -> int:
    return int(invoice.rsplit("-", 1)[1])


def test_a_purchase_order_gets_the_accounts_next_invoice_number_due_net_30(login):
    admin = login("admin")
    first = purchase_order(admin)
    assert first.status_code == 201
    short = admin.account_id[:8].upper()
    assert first.json["invoice_number"] == f"INV-{short}-000001"
    today = utcnow().date()
    assert first.json["due_date"] in {(today + timedelta(days=30)).isoformat(),
                                      (today + timedelta(days=31)).isoformat()}  # midnight
    assert purchase_order(admin).json["invoice_number"] == f"INV-{short}-000002"
    fetched = admin.get(f"/deposits/{first.json['id']}").json
    assert (fetched["invoice_number"], fetched["due_date"]) == (first.json["invoice_number"],
                                                                first.json["due_date"])


def test_each_account_counts_its_own_invoices(login):
    one, two = login("admin"), login("finance")
    purchase_order(one)
    purchase_order(one)
    assert number_of(purchase_order(two).json["invoice_number"]) == 1
    assert number_of(purchase_order(one).json["invoice_number"]) == 3


def test_a_card_deposit_has_no_invoice(login):
    response = login("admin").deposit_card(1_000)
    assert (response.json["invoice_number"], response.json["due_date"]) == (None, None)


@pytest.mark.parametrize("days", [1, 45, 90])
def test_the_due_date_may_be_chosen_between_1_and_90_days(login, days):
    response = purchase_order(login("admin"), due_in_days=days)
    assert response.status_code == 201
    due = date.fromisoformat(response.json["due_date"])
    assert due - utcnow().date() in (timedelta(days=days), timedelta(days=days + 1))


@pytest.mark.parametrize("days", [0, -1, 91, 30.5, "30", None, True])
def test_a_bad_due_in_days_is_422_naming_it(login, days):
    admin = login("admin")
    response = purchase_order(admin, due_in_days=days)
    assert response.status_code == 422, response.json
    assert "due_in_days" in response.json["errors"]
    assert admin.get("/deposits").json["items"] == []


def test_due_in_days_is_only_for_purchase_orders(login):
    response = login("admin").post("/deposits", {**card_deposit(1_000), "due_in_days": 10})
    assert response.status_code == 422
    assert "due_in_days" in response.json["errors"]


def test_concurrent_purchase_orders_get_gap_free_distinct_numbers(service, login):
    admin = login("admin")
    start = threading.Barrier(THREADS)
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def submit() -> None:
        client = service.create_app().test_client()
        start.wait(timeout=30)
        for _ in range(PER_THREAD):
            response = client.post("/api/ledger/v1/deposits", headers=admin.headers, json={
                "method": "purchase_order", "amount_cents": 1_000,
                "po_number": f"PO-{uuid.uuid4().hex[:6]}"})
            with lock:
                results.append((response.status_code, response.get_json().get("invoice_number")))

    threads = [threading.Thread(target=submit) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert [status for status, _ in results] == [201] * (THREADS * PER_THREAD)
    numbers = sorted(number_of(invoice) for _, invoice in results)
    assert numbers == list(range(1, THREADS * PER_THREAD + 1))
    assert all(re.fullmatch(r"INV-[0-9A-F-]{8}-\d{6}", invoice) for _, invoice in results)


def test_a_purchase_order_that_rolls_back_gives_its_number_back(service, login):
    admin = login("admin")
    purchase_order(admin)
    principal = Principal(user_id=admin.user_id, email="admin@example.com", name="Admin",
                          role="admin", account_id=admin.account_id)
    context = Context(actor=Actor(user_id=admin.user_id, user_name="Admin"),
                      account_id=admin.account_id)

    def fail(_uow, _deposit) -> None:
        raise RuntimeError("the response could not be stored")

    with pytest.raises(RuntimeError), service.uow() as uow:
        handlers.deposit_by_purchase_order(uow, principal, context, amount_cents=100,
                                           po_number="PO-LOST", before_commit=fail)
    assert number_of(purchase_order(admin).json["invoice_number"]) == 2
    with service.uow() as uow:
        numbers = uow.session.execute(select(Deposit.invoice_number)
                                      .order_by(Deposit.invoice_number)).scalars().all()
    assert [number_of(n) for n in numbers] == [1, 2]
