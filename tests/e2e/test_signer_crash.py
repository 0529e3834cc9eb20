"""A signer worker killed mid-signing leaves exactly one certificate per order.

Distributed mode only: the signer workers are separate processes competing for the
signing queue. An admin submits a batch of orders (an admin's own orders need no second
approval); as soon as the signer has started on them, one worker is killed with SIGKILL
(its unacknowledged commands go back to the queue, possibly after it recorded an intent
or even signed) and started again. Every order must end issued with one certificate,
seen the same way by orders and by the signer's own records, with unique serials, no
intent left half-done and nothing dead-lettered.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from chancery_ca_signer.model import IssuedCertificate
from chancery_shared.messaging import topology
from chancery_shared.messaging.consumer import peek_dead_letters
from chancery_shared.testing import wait_for
from sqlalchemy import Row, create_engine, select
from sqlalchemy.engine import Engine

from tests.conftest import PASSWORD, RunningStack, stack_environment
from tests.e2e.scenario import SETTLING_CARD, Api, expect, p256_csr, validate_by_dns

if TYPE_CHECKING:
    from chancery_deploy import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.distributed]
STRONG = "Granite-Willow-Sextant-83"
ORDERS = 20
VICTIM = "ca-signer-consumer-1"


class Processes:
    """Kills and starts processes of the running distributed stack, and on teardown stops
    the ones it started (the stack's own handle only knows the processes it spawned)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.started: list[str] = []

    def crash_and_restart(self, name: str) -> None:
        """SIGKILL ``name`` (no clean-up at all), then start it again and wait until ready."""
        self.stack.kill(name)
        self.started.append(name)
        self.stack.start(name)

    def stop_started(self) -> None:
        for name in self.started:
            self.stack.component(name).stop(None)


@pytest.fixture(scope="session")
def processes(distributed_stack: RunningStack, loopback_dns
              ) -> Iterator[Processes]:
    """The distributed stack's processes, through its var dir."""
    from chancery_deploy import Stack

    assert distributed_stack.var_dir is not None
    handle = Processes(Stack(var_dir=distributed_stack.var_dir,
                             environ={**os.environ, **stack_environment(loopback_dns)}))
    yield handle
    handle.stop_started()


@pytest.fixture(scope="module")
def signer_db(processes: Processes) -> Iterator[Engine]:
    """The signer's own database, to see its records as it keeps them."""
    engine = create_engine(processes.stack.env["CHANCERY_CA_SIGNER_DATABASE_URL"])
    yield engine
    engine.dispose()


def open_funded_account(base_url: str, dns) -> Api:
    """A new account's admin, with example.com validated and enough money for the batch."""
    anonymous = Api(base_url)
    operator = anonymous.login("operator@chancery.local", PASSWORD)
    tag = uuid.uuid4().hex[:8]
    expect(operator.post("/api/identity/v1/accounts", {
        "name": f"Crash {tag}", "admin_email": f"admin-{tag}@crash-test.com",
        "admin_name": "Crash Admin", "admin_password": STRONG}), 201)
    admin = anonymous.login(f"admin-{tag}@crash-test.com", STRONG)
    validate_by_dns(admin, dns, "example.com")
    expect(admin.post("/api/ledger/v1/deposits", {
        "method": "card", "amount_cents": 300_000, "card": SETTLING_CARD}), 201)
    return admin


def signer_records(engine: Engine, order_ids: list[str]) -> list[Row]:
    table = IssuedCertificate.__table__
    with engine.connect() as connection:
        return list(connection.execute(
            select(table.c.serial, table.c.order_id, table.c.status)
            .where(table.c.order_id.in_(order_ids))))


def test_a_worker_killed_mid_signing_leaves_one_certificate_per_order(
        distributed_stack, processes, signer_db, loopback_dns):
    admin = open_funded_account(distributed_stack.base_url, loopback_dns)
    order_ids = []
    for n in range(ORDERS):
        name = f"crash-{n}-{uuid.uuid4().hex[:6]}.example.com"
        order = expect(admin.post("/api/orders/v1/orders", {
            "product": "ssl_dv", "term_years": 1, "server_type": "nginx", "common_name": name,
            "sans": [], "csr": p256_csr(name)}), 201)
        if order["status"] == "pending_approval":
            expect(admin.post(f"/api/orders/v1/orders/{order['id']}/approve", {}), 200)
        order_ids.append(order["id"])

    # the signer has started on the batch: kill one worker and bring it back
    wait_for(lambda: signer_records(signer_db, order_ids), timeout=30, interval=0.01,
             message="the signer to start on the batch")
    processes.crash_and_restart(VICTIM)

    def all_issued() -> list[dict] | None:
        orders = [expect(admin.get(f"/api/orders/v1/orders/{i}"), 200) for i in order_ids]
        assert not [o for o in orders if o["status"] == "failed"], orders
        return orders if all(o["status"] == "issued" for o in orders) else None

    orders = wait_for(all_issued, timeout=45, interval=0.5, message="every order issued")

    for order in orders:
        assert len(order["certificates"]) == 1, order["certificates"]
        assert order["certificates"][0]["serial"] == order["certificate"]["serial"]
    records = signer_records(signer_db, order_ids)
    assert sorted(r.order_id for r in records) == sorted(order_ids)  # one row per order
    assert {r.status for r in records} == {"issued"}  # no intent left in "signing"
    assert len({r.serial for r in records}) == ORDERS
    assert {r.order_id: r.serial for r in records} == {
        o["id"]: o["certificate"]["serial"].lower() for o in orders}
    dead = {queue: peek_dead_letters(distributed_stack.broker_url, queue)
            for queue in topology.QUEUES}
    assert not any(dead.values()), dead
