"""Fault runs (``make chaos``): nothing lost, nothing doubled, while processes die.

One stream of 500 orders flows through the gateway of a real distributed stack (its
own, see conftest.py) while, one after another, (a) RabbitMQ is killed with SIGKILL and
restarted, (b) a signer worker is killed with SIGKILL and restarted, (c) the PostgreSQL
server every service uses is restarted, (d) the outbox relay of orders is killed with
SIGKILL and restarted. Four client threads submit the orders as admins of funded
accounts (their orders approve themselves); they retry a failed submission with the
same ``Idempotency-Key`` and count an order only when a 201 came back.

Then every order must reach a terminal state and, reading every service's own
database: one certificate per issued order (signer and orders agree, no signing intent
left half-done), the ledger captured exactly the issued orders at their prices and its
books verify, the audit log holds every event of every outbox exactly once and its hash
chains verify, and every dead-letter queue is empty. The numbers of the run (time to
recover per fault, retries) are printed and written to ``var/chaos/last-run.json``;
docs/reliability.md explains them.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from chancery_audit.handlers import NOT_RECORDED
from chancery_shared.messaging import topology
from chancery_shared.messaging.consumer import peek_dead_letters
from chancery_shared.testing import wait_for
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from tests.conftest import PASSWORD
from tests.e2e.scenario import SETTLING_CARD, Api, expect, p256_csr

if TYPE_CHECKING:
    from chancery_deploy import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.distributed, pytest.mark.chaos]

STREAM_ORDERS = 500
CLIENT_THREADS = 4
SUBMIT_RATE = 6.0
"""Orders per second at most: the stream lasts long enough for all four faults to hit
orders at every stage, and stays near what the pipeline drains on a loaded 2-CPU box."""
FIRST_FAULT_AFTER, FAULT_EVERY = 50, 100
"""The faults strike after 50, 150, 250 and 350 accepted orders, one after another."""
PRODUCT, PRICE_CENTS = "ssl_dv", 4900  # one year of the catalog's ssl_dv
DEPOSIT_CENTS = 3_000_000  # per account: room for 612 orders, all 500 if need be
STRONG = "Granite-Willow-Sextant-83"
SUBMIT_PATIENCE = 180.0
"""How long one submission is retried through an outage before the run gives up."""
SETTLE_TIMEOUT = 240.0
"""How long every order of a phase may take to end once the fault was repaired."""
DRAIN_TIMEOUT = 120.0
SERVICES = ("identity", "orders", "ca-signer", "ledger", "audit")
TERMINAL = ("issued", "failed", "rejected", "cancelled")
REPO = Path(__file__).resolve().parents[2]


# --- the stream of orders -------------------------------------------------------------


@dataclass
class Stats:
    """What the clients saw: accepted orders, retries and their causes."""

    accepted: dict[str, str] = field(default_factory=dict)  # common name -> order id
    retries: Counter[str] = field(default_factory=Counter)
    replayed: int = 0  # a retry answered with the first attempt's stored 201
    lock: threading.Lock = field(default_factory=threading.Lock)

    def retry(self, cause: str) -> None:
        with self.lock:
            self.retries[cause] += 1

    def total_retries(self) -> int:
        with self.lock:
            return sum(self.retries.values())


def submit_order(admin: Api, common_name: str, stats: Stats) -> str:
    """POST one order until a 201, retrying outages with the same Idempotency-Key."""
    body = {"product": PRODUCT, "term_years": 1, "server_type": "nginx",
            "common_name": common_name, "sans": [], "csr": p256_csr(common_name)}
    key = str(uuid.uuid4())
    deadline = time.monotonic() + SUBMIT_PATIENCE
    while True:
        assert time.monotonic() < deadline, f"{common_name}: no 201 within {SUBMIT_PATIENCE}s"
        try:
            response = admin.post("/api/orders/v1/orders", body,
                                  headers={"Idempotency-Key": key})
        except requests.RequestException as exc:
            stats.retry(type(exc).__name__)
            time.sleep(0.5)
            continue
        if response.status_code == 201:
            if response.headers.get("Idempotent-Replayed") == "true":
                with stats.lock:
                    stats.replayed += 1
            return response.json()["id"]
        try:
            code = response.json().get("code")
        except ValueError:  # the gateway's own error page
            code = None
        if response.status_code >= 500 or code == "idempotency_key_in_use":
            stats.retry(f"{response.status_code} {code or ''}".strip())
            time.sleep(0.5)
            continue
        raise AssertionError(f"{common_name}: {response.status_code} {response.text}")


@dataclass
class Fault:
    """One fault of the run, and what it cost."""

    name: str
    inject: Callable[[Stack], None]
    struck_at: float = 0.0
    repaired_at: float = 0.0
    settled_at: float = 0.0
    """When every order accepted before the repair had reached a terminal state."""
    cohort: set[str] = field(default_factory=set)
    retries_before: int = 0
    retries_after: int = 0

    def numbers(self) -> dict[str, Any]:
        return {"fault": self.name, "orders_accepted_before_repair": len(self.cohort),
                "repair_seconds": round(self.repaired_at - self.struck_at, 1),
                "all_orders_so_far_terminal_seconds_after_fault":
                    round(self.settled_at - self.struck_at, 1) if self.settled_at else None,
                "client_retries_during_repair": self.retries_after - self.retries_before}


def run_stream(state: Run, count: int, faults: list[Fault]) -> None:
    """Submit ``count`` orders from one thread per admin, and strike the faults one by
    one, every FAULT_EVERY accepted orders, while the clients keep submitting. Until
    every order has ended, watch when each fault's cohort (the orders accepted before its
    repair) became terminal: its time to recover."""
    tag = uuid.uuid4().hex[:6]
    names = iter(f"c{n}-{tag}.example.com" for n in range(count))
    names_lock, failures = threading.Lock(), []
    stats = state.stats
    next_slot = [time.monotonic()]

    def client(admin: Api) -> None:
        while True:
            with names_lock:
                name = next(names, None)
                slot = next_slot[0] = max(next_slot[0] + 1 / SUBMIT_RATE, time.monotonic())
            if name is None or failures:
                return
            time.sleep(max(slot - time.monotonic(), 0))
            try:
                order_id = submit_order(admin, name, stats)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                failures.append(exc)
                return
            with stats.lock:
                stats.accepted[name] = order_id

    threads = [threading.Thread(target=client, args=(admin,), name=f"chaos-client-{i}")
               for i, admin in enumerate(state.admins)]
    for thread in threads:
        thread.start()
    pending = list(faults)
    try:
        while any(t.is_alive() for t in threads) and not failures:
            with stats.lock:
                accepted = len(stats.accepted)
            struck = len(faults) - len(pending)
            if pending and accepted >= FIRST_FAULT_AFTER + struck * FAULT_EVERY:
                fault = pending.pop(0)
                fault.retries_before = stats.total_retries()
                fault.struck_at = time.monotonic()
                fault.inject(state.stack)
                fault.repaired_at = time.monotonic()
                fault.retries_after = stats.total_retries()
                with stats.lock:
                    fault.cohort = set(stats.accepted.values())
            watch_recovery(state, faults)
            time.sleep(0.5)
    finally:
        for thread in threads:
            thread.join(SUBMIT_PATIENCE + 60)
    if failures:
        raise failures[0]
    assert not pending, f"the stream ended before {[f.name for f in pending]} struck"


def watch_recovery(state: Run, faults: list[Fault]) -> bool:
    """Note the faults whose cohort has ended now; True once all have."""
    waiting = [f for f in faults if f.cohort and not f.settled_at]
    if waiting:
        open_ids = {r.id for r in state.scalar_rows(
            "orders", "SELECT id FROM orders WHERE account_id = ANY(:ids) "
            "AND status <> ALL(:terminal)", ids=state.account_ids, terminal=list(TERMINAL))}
        for fault in waiting:
            if not fault.cohort & open_ids:
                fault.settled_at = time.monotonic()
    return all(f.settled_at for f in faults)


# --- the stack, its databases and its tools -----------------------------------------


@dataclass
class Run:
    """Everything the phases share: the stack, the accounts, the numbers so far."""

    stack: Stack
    engines: dict[str, Engine]
    admins: list[Api]
    account_ids: list[str]
    stats: Stats = field(default_factory=Stats)
    phases: list[dict[str, Any]] = field(default_factory=list)

    def scalar_rows(self, service: str, sql: str, **params: Any) -> list[Any]:
        with self.engines[service].connect() as connection:
            return list(connection.execute(text(sql), params))

    def tool(self, argv: list[str], service: str) -> subprocess.CompletedProcess[str]:
        """Run a service's operator command with exactly that service's environment."""
        env = self.stack.process_env(self.stack.topology.process(f"{service}-relay"))
        bin_dir = Path(env["PATH"].split(":")[0])
        return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], env=env,
                              capture_output=True, text=True, timeout=180, check=False)


def answered(call: Callable[[], requests.Response], status: int) -> dict[str, Any]:
    """``expect`` for the set-up, patient with a gateway that answers 502 while a loaded
    box restarts a worker: the set-up is not what the run measures."""
    deadline = time.monotonic() + 90
    while True:
        try:
            response = call()
        except requests.RequestException:
            response = None
        if response is not None and response.status_code not in (502, 503, 504) \
                or time.monotonic() > deadline:
            assert response is not None, "the gateway never answered"
            return expect(response, status)
        time.sleep(1)


def open_funded_account(base_url: str, dns: Any) -> tuple[Api, str]:
    """A new account's admin, with example.com validated (by a DNS TXT record on the
    loopback DNS server: the run orders a public product) and money for its orders."""
    anonymous = Api(base_url)
    operator = anonymous.login("operator@chancery.local", PASSWORD)
    tag = uuid.uuid4().hex[:8]

    def once() -> dict[str, str]:  # safe retries of the creating POSTs
        return {"Idempotency-Key": str(uuid.uuid4())}

    account_key, deposit_key = once(), once()
    answered(lambda: operator.post("/api/identity/v1/accounts", {
        "name": f"Chaos {tag}", "admin_email": f"admin-{tag}@chaos-test.com",
        "admin_name": "Chaos Admin", "admin_password": STRONG}, headers=account_key), 201)
    admin = anonymous.login(f"admin-{tag}@chaos-test.com", STRONG)
    domain = answered(lambda: admin.post("/api/orders/v1/domains", {
        "name": "example.com", "method": "dns-txt"}), 201)
    dns.publish("_chancery-challenge.example.com", "TXT", f'"{domain["token"]}"')
    checked = answered(lambda: admin.post(f"/api/orders/v1/domains/{domain['id']}/check",
                                          {}), 200)
    assert checked["status"] == "validated", checked.get("last_attempt")
    answered(lambda: admin.post("/api/ledger/v1/deposits", {
        "method": "card", "amount_cents": DEPOSIT_CENTS, "card": SETTLING_CARD},
        headers=deposit_key), 201)
    return admin, answered(lambda: admin.get("/api/identity/v1/me"), 200)["account_id"]


@pytest.fixture(scope="module")
def run(chaos_stack: Stack, loopback_dns: Any) -> Iterator[Run]:
    engines = {s: create_engine(chaos_stack.env[f"CHANCERY_{s.upper().replace('-', '_')}"
                                                "_DATABASE_URL"], pool_pre_ping=True)
               for s in SERVICES}
    opened = [open_funded_account(chaos_stack.base_url, loopback_dns)
              for _ in range(CLIENT_THREADS)]
    state = Run(chaos_stack, engines, [a for a, _ in opened], [i for _, i in opened])
    try:
        yield state
    finally:
        write_results(state)
        for engine in engines.values():
            engine.dispose()


def write_results(state: Run) -> None:
    """The numbers of this run, for docs/reliability.md."""
    result = {"orders_accepted": len(state.stats.accepted),
              "retries": dict(state.stats.retries), "replayed_201": state.stats.replayed,
              "phases": state.phases}
    out = REPO / "var" / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    (out / "last-run.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\nfault run:", json.dumps(result, indent=2))


# --- the checks -------------------------------------------------------------------------


def run_orders(state: Run) -> list[Any]:
    """Every order of the run's accounts as orders keeps it (also any whose 201 was lost)."""
    return state.scalar_rows(
        "orders", "SELECT id, status, price_cents, failure_reason, common_name FROM orders "
        "WHERE account_id = ANY(:ids)", ids=state.account_ids)


def wait_until_terminal(state: Run) -> list[Any]:
    def settled() -> list[Any] | None:
        orders = run_orders(state)
        return orders if all(o.status in TERMINAL for o in orders) else None

    try:
        return wait_for(settled, timeout=SETTLE_TIMEOUT, interval=1.0,
                        message="every order of the run to reach a terminal state")
    except AssertionError:
        stuck = Counter(o.status for o in run_orders(state) if o.status not in TERMINAL)
        raise AssertionError(f"orders not terminal after {SETTLE_TIMEOUT}s: {dict(stuck)}; "
                             f"dead letters: {dead_letters(state)}") from None


def outbox_event_ids(state: Run) -> tuple[set[str], int]:
    """Every event any service ever wrote to its outbox that the audit log records (all
    but audit's own checkpoint statements, NOT_RECORDED by design), and how many events
    are still unsent."""
    ids: set[str] = set()
    unsent = 0
    for service in SERVICES:
        for row in state.scalar_rows(service, "SELECT event_id, type, sent_at FROM outbox"):
            if row.type not in NOT_RECORDED:
                ids.add(row.event_id)
            unsent += row.sent_at is None
    return ids, unsent


def audited_event_ids(state: Run) -> Counter[str]:
    return Counter(r.event_id for r in state.scalar_rows("audit",
                                                         "SELECT event_id FROM audit_entries"))


def dead_letters(state: Run) -> dict[str, list[dict[str, Any]]]:
    url = state.stack.env["CHANCERY_BROKER_URL"]
    return {queue: found for queue in topology.QUEUES if (found := peek_dead_letters(url, queue))}


def check_everything(state: Run) -> dict[str, Any]:
    """The guarantees, read from each service's own database and its operator tools."""
    orders = wait_until_terminal(state)
    by_name = Counter(o.common_name for o in orders)
    assert not [n for n, c in by_name.items() if c > 1], "a retried submission ordered twice"
    assert set(by_name) == set(state.stats.accepted), "orders differ from the accepted 201s"
    assert {o.id for o in orders} == set(state.stats.accepted.values())
    issued = {o.id: o for o in orders if o.status == "issued"}
    ended = [o for o in orders if o.status != "issued"]
    assert all(o.failure_reason for o in ended if o.status == "failed"), ended

    # exactly one certificate per issued order, and the signer agrees with orders
    signed = state.scalar_rows(
        "ca-signer", "SELECT serial, order_id, status FROM certificates "
        "WHERE order_id = ANY(:ids)", ids=[o.id for o in orders])
    half_done = state.scalar_rows("ca-signer",
                                  "SELECT serial FROM certificates WHERE status = 'signing'")
    assert not half_done, f"signing intents left behind: {half_done}"
    per_order = Counter(r.order_id for r in signed if r.status == "issued")
    assert {o for o, c in per_order.items() if c != 1} == set(), "an order signed twice"
    assert set(per_order) == set(issued), "signer and orders disagree on what was issued"
    kept = state.scalar_rows("orders", "SELECT order_id, serial FROM certificates "
                             "WHERE order_id = ANY(:ids)", ids=list(issued) or [""])
    assert Counter(r.order_id for r in kept) == Counter(dict.fromkeys(issued, 1))
    assert {r.order_id: r.serial.lower().replace(":", "") for r in kept} == {
        r.order_id: r.serial for r in signed if r.status == "issued"}

    # the ledger captured exactly the issued orders at their prices, and balances
    reservations = state.scalar_rows(
        "ledger", "SELECT order_id, status, amount_cents FROM reservations "
        "WHERE customer_account_id = ANY(:ids)", ids=state.account_ids)
    captured = {r.order_id: r.amount_cents for r in reservations if r.status == "captured"}
    assert set(captured) == set(issued), "captures differ from issued orders"
    assert sum(captured.values()) == sum(o.price_cents for o in issued.values())
    assert not [r for r in reservations if r.status == "held"], "money left on hold"
    books = state.tool(["chancery-ledger", "verify"], "ledger")
    assert books.returncode == 0, books.stdout + books.stderr

    # the audit log holds every event once, and its chains verify
    def drained() -> tuple[set[str], Counter[str]] | None:
        sent, unsent = outbox_event_ids(state)
        audited = audited_event_ids(state)
        return (sent, audited) if unsent == 0 and sent <= set(audited) else None

    try:
        sent, audited = wait_for(drained, timeout=DRAIN_TIMEOUT, interval=1.0,
                                 message="every outbox drained into the audit log")
    except AssertionError:
        sent, unsent = outbox_event_ids(state)
        missing = sent - set(audit for audit in audited_event_ids(state))
        raise AssertionError(f"{unsent} events unsent, {len(missing)} never audited "
                             f"(e.g. {sorted(missing)[:5]})") from None
    assert not [e for e, c in audited.items() if c > 1], "an event audited twice"
    assert set(audited) == sent, f"audited events no outbox holds: {set(audited) - sent}"
    chains = state.tool(["chancery-audit", "verify"], "audit")
    assert chains.returncode == 0, chains.stdout + chains.stderr

    dead = dead_letters(state)
    assert not dead, dead
    return {"orders": len(orders), "issued": len(issued),
            "failed": Counter(o.status for o in ended), "events": len(sent)}


# --- the faults -------------------------------------------------------------------------


def crash_and_restart(stack: Stack, name: str, down_seconds: float = 0.0) -> None:
    """SIGKILL ``name``'s process group, leave it down a while, start it, wait until ready;
    check that a new process really replaced the old one (a fault that did not happen
    must not pass for one that was survived)."""
    component = stack.component(name)
    before = component.pid()
    assert before is not None, f"{name} is not running"
    stack.kill(name)  # waits up to 10 s for the group to vanish; a loaded box may need more
    try:
        wait_for(lambda: component.pid() is None, timeout=60, interval=0.2,
                 message=f"{name} to die of SIGKILL")
    except AssertionError:
        stat = Path(f"/proc/{before}/stat")
        raise AssertionError(f"{name} survived SIGKILL: "
                             f"{stat.read_text() if stat.exists() else 'gone'}") from None
    time.sleep(down_seconds)
    stack.start(name)
    after = component.pid()
    assert after is not None and after != before, f"{name} did not come back"


def kill_rabbitmq(stack: Stack) -> None:
    crash_and_restart(stack, "rabbitmq", down_seconds=3)  # publishers find it gone


def kill_signer_worker(stack: Stack) -> None:
    crash_and_restart(stack, "ca-signer-consumer-1")


def restart_postgres(stack: Stack) -> None:
    """All services share one PostgreSQL server (a database each): restarting it is
    restarting every service's database at once, the harder case of (c)."""
    postgres = stack.component("postgres")
    before = postgres.pid()
    postgres.stop(None)  # pg_ctl -m fast: every connection cut, open transactions abort
    assert postgres.pid() is None, "PostgreSQL did not stop"
    time.sleep(3)
    stack.start("postgres")
    assert postgres.pid() not in (None, before), "PostgreSQL did not come back"


def kill_orders_relay(stack: Stack) -> None:
    # orders keeps committing to its outbox with nobody to publish it
    crash_and_restart(stack, "orders-relay", down_seconds=3)


def test_retried_submission_is_answered_once(run: Run) -> None:
    """The client's retries rest on this: the same Idempotency-Key replays the 201."""
    body = {"product": PRODUCT, "term_years": 1, "server_type": "nginx",
            "common_name": f"replay-{uuid.uuid4().hex[:6]}.example.com", "sans": []}
    body["csr"] = p256_csr(body["common_name"])
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = expect(run.admins[0].post("/api/orders/v1/orders", body, headers=key), 201)
    again = run.admins[0].post("/api/orders/v1/orders", body, headers=key)
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first["id"]
    run.stats.accepted[body["common_name"]] = first["id"]  # checked with the stream


def test_a_stream_of_orders_survives_four_faults(run: Run) -> None:
    """At least 500 orders while RabbitMQ, a signer worker, PostgreSQL and the orders
    relay die one after another; then nothing lost, nothing doubled."""
    faults = [Fault("rabbitmq-kill-9", kill_rabbitmq),
              Fault("signer-worker-kill-9", kill_signer_worker),
              Fault("postgres-restart", restart_postgres),
              Fault("orders-relay-kill-9", kill_orders_relay)]
    started = time.monotonic()
    try:
        run_stream(run, STREAM_ORDERS, faults)
        wait_for(lambda: watch_recovery(run, faults), timeout=SETTLE_TIMEOUT, interval=1.0,
                 message="every fault's orders to end")
        summary = check_everything(run)
    finally:
        run.phases.extend(f.numbers() for f in faults)
        run.phases.append({"stream_seconds": round(time.monotonic() - started, 1)})
    run.phases.append({k: (dict(v) if isinstance(v, Counter) else v)
                       for k, v in summary.items()})
