"""No overdraft and no lost update on PostgreSQL, where concurrency is real.

SQLite serialises every write transaction (``BEGIN IMMEDIATE``); PostgreSQL runs them
side by side and only the balance row lock (``SELECT ... FOR UPDATE``) keeps a
check-then-move honest. These tests run the ledger on its own database of the real
PostgreSQL server (the ``infrastructure`` fixture: Debian packages, loopback, skipped
outside CI when missing, failed in CI) and hammer one account from 32 threads.

The module's ``service`` fixture replaces the SQLite one, so ``login``, ``client``,
``consumer`` and the after-every-test proof of the books all run on PostgreSQL.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait

import pytest
from chancery_ledger.model import (
    AWAITING_FUNDS,
    HELD,
    PAYMENT_CLEARING,
    REFUNDED,
    RELEASED,
    RESERVATION,
    REVENUE,
    LedgerAccount,
    Posting,
    Reservation,
    Transfer,
)
from chancery_ledger.service import LedgerService
from chancery_shared.db import make_engine, make_session_factory
from chancery_shared.testing import make_runtime
from sqlalchemy import MetaData, create_engine, func, select

from .conftest import Caller, assert_books_balance, order_event, outbox

pytestmark = pytest.mark.distributed

THREADS = 32
STORM_TIMEOUT = 45  # seconds for all the work of one test; far above what it needs
APPROVED = "orders.order.approved"


def _wipe(url: str) -> None:
    """Drop every table of the ledger's database (whatever an earlier run left)."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            tables = MetaData()
            tables.reflect(connection)
            tables.drop_all(connection)
    finally:
        engine.dispose()


@pytest.fixture
def service(request, tmp_path, tokens) -> Iterator[LedgerService]:
    """The ledger, migrated, on its own PostgreSQL database, with a pool for every thread."""
    url = request.getfixturevalue("infrastructure")["CHANCERY_LEDGER_DATABASE_URL"]
    _wipe(url)
    svc = LedgerService(make_runtime(tmp_path, tokens, CHANCERY_LEDGER_DATABASE_URL=url))
    assert svc.engine.dialect.name == "postgresql"
    svc.migrate()
    svc.engine.dispose()
    svc.engine = make_engine(url, pool_size=THREADS + 2)
    svc.session_factory = make_session_factory(svc.engine)
    yield svc
    svc.dispose()
    _wipe(url)


def _storm(work: list[Callable[[], object]]) -> list[object]:
    """Run every piece of work on THREADS threads, released together; fail on any error."""
    start = threading.Event()

    def run(piece: Callable[[], object]) -> object:
        start.wait(STORM_TIMEOUT)
        return piece()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(run, piece) for piece in work]
        start.set()
        done, pending = wait(futures, timeout=STORM_TIMEOUT)
        for future in pending:
            future.cancel()
    assert not pending, f"{len(pending)} of {len(work)} pieces of work did not finish"
    return [future.result() for future in futures]  # re-raises the first error


def _reservations(service: LedgerService) -> Counter[str]:
    with service.uow() as uow:
        return Counter(uow.session.execute(select(Reservation.status)).scalars())


def _journal_totals(service: LedgerService, account_id: str) -> dict[str, int]:
    with service.uow() as uow:
        return {kind: int(total) for kind, total in uow.session.execute(
            select(LedgerAccount.kind, func.coalesce(func.sum(Posting.amount_cents), 0))
            .join(Posting, Posting.ledger_account_id == LedgerAccount.id, isouter=True)
            .where(LedgerAccount.customer_account_id == account_id)
            .group_by(LedgerAccount.kind))}


def _lowest_balances_ever(service: LedgerService) -> tuple[int, int]:
    """The lowest available and reserved balance any statement line ever recorded."""
    with service.uow() as uow:
        return tuple(uow.session.execute(select(func.min(Transfer.available_after_cents),
                                                func.min(Transfer.reserved_after_cents))).one())


def test_200_concurrent_reservations_hold_exactly_what_the_balance_covers(
        login, service, consumer):
    orders, covered, price = 200, 37, 1_234
    customer = login("admin")
    assert customer.deposit_card(covered * price).json["status"] == "settled"
    messages = [order_event(APPROVED, customer.account_id, f"order-{n:03d}", price_cents=price)
                for n in range(orders)]

    handled = _storm([lambda m=m: consumer.handle(m) for m in messages])

    assert handled == [True] * orders
    assert len(outbox(service, "ledger.funds.reserved")) == covered
    assert len(outbox(service, "ledger.funds.declined")) == orders - covered
    assert _reservations(service) == {HELD: covered, AWAITING_FUNDS: orders - covered}
    assert customer.get("/balance").json == {"available_cents": 0,
                                             "reserved_cents": covered * price,
                                             "currency": "USD"}
    with service.uow() as uow:  # each reservation saw the one before it: no lost update
        after = sorted(uow.session.execute(select(Transfer.available_after_cents)
                                           .where(Transfer.kind == RESERVATION)).scalars())
    assert after == [n * price for n in range(covered)]
    assert min(_lowest_balances_ever(service)) >= 0
    assert _journal_totals(service, customer.account_id)[PAYMENT_CLEARING] == -covered * price
    assert_books_balance(service)


def test_concurrent_deposits_reservations_releases_and_refunds_add_up(
        login, service, consumer):
    price, opening, top_up, top_ups, new_orders = 1_000, 30_000, 700, 40, 100
    customer = login("admin")
    assert customer.deposit_card(opening).json["status"] == "settled"
    earlier = [f"earlier-{n:02d}" for n in range(20)]  # 20 held, the first 10 captured
    for order_id in earlier:
        assert consumer.handle(order_event(APPROVED, customer.account_id, order_id,
                                           price_cents=price))
    for order_id in earlier[:10]:
        assert consumer.handle(order_event("ca_signer.certificate.issued",
                                           customer.account_id, order_id))
    assert customer.get("/balance").json["available_cents"] == opening - 20 * price

    app = service.create_app()

    def deposit() -> object:
        payer = Caller(app.test_client(), customer.headers, customer.account_id,
                       customer.user_id)
        response = payer.deposit_card(top_up)
        assert response.status_code == 201 and response.json["status"] == "settled"
        return True

    work: list[Callable[[], object]] = [deposit for _ in range(top_ups)]
    work += [lambda n=n: consumer.handle(order_event(
        APPROVED, customer.account_id, f"new-{n:03d}", price_cents=price))
        for n in range(new_orders)]
    work += [lambda o=o: consumer.handle(order_event(
        "orders.order.cancelled", customer.account_id, o)) for o in earlier[10:]]
    work += [lambda o=o: consumer.handle(order_event(
        "orders.order.refunded", customer.account_id, o, amount_cents=price))
        for o in earlier[:10]]
    random.Random(7).shuffle(work)

    assert _storm(work) == [True] * len(work)

    # every cent paid in is available or held; all revenue was refunded; and since money
    # freed by any step goes to waiting orders, orders wait only when less than a price
    # is left: exactly floor(paid in / price) new orders hold their price
    paid_in = opening + top_ups * top_up
    held = paid_in // price
    assert _reservations(service) == {HELD: held, AWAITING_FUNDS: new_orders - held,
                                      RELEASED: 10, REFUNDED: 10}
    assert customer.get("/balance").json == {"available_cents": paid_in - held * price,
                                             "reserved_cents": held * price,
                                             "currency": "USD"}
    totals = _journal_totals(service, customer.account_id)
    assert (totals[PAYMENT_CLEARING], totals[REVENUE]) == (-paid_in, 0)
    reserved_orders = [m["data"]["order_id"] for m in outbox(service, "ledger.funds.reserved")]
    new_reserved = [o for o in reserved_orders if o.startswith("new-")]
    assert len(new_reserved) == len(set(new_reserved)) == held
    assert len(outbox(service, "ledger.deposit.settled")) == 1 + top_ups
    assert len(outbox(service, "ledger.funds.released")) == 10
    assert len(outbox(service, "ledger.funds.refunded")) == 10
    assert min(_lowest_balances_ever(service)) >= 0
    assert_books_balance(service)
