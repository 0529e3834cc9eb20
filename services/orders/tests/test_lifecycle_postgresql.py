"""The lifecycle on PostgreSQL: the migrations, row locks, the assignees' subquery and the
lifecycle job's correlated queries, where SQLite's serial transactions hide differences."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from chancery_orders.model import metadata
from chancery_orders.service import OrdersService
from chancery_shared.testing import TokenFactory, make_runtime
from sqlalchemy import create_engine, text

from .conftest import Harness
from .lifecycle_support import (
    ASSIGNEE,
    ORDERS,
    REVOKE,
    add_user,
    answer_sign,
    call,
    issued_order,
    show,
    sign_commands,
)


@pytest.fixture
def pg_harness(request, tmp_path, harness_dns):
    env = request.getfixturevalue("infrastructure")
    url = env["CHANCERY_ORDERS_DATABASE_URL"]
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))

    def wipe():
        with engine.begin() as connection:
            metadata.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))

    wipe()
    tokens = TokenFactory()
    service = OrdersService(make_runtime(tmp_path, tokens, CHANCERY_ORDERS_DATABASE_URL=url,
                                          CHANCERY_CAA_CHECK="false"))
    service.migrate()
    yield Harness(service=service, client=service.create_app().test_client(), tokens=tokens,
                  dns=harness_dns)
    service.dispose()
    wipe()
    engine.dispose()


@pytest.mark.distributed
def test_the_lifecycle_holds_on_postgresql(pg_harness, csr, self_signed, ec_key):
    from .conftest import csr_pem

    harness = pg_harness
    first = datetime(2026, 11, 26, tzinfo=UTC)
    order = issued_order(harness, csr, self_signed, term_years=2, not_before=first)
    assert order["plan"]["ends_at"] == "2028-11-26T00:00:00Z"

    # the assignee finds it through the list's subquery
    listed = harness.client.get(f"{ORDERS}?limit=500", headers=harness.headers(
        "limited", user_id=ASSIGNEE)).json["items"]
    assert [o["id"] for o in listed] == [order["id"]]

    # the plan's reissue: three workers at once, one command
    due = datetime.fromisoformat(order["certificate"]["not_after"].replace("Z", "+00:00")) \
        - timedelta(days=29)
    start, runs = threading.Barrier(3), []

    def worker() -> None:
        start.wait()
        runs.append(harness.service.run_lifecycle(due))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(run.reissued) for run in runs) == [0, 0, 1]
    command = sign_commands(harness, order["id"])[-1]
    answer_sign(harness, command, self_signed, "ab12", due, days=99)
    assert show(harness, order["id"])["certificate"]["serial"] == "ab12"

    # a reissue by hand, superseding; then edit, refund and renew paths touch PostgreSQL
    reissue = call(harness, "POST", f"{ORDERS}/{order['id']}/reissue", "limited assignee",
                   {"csr": csr_pem(ec_key)})
    assert reissue.status_code == 200, reissue.json
    answer_sign(harness, sign_commands(harness, order["id"])[-1], self_signed, "ab13", due)
    assert [c["data"]["reason"] for c in harness.outbox(REVOKE)] == ["superseded"]
    add_user(harness, "u-second")
    assert call(harness, "PUT", f"{ORDERS}/{order['id']}/assignees", "admin",
                {"user_ids": [ASSIGNEE, "u-second"]}).status_code == 200
    renewal = call(harness, "POST", f"{ORDERS}/{order['id']}/renew", "limited requester",
                   {"csr": csr})
    assert renewal.status_code == 201, renewal.json
    edited = call(harness, "PATCH", f"{ORDERS}/{renewal.json['id']}", "admin",
                  {"term_years": 1})
    assert edited.json["history"][-1]["details"]["changes"]["term_years"] == [2, 1]
    clock = harness.service.clock
    try:
        harness.service.clock = lambda: first + timedelta(days=40)
        late = call(harness, "POST", f"{ORDERS}/{order['id']}/refund", "admin", {})
        assert (late.status_code, late.json["code"]) == (409, "refund_window_closed")
        harness.service.clock = lambda: first + timedelta(days=10)
        refund = call(harness, "POST", f"{ORDERS}/{order['id']}/refund", "admin", {})
    finally:
        harness.service.clock = clock
    assert refund.status_code == 200, refund.json
    assert refund.json["status"] == "revoked"
    assert len(harness.outbox("orders.order.refunded")) == 1
