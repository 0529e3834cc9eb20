"""End to end: certificates per second from the order request to ``certificate.issued``
seen by a subscriber, through the gateway of the distributed stack (make bench).

    .venv/bin/python bench/bench_e2e.py [--seconds 30] [--threads 16] [--rate R]
                                        [--accounts 4] [--json PATH] [--png PATH]

One run, on the same machine and under the same load:

1. starts the distributed stack (RabbitMQ, PostgreSQL, gunicorn, nginx, two signer
   workers) on free ports in a temporary directory, destroyed at the end;
2. opens a few funded accounts through the gateway (an operator creates each account;
   its admin validates example.com by a DNS TXT record, published on the tests' loopback
   DNS server the stack resolves through (``tests.conftest.LoopbackDns``: the orders are
   for a public product, which an operator's manual review does not cover), and pays in
   by card; an admin's own orders need no second approval) and subscribes to
   ``ca_signer.certificate.issued`` on the ``chancery.events`` exchange with a queue of
   its own (and to the rejection and failure events, so a lost order is counted instead
   of waited for);
3. **saturation** (closed loop): ``--threads`` clients each submit an order and wait for
   its ``certificate.issued`` before submitting the next, for ``--seconds``;
4. **sustained** (open loop): orders arrive at a fixed rate (``--rate``; by default 60 %
   of the saturation rate just measured) for ``--seconds``; each latency runs from the
   *scheduled* arrival, so a client that falls behind cannot hide queueing;
5. the raw build-and-sign rate of the issuing CA's key type (bench_signer's
   ``RawSigner``, the same ceiling ``make bench-signer`` uses), sampled before and after,
   and the ratio end-to-end/raw.

The CPU of each process of the stack is counted from the start of the saturation phase
until its last certificate arrived and every consumer's queue is empty again (work the
phase's orders left queued, such as audit entries, belongs to them), per certificate.

A latency is the time from just before the HTTP request that creates the order to the
moment the subscriber receives that order's ``certificate.issued``. The rate of a phase
is the certificates whose event arrived within the phase over its length. Results go to
``var/bench/e2e.json`` and a chart to ``var/bench/e2e.png``. About 3-4 minutes in all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "services" / "ca-signer"))
sys.path.insert(0, str(REPO))
from bench_signer import RawSigner  # noqa: E402  (the raw ceiling, not a copy of it)

from tests.conftest import LoopbackDns  # noqa: E402  (the test stacks' resolver)

DEFAULT_JSON = REPO / "var" / "bench" / "e2e.json"
DEFAULT_PNG = REPO / "var" / "bench" / "e2e.png"
DEV_PASSWORD = "bench-dev-password-" + uuid.uuid4().hex[:8]
ADMIN_PASSWORD = "Granite-Willow-Sextant-83"
SETTLING_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"}
ISSUED = "ca_signer.certificate.issued"
#: Events that end an order without a certificate: counted as failures, not waited for.
FAILED = ("ca_signer.certificate.rejected", "orders.order.failed", "orders.order.rejected",
          "ledger.funds.declined")
#: Longest wait for the certificates of orders already accepted once a phase ends.
DRAIN_TIMEOUT = 60.0
#: Orders issued before the clock starts (each worker warms up; nothing timed).
WARM_UP_ORDERS = 6
#: Seconds of raw signing per sample (one before the phases, one after).
RAW_SECONDS = 2.0
HTTP_TIMEOUT = 60.0
TOTAL = "total (without the bench client)"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def p256_csr(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


class Client:
    """One signed-in user through the gateway; one ``requests.Session`` per thread."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url, self.token = base_url, token
        self.local = threading.local()

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = session.request(method, self.base_url + path, json=body, headers=headers,
                                   timeout=HTTP_TIMEOUT)
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def login(self, email: str, password: str) -> Client:
        token = self.call("POST", "/api/identity/v1/sessions",
                          {"email": email, "password": password}, 201)["access_token"]
        return Client(self.base_url, token)


def open_funded_account(base_url: str, operator: Client, n: int,
                        dns: LoopbackDns) -> Client:
    """A new account whose admin has example.com validated (DNS change, BR 3.2.2.4.7)
    and plenty of money."""
    tag = uuid.uuid4().hex[:8]
    email = f"bench-{n}-{tag}@bench.example.com"
    operator.call("POST", "/api/identity/v1/accounts", {
        "name": f"Bench {n} {tag}", "admin_email": email, "admin_name": f"Bench Admin {n}",
        "admin_password": ADMIN_PASSWORD}, 201)
    admin = Client(base_url).login(email, ADMIN_PASSWORD)
    domain = admin.call("POST", "/api/orders/v1/domains",
                        {"name": "example.com", "method": "dns-txt"}, 201)
    dns.publish("_chancery-challenge.example.com", "TXT", f'"{domain["token"]}"')
    checked = admin.call("POST", f"/api/orders/v1/domains/{domain['id']}/check", {}, 200)
    if checked["status"] != "validated":
        raise RuntimeError(f"example.com was not validated: {checked['last_attempt']}")
    admin.call("POST", "/api/ledger/v1/deposits", {
        "method": "card", "amount_cents": 100_000_000, "card": SETTLING_CARD}, 201)
    return admin


# --- the subscriber -------------------------------------------------------------------


class Subscriber:
    """A queue of its own bound to ``certificate.issued`` (and the failure events) on
    ``chancery.events``; notes when each order's event arrives and wakes its waiter."""

    def __init__(self, broker_url: str) -> None:
        from chancery_shared.messaging import broker, topology
        from kombu import Consumer, Queue

        self.lock = threading.Lock()
        self.issued: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.duplicates = 0
        self.waiters: dict[str, threading.Event] = {}
        self.stopping = threading.Event()
        self.connection = broker.connect(broker_url)
        channel = self.connection.channel()
        topology.declare(channel)
        name = f"bench.e2e.{uuid.uuid4().hex[:8]}"
        self.queue = Queue(name, exchange=topology.EVENTS_EXCHANGE, routing_key=ISSUED,
                           exclusive=True, auto_delete=True, durable=False)(channel)
        self.queue.declare()
        for key in FAILED:
            self.queue.bind_to(exchange=topology.EVENTS_EXCHANGE.name, routing_key=key)
        self.consumer = Consumer(channel, queues=[self.queue], callbacks=[self._on_message],
                                 accept=["application/json"], no_ack=True)
        self.consumer.consume()
        self.thread = threading.Thread(target=self._run, name="subscriber", daemon=True)
        self.thread.start()

    def _on_message(self, body: Any, message: Any) -> None:
        now = time.monotonic()
        envelope = body if isinstance(body, dict) else json.loads(body)
        data = envelope.get("data") or {}
        order_id = data.get("order_id") or (envelope.get("subject") or {}).get("id")
        if not order_id:
            return
        with self.lock:
            if envelope.get("type") == ISSUED:
                if order_id in self.issued:
                    self.duplicates += 1
                    return
                self.issued[order_id] = now
            else:
                self.failed.setdefault(order_id, envelope.get("type", "?"))
            waiter = self.waiters.pop(order_id, None)
        if waiter is not None:
            waiter.set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.connection.drain_events(timeout=0.5)
            except TimeoutError:
                continue

    def done(self, order_id: str) -> bool:
        with self.lock:
            return order_id in self.issued or order_id in self.failed

    def wait(self, order_id: str, timeout: float) -> bool:
        with self.lock:
            if order_id in self.issued or order_id in self.failed:
                return True
            waiter = self.waiters.setdefault(order_id, threading.Event())
        return waiter.wait(timeout)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        try:
            self.connection.release()
        except Exception:  # noqa: BLE001 - best effort at the end of a run
            pass


# --- the load --------------------------------------------------------------------------


@dataclass
class Phase:
    """One measured phase: when each order was requested, and what came of it."""

    name: str
    started: float = 0.0
    ended: float = 0.0
    requested: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, order_id: str, at: float) -> None:
        with self.lock:
            self.requested[order_id] = at

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


class Orders:
    """Submits orders round-robin over the funded admins, with pre-made CSRs."""

    def __init__(self, admins: Sequence[Client], count: int) -> None:
        self.admins = list(admins)
        run = uuid.uuid4().hex[:6]
        say(f"    [bench] making {count} P-256 CSRs (not timed)")
        self.pending: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        for i in range(count):
            name = f"b{i}-{run}.example.com"
            self.pending.put((name, p256_csr(name)))
        self.counter = 0
        self.lock = threading.Lock()

    def submit(self) -> str:
        """Create one order (approving it if the account wants that); its id."""
        with self.lock:
            admin = self.admins[self.counter % len(self.admins)]
            self.counter += 1
        try:
            name, csr = self.pending.get_nowait()
        except queue.Empty:  # more orders than made up front: make one now
            name = f"x{uuid.uuid4().hex[:12]}.example.com"
            csr = p256_csr(name)
        order = admin.call("POST", "/api/orders/v1/orders", {
            "product": "ssl_dv", "term_years": 1, "server_type": "nginx", "common_name": name,
            "sans": [], "csr": csr}, 201)
        if order["status"] == "pending_approval":
            admin.call("POST", f"/api/orders/v1/orders/{order['id']}/approve", {}, 200)
        return order["id"]


def closed_loop(orders: Orders, subscriber: Subscriber, threads: int, seconds: float) -> Phase:
    """``threads`` clients, each waiting for its certificate before the next order."""
    phase = Phase("saturation")

    def client() -> None:
        while time.monotonic() < phase.ended:
            at = time.monotonic()
            try:
                order_id = orders.submit()
            except Exception as exc:  # noqa: BLE001 - counted and reported
                phase.error(str(exc))
                time.sleep(0.5)
                continue
            phase.add(order_id, at)
            if not subscriber.wait(order_id, DRAIN_TIMEOUT):
                phase.error(f"order {order_id}: no certificate.issued in {DRAIN_TIMEOUT:.0f}s")

    phase.started = time.monotonic()
    phase.ended = phase.started + seconds
    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=seconds + DRAIN_TIMEOUT + HTTP_TIMEOUT)
    return phase


def open_loop(orders: Orders, rate: float, seconds: float, pool_size: int = 48) -> Phase:
    """Orders at ``rate`` per second on a fixed schedule; each timed from its slot."""
    phase = Phase("sustained")
    count = max(1, int(rate * seconds))

    def one(at: float) -> None:
        try:
            phase.add(orders.submit(), at)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            phase.error(str(exc))

    phase.started = time.monotonic()
    phase.ended = phase.started + seconds
    with ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="open") as pool:
        for i in range(count):
            slot = phase.started + i / rate
            delay = slot - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, slot)
    return phase


def drain(subscriber: Subscriber, phase: Phase) -> None:
    """Wait (bounded) for the certificates of every order the phase placed."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    for order_id in list(phase.requested):
        subscriber.wait(order_id, max(0.0, deadline - time.monotonic()))


def settle(broker_url: str) -> float:
    """Wait (bounded) until every consumer's queue is empty, so the CPU counted for a
    phase includes the work its orders left queued (audit is off the critical path and
    may still be recording when the last certificate arrives); returns the seconds."""
    from chancery_shared.messaging import broker, topology

    started = time.monotonic()
    deadline = started + DRAIN_TIMEOUT
    empty_since: float | None = None
    with broker.connect(broker_url) as connection:
        channel = connection.channel()
        while time.monotonic() < deadline:
            ready = sum(channel.queue_declare(queue=name, passive=True).message_count
                        for name in topology.QUEUES)
            now = time.monotonic()
            if ready:
                empty_since = None
            elif empty_since is None:
                empty_since = now
            elif now - empty_since >= 0.5:  # twice empty, half a second apart
                break
            time.sleep(0.1)
    return round(time.monotonic() - started, 1)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summarise(phase: Phase, subscriber: Subscriber) -> dict[str, Any]:
    """Rate within the phase window, latency percentiles, and what was lost."""
    with subscriber.lock:
        issued = {o: subscriber.issued[o] for o in phase.requested if o in subscriber.issued}
        failed = {o: subscriber.failed[o] for o in phase.requested if o in subscriber.failed}
    window = phase.ended - phase.started
    in_window = [t for t in issued.values() if phase.started <= t <= phase.ended]
    latencies = [issued[o] - phase.requested[o] for o in issued]
    missing = len(phase.requested) - len(issued) - len(failed)
    second = [0] * max(1, round(window))
    for t in in_window:
        second[min(len(second) - 1, int(t - phase.started))] += 1
    return {
        "seconds": round(window, 2),
        "orders_requested": len(phase.requested),
        "request_rate_per_second": round(len(phase.requested) / window, 2),
        "certificates_issued": len(issued),
        "certificates_per_second": round(len(in_window) / window, 2),
        "latency_ms": {f"p{q}": None if (v := percentile(latencies, q)) is None
                       else round(v * 1000, 1) for q in (50, 95, 99)}
        | {"max": round(max(latencies) * 1000, 1) if latencies else None,
           "mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else None},
        "failed": len(failed), "failed_by_event": sorted(set(failed.values())),
        "missing_after_drain": missing, "client_errors": len(phase.errors),
        "first_errors": phase.errors[:5],
        "issued_per_second_series": second,
        "latencies_ms": sorted(round(v * 1000, 1) for v in latencies),
    }


# --- CPU per component ----------------------------------------------------------------


def cpu_seconds(stack: Any) -> dict[str, float]:
    """CPU seconds used so far by each process of the stack with its descendants (gunicorn
    workers, PostgreSQL backends), and by this client: what a phase costs each
    component, load or no load."""
    return {**stack.cpu_seconds(), "bench client": sum(os.times()[:2])}


def cpu_per_certificate(before: dict[str, float], after: dict[str, float],
                        certificates: int) -> dict[str, float]:
    """CPU milliseconds per issued certificate, by component, largest first."""
    if certificates <= 0:
        return {}
    spent = {name: (after[name] - before.get(name, 0.0)) * 1000 / certificates
             for name in after}
    spent[TOTAL] = sum(
        v for k, v in spent.items() if k != "bench client")
    return dict(sorted(((k, round(v, 1)) for k, v in spent.items()), key=lambda kv: -kv[1]))


# --- the run ---------------------------------------------------------------------------


def raw_rate(base_url: str, admin: Client) -> tuple[RawSigner, float]:
    """bench_signer's raw build-and-sign with the issuing CA's key type, 2 s."""
    issuers = admin.call("GET", "/api/ca/v1/issuers")["items"]
    issuing = x509.load_pem_x509_certificate(issuers[0]["certificate_pem"].encode())
    keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(32)]
    signer = RawSigner(issuing, keys)
    count, seconds = signer.run(RAW_SECONDS)
    return signer, count / seconds


def machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform()}


def run(args: argparse.Namespace) -> int:
    from chancery_deploy import Ports, Stack, missing_infrastructure
    from chancery_shared.messaging import topology
    from chancery_shared.messaging.consumer import peek_dead_letters

    missing = missing_infrastructure()
    if missing:
        raise SystemExit(f"server packages missing: {', '.join(missing)} (make system-packages)")
    info = machine()
    say(f"chancery end-to-end benchmark: {info['cpu_count']} CPUs, load "
        f"{', '.join(str(x) for x in info['load_average'])}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chancery-bench-e2e-") as temp:
        dns = LoopbackDns()
        environ = {**os.environ, "CHANCERY_DEV_BOOTSTRAP": "true",
                   "CHANCERY_DEV_PASSWORD": DEV_PASSWORD, "CHANCERY_DNS_RESOLVER": "127.0.0.1",
                   "CHANCERY_DNS_PORT": str(dns.port)}
        stack = Stack(Path(temp), ports=Ports.find_free(), signer_workers=2, environ=environ)
        subscriber: Subscriber | None = None
        try:
            say("    [stack] starting the distributed stack (not timed)")
            stack.up()
            base_url, broker_url = stack.base_url, stack.env["CHANCERY_BROKER_URL"]
            operator = Client(base_url).login("operator@chancery.local", DEV_PASSWORD)
            admins = [open_funded_account(base_url, operator, n, dns)
                      for n in range(args.accounts)]
            subscriber = Subscriber(broker_url)
            orders = Orders(admins, int(args.seconds * 150))
            signer, raw_before = raw_rate(base_url, admins[0])
            say(f"    [raw] {signer.label}: {raw_before:,.0f} certs/s")
            say(f"    [warm-up] {WARM_UP_ORDERS} orders (not timed)")
            warm = Phase("warm-up")
            for _ in range(WARM_UP_ORDERS):
                warm.add(orders.submit(), time.monotonic())
            drain(subscriber, warm)

            say(f"    [saturation] {args.threads} closed-loop clients, {args.seconds:.0f}s")
            cpu_before = cpu_seconds(stack)
            saturation = closed_loop(orders, subscriber, args.threads, args.seconds)
            drain(subscriber, saturation)
            backlog = settle(broker_url)
            cpu_after = cpu_seconds(stack)
            say(f"    [saturation] consumers' queues empty {backlog}s after the last "
                f"certificate")
            results = {"saturation": summarise(saturation, subscriber)}
            cpu = cpu_per_certificate(cpu_before, cpu_after,
                                      results["saturation"]["certificates_issued"])
            say(f"    [saturation] CPU ms per certificate: {cpu}")
            sat_rate = results["saturation"]["certificates_per_second"]
            say(f"    [saturation] {sat_rate} certs/s, p50/p95/p99 "
                f"{results['saturation']['latency_ms']}")

            rate = args.rate or max(1.0, round(0.6 * sat_rate, 1))
            say(f"    [sustained] open loop at {rate}/s, {args.seconds:.0f}s")
            sustained = open_loop(orders, rate, args.seconds)
            drain(subscriber, sustained)
            results["sustained"] = summarise(sustained, subscriber)
            say(f"    [sustained] {results['sustained']['certificates_per_second']} certs/s, "
                f"p50/p95/p99 {results['sustained']['latency_ms']}")

            count, seconds = signer.run(RAW_SECONDS)
            raw_after = count / seconds
            dead = {name: len(peek_dead_letters(broker_url, name)) for name in topology.QUEUES}
            duplicates = subscriber.duplicates
        finally:
            if subscriber is not None:
                subscriber.close()
            say("    [stack] destroying the stack")
            stack.destroy()
            dns.close()
    raw = (raw_before + raw_after) / 2
    document = {
        "benchmark": "end-to-end", "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info, "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "parameters": {"seconds": args.seconds, "threads": args.threads,
                       "sustained_rate": rate, "accounts": args.accounts,
                       "signer_workers": 2},
        "raw": {"key": signer.label, "certificates_per_second": round(raw, 1),
                "before": round(raw_before, 1), "after": round(raw_after, 1)},
        "results": results,
        "ratio_end_to_end_to_raw": {name: round(r["certificates_per_second"] / raw, 5)
                                    for name, r in results.items()},
        "saturation_cpu_ms_per_certificate": cpu,
        "saturation_backlog_seconds": backlog,
        "issued_events_seen_twice": duplicates, "dead_letters": dead,
        "total_seconds": round(time.monotonic() - started, 1),
    }
    write(args.json, document)
    chart(args.png, document)
    print(table(document))
    print(f"written to {args.json} and {args.png}")
    bad = any(r["failed"] or r["missing_after_drain"] for r in results.values())
    return 1 if bad or duplicates or any(dead.values()) else 0


def table(document: dict[str, Any]) -> str:
    raw = document["raw"]
    lines = [f"load average {document['machine']['load_average']} at start, "
             f"{document['load_average_at_end']} at end; {document['total_seconds']}s in all",
             f"{'phase':<26} {'certs/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
             f"{'vs raw':>8}  issued/requested",
             f"{'raw build+sign (' + raw['key'] + ')':<26} "
             f"{raw['certificates_per_second']:>8,.0f} {'':>8} {'':>8} {'':>8} {1:>8}"]
    for name, r in document["results"].items():
        label = (f"saturation, {document['parameters']['threads']} clients"
                 if name == "saturation"
                 else f"sustained, {document['parameters']['sustained_rate']}/s open loop")
        ms = r["latency_ms"]
        lines.append(f"{label:<26} {r['certificates_per_second']:>8.1f} {ms['p50'] or 0:>8.0f} "
                     f"{ms['p95'] or 0:>8.0f} {ms['p99'] or 0:>8.0f} "
                     f"{document['ratio_end_to_end_to_raw'][name]:>8.4f}  "
                     f"{r['certificates_issued']}/{r['orders_requested']}"
                     + (f", {r['failed']} failed" if r["failed"] else "")
                     + (f", {r['missing_after_drain']} missing" if r["missing_after_drain"]
                        else "")
                     + (f", {r['client_errors']} client errors" if r["client_errors"] else ""))
    cpu = document["saturation_cpu_ms_per_certificate"]
    lines.append("CPU ms per certificate at saturation: " + ", ".join(
        f"{k} {v}" for k, v in cpu.items() if v >= 0.5))
    lines.append(f"certificate.issued seen twice: {document['issued_events_seen_twice']}; "
                 f"dead letters: {document['dead_letters']}")
    return "\n".join(lines)


def write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def chart(path: Path, document: dict[str, Any]) -> None:
    """Issued per second over each phase, and the latency percentiles of each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = document["results"]
    figure, (left, right, cpu_axes) = plt.subplots(1, 3, figsize=(18, 5))
    for name, r in results.items():
        left.plot(range(len(r["issued_per_second_series"])), r["issued_per_second_series"],
                  marker=".", label=f"{name} ({r['certificates_per_second']:.1f}/s)")
    left.set_xlabel("seconds into the phase")
    left.set_ylabel("certificate.issued per second")
    left.set_title("Throughput")
    left.legend()
    names = list(results)
    width = 0.25
    for i, q in enumerate(("p50", "p95", "p99")):
        right.bar([n + (i - 1) * width for n in range(len(names))],
                  [results[name]["latency_ms"][q] or 0 for name in names], width, label=q)
    right.set_xticks(range(len(names)), names)
    right.set_ylabel("ms, order request to certificate.issued")
    right.set_title("Latency")
    right.legend()
    cpu = {k: v for k, v in document["saturation_cpu_ms_per_certificate"].items()
           if v >= 0.5 and not k.startswith("total")}
    cpu_axes.barh(list(cpu)[::-1], list(cpu.values())[::-1])
    cpu_axes.set_xlabel("CPU ms per certificate at saturation")
    cpu_axes.set_title(f"Where the CPU goes (total "
                       f"{document['saturation_cpu_ms_per_certificate'].get(TOTAL, 0):.0f} ms)")
    figure.suptitle(f"Chancery end to end, {document['machine']['cpu_count']} CPUs, load "
                    f"{document['machine']['load_average'][0]}; raw "
                    f"{document['raw']['key']} {document['raw']['certificates_per_second']:,.0f}/s")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="length of each measured phase (default 30)")
    parser.add_argument("--threads", type=int, default=16,
                        help="closed-loop clients at saturation (default 16)")
    parser.add_argument("--rate", type=float, default=None,
                        help="open-loop orders per second (default: 60%% of saturation)")
    parser.add_argument("--accounts", type=int, default=4,
                        help="funded accounts the orders are spread over (default 4)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.threads < 1 or args.accounts < 1 or (args.rate or 1) <= 0:
        parser.error("--seconds, --threads, --accounts and --rate must be positive")
    stop_on_sigterm: Callable[..., None] = lambda *_: sys.exit(143)  # noqa: E731
    signal.signal(signal.SIGTERM, stop_on_sigterm)  # so the finally block destroys the stack
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
