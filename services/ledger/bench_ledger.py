"""Reservations per second, and their latency, with the balance row-lock strategy
(make bench-ledger).

    .venv/bin/python services/ledger/bench_ledger.py [--threads N] [--count N]
                                                     [--postgres-url URL] [--json PATH]

Each reservation is an ``orders.order.approved`` message handled by the ledger's real
consumer (``MessageConsumer.handle``: inbox, balance lock, journal, outbox, one
transaction), from N threads released together, in two shapes:

a) contention: every thread reserves against ONE account, so the account's balance row
   lock (``SELECT ... FOR UPDATE``) serialises them all;
b) spread: each thread reserves against its own account; on PostgreSQL they no longer
   wait for each other, on SQLite the database-wide write lock still serialises them.

The ratio (b)/(a) is what spreading buys. Latency is per message, including the wait
for the lock. Every account holds enough for every reservation, so each one moves money;
after each run the books are proven (``verify_balances``) and the count of held
reservations checked, so a fast but wrong run cannot pass.

PostgreSQL comes from the repo's deploy package (only the ``postgres`` component of a
``Stack`` on free ports in a temporary directory, always stopped and deleted at the end)
unless ``--postgres-url`` names one (its tables are dropped first). Without the server
package the PostgreSQL rows are skipped and say so. The defaults keep a run within
about a minute on a loaded 2-CPU box; each measurement also stops at a time budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from chancery_ledger import journal
from chancery_ledger.model import (
    CUSTOMER_AVAILABLE,
    DEPOSIT,
    HELD,
    PAYMENT_CLEARING,
    Reservation,
)
from chancery_ledger.service import LedgerService
from chancery_shared.db import make_engine, make_session_factory
from chancery_shared.messaging.consumer import MessageConsumer
from chancery_shared.messaging.envelope import Actor, Context, Envelope, new_envelope
from chancery_shared.testing import make_runtime
from sqlalchemy import MetaData, create_engine, func, select

REPO = Path(__file__).resolve().parents[2]
DEFAULT_JSON = REPO / "var" / "bench" / "ledger.json"
PRICE = 1_500
#: Longest one measurement may run; the rate is then of what was done.
BUDGET_SECONDS = 25.0


@dataclasses.dataclass(frozen=True)
class Result:
    database: str
    shape: str  # "one account" or "many accounts"
    threads: int
    reservations: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.reservations / self.seconds if self.seconds else 0.0


def approved(account_id: str, order_id: str) -> Envelope:
    """An order approval as the orders service publishes it."""
    context = Context(actor=Actor(user_id=str(uuid.uuid4()), user_name="Bench Approver"),
                      account_id=account_id, correlation_id=order_id)
    return new_envelope(type="orders.order.approved", source="orders", context=context,
                        subject_type="order", subject_id=order_id,
                        summary=f"order {order_id} approved",
                        data={"order_id": order_id, "price_cents": PRICE, "unit_id": None,
                              "product": "ssl_plus"})


def fund(service: LedgerService, account_id: str, cents: int) -> None:
    """Pay money in through the journal (a deposit transfer), as a settled deposit does."""
    with service.uow() as uow:
        balance = journal.lock_balance(uow.session, account_id)
        journal.post(uow.session, balance, kind=DEPOSIT,
                     legs=[(PAYMENT_CLEARING, -cents), (CUSTOMER_AVAILABLE, cents)],
                     description="Benchmark funds", created_by="system:bench")
        uow.commit()


def ledger(var: Path, url: str | None, threads: int) -> LedgerService:
    """A migrated ledger (SQLite file in ``var`` or the PostgreSQL ``url``), pooled for
    ``threads`` connections."""
    env = {"CHANCERY_LEDGER_DATABASE_URL": url} if url else {}
    service = LedgerService(make_runtime(var, **env))
    service.migrate()
    if url:
        service.engine.dispose()
        service.engine = make_engine(url, pool_size=threads + 2)
        service.session_factory = make_session_factory(service.engine)
    return service


def measure(service: LedgerService, database: str, shape: str, threads: int,
            count: int) -> Result:
    """Handle ``count`` approvals from ``threads`` threads; one account or one per thread."""
    accounts = ([str(uuid.uuid4())] if shape == "one account"
                else [str(uuid.uuid4()) for _ in range(threads)])
    per_account = -(-count // len(accounts))
    for account in accounts:
        fund(service, account, per_account * PRICE)
    (consumer,) = service.consumers()
    assert isinstance(consumer, MessageConsumer)
    batches = [[approved(accounts[t % len(accounts)], f"bench-{uuid.uuid4()}")
                for _ in range(count // threads + (1 if t < count % threads else 0))]
               for t in range(threads)]
    start, deadline = threading.Barrier(threads + 1), [0.0]
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def work(index: int) -> None:
        start.wait()
        for message in batches[index]:
            if time.monotonic() > deadline[0]:
                return
            began = time.perf_counter()
            assert consumer.handle(message)
            latencies[index].append(time.perf_counter() - began)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(work, i) for i in range(threads)]
        deadline[0] = time.monotonic() + BUDGET_SECONDS
        start.wait()
        began = time.perf_counter()
        for future in futures:
            future.result()
        seconds = time.perf_counter() - began
    done = sorted(latency for per_thread in latencies for latency in per_thread)
    with service.uow() as uow:
        held = uow.session.execute(select(func.count()).select_from(Reservation).where(
            Reservation.status == HELD, Reservation.customer_account_id.in_(accounts))
        ).scalar_one()
        proof = journal.verify_balances(uow)
    if held != len(done) or not proof.ok:
        raise SystemExit(f"{database} {shape}: {held} reservations held for {len(done)} "
                         f"handled; books {'balance' if proof.ok else proof.discrepancies}")
    quantiles = (statistics.quantiles(done, n=100, method="inclusive") if len(done) > 1
                 else done * 99)
    return Result(database, shape, threads, len(done), seconds,
                  quantiles[49] * 1000, quantiles[98] * 1000)


def run_database(var: Path, database: str, url: str | None, threads: int,
                 count: int) -> list[Result]:
    service = ledger(var, url, threads)
    try:
        results = []
        for shape in ("one account", "many accounts"):
            result = measure(service, database, shape, threads, count)
            print(f"  {database:<10} {shape:<13} {result.reservations:>5} reservations in "
                  f"{result.seconds:5.1f}s", file=sys.stderr, flush=True)
            results.append(result)
        return results
    finally:
        service.dispose()


def drop_all_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            tables = MetaData()
            tables.reflect(connection)
            tables.drop_all(connection)
    finally:
        engine.dispose()


@contextmanager
def postgresql(folder: Path) -> Iterator[str | None]:
    """The ledger's database on a private PostgreSQL (None without the server package),
    always stopped and deleted afterwards."""
    from chancery_deploy import Ports, Stack
    from chancery_deploy.postgres import find_bin_dir

    if find_bin_dir() is None:
        print("  PostgreSQL server package missing (make system-packages): rows skipped",
              file=sys.stderr)
        yield None
        return
    stack = Stack(folder, Ports.find_free(), environ={"PATH": os.environ.get("PATH", "")},
                  say=lambda message: print(f"    [stack] {message}", file=sys.stderr,
                                            flush=True))
    try:
        started = time.monotonic()
        stack.start("postgres")
        stack.say(f"postgres up in {time.monotonic() - started:.0f}s")
        yield stack.env["CHANCERY_LEDGER_DATABASE_URL"]
    finally:
        stack.destroy()


def table(results: list[Result]) -> str:
    lines = [f"{'database':<11}{'shape':<15}{'threads':>8}{'reservations':>14}"
             f"{'per second':>12}{'p50 ms':>9}{'p99 ms':>9}"]
    for r in results:
        lines.append(f"{r.database:<11}{r.shape:<15}{r.threads:>8}{r.reservations:>14}"
                     f"{r.per_second:>12.1f}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}")
    for database in dict.fromkeys(r.database for r in results):
        one, many = ([r for r in results if r.database == database and r.shape == shape][0]
                     for shape in ("one account", "many accounts"))
        lines.append(f"{database}: spread over many accounts / contention on one = "
                     f"{many.per_second / one.per_second:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--threads", type=int, default=16)
    args.add_argument("--count", type=int, default=400,
                      help="reservations per measurement (default 400)")
    args.add_argument("--postgres-url", help="use this PostgreSQL database (tables dropped)")
    args.add_argument("--json", type=Path, default=DEFAULT_JSON)
    options = args.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks still run

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as folder:
        if options.postgres_url:
            drop_all_tables(options.postgres_url)
            results += run_database(Path(folder), "postgresql", options.postgres_url,
                                    options.threads, options.count)
        else:
            with postgresql(Path(folder) / "pg") as url:
                if url:
                    results += run_database(Path(folder), "postgresql", url, options.threads,
                                            options.count)
        results += run_database(Path(folder) / "sqlite", "sqlite", None, options.threads,
                                options.count)

    print(f"ledger reservations, row-lock strategy, {options.threads} threads "
          f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    print(table(results))
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps({
        "benchmark": "ledger reservations", "strategy": "row lock (SELECT ... FOR UPDATE)",
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
        "cpus": os.cpu_count(), "load": os.getloadavg()[0], "threads": options.threads,
        "results": [{**dataclasses.asdict(r), "per_second": round(r.per_second, 1)}
                    for r in results],
        "spread_over_contention": {
            db: round(next(r.per_second for r in results if r.database == db
                           and r.shape == "many accounts")
                      / next(r.per_second for r in results if r.database == db
                             and r.shape == "one account"), 2)
            for db in dict.fromkeys(r.database for r in results)},
    }, indent=2) + "\n")
    print(f"written to {options.json}")


if __name__ == "__main__":
    main()
