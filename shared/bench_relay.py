"""Outbox relay throughput: one broker confirm per message against one wait per batch
(make bench-relay).

    .venv/bin/python shared/bench_relay.py [--count N] [--rounds N] [--batch-size N]
                                           [--json PATH]

A service's outbox on PostgreSQL is filled with ``--count`` committed
``orders.order.cancelled`` messages (not timed), then an ``OutboxRelay`` publishes them
all to RabbitMQ (``drain``: batches of ``--batch-size`` rows claimed ``FOR UPDATE SKIP
LOCKED``, the confirmed ones marked sent in the claiming transaction), two ways, in the
same run and on the same servers:

old: the connection's ``confirm_publish`` transport option, so each ``publish`` waits
     for its own ``basic.ack`` (one round trip per message): the relay before issue #9,
     kept here only as the baseline;
new: the relay as it is (``ConfirmedPublisher``): the batch is published, then its
     confirms are awaited once.

Per run: messages per second (wall clock of the drain), the relay's CPU milliseconds
per message (this process, which runs nothing else meanwhile) and those of RabbitMQ and
PostgreSQL (their process trees, from /proc). Each run is checked: every row marked
sent and exactly ``count`` messages on the audit queue, which is purged between runs.
The rounds alternate old and new; the best round of each is compared (new/old).

RabbitMQ and PostgreSQL come from the repo's deploy package (``Stack(...).up(apps=False)``
on free loopback ports in a temporary directory, always destroyed at the end). Bounded:
each drain stops at :data:`BUDGET_SECONDS` (the rate is then of what was done); the
defaults take about a minute or two on a loaded 2-CPU box.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chancery_shared.messaging import broker, topology
from chancery_shared.messaging.envelope import Actor, Context
from chancery_shared.messaging.relay import OutboxRelay
from chancery_shared.testing import OutboxBus, purge_broker
from kombu import Connection, Producer
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "var" / "bench" / "relay.json"
#: Longest one drain may run.
BUDGET_SECONDS = 60.0
CONTEXT = Context(actor=Actor(user_id="u-bench", user_name="Bench User"), account_id="acct-1")


class OnePerMessage:
    """The relay's publisher before issue #9: ``publish`` returns once the broker
    confirmed that one message (kombu's ``confirm_publish``), then the next is sent."""

    def __init__(self, connection: Connection):
        channel = connection.channel()
        topology.declare(channel)
        self.producer = Producer(channel)

    def publish(self, rows: Sequence[Any], confirmed: list[int]) -> None:
        for row in rows:
            self.producer.publish(
                row.body, exchange=topology.EVENTS_EXCHANGE, routing_key=row.type,
                message_id=row.event_id, delivery_mode=2,
                content_type="application/json", content_encoding="utf-8",
                retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2},
            )
            confirmed.append(row.seq)


class OldRelay(OutboxRelay):
    """The same relay (claiming, marking) with the one-confirm-per-message publisher."""

    def connect(self) -> Connection:
        return broker.connect(self._broker_url)  # confirm_publish: a wait per publish

    def publisher(self, connection: Connection) -> Any:
        return OnePerMessage(connection)


def fill(outbox: OutboxBus, count: int) -> None:
    """``count`` committed messages, 500 a transaction (not timed)."""
    for start in range(0, count, 500):
        with outbox.uow() as uow:
            for n in range(start, min(count, start + 500)):
                uow.event("orders.order.cancelled", CONTEXT, subject=("order", f"o-{n}"),
                          summary=f"Bench User cancelled order o-{n}",
                          data={"order_id": f"o-{n}", "reason": "benchmark"})
            uow.commit()


def unsent(outbox: OutboxBus) -> int:
    table = outbox.tables.outbox
    with outbox.sessions() as session:
        return session.execute(select(func.count()).select_from(table)
                               .where(table.c.sent_at.is_(None))).scalar_one()


def clear(outbox: OutboxBus) -> None:
    with outbox.engine.begin() as connection:
        connection.execute(outbox.tables.outbox.delete())


def on_audit_queue(url: str) -> int:
    with broker.connect(url) as connection:
        channel = connection.channel()
        topology.declare(channel)
        queue = topology.kombu_queue(topology.QUEUES["audit.all"])(channel)
        return queue.queue_declare(passive=True).message_count


def measure(stack: Any, outbox: OutboxBus, path: str, count: int, batch_size: int
            ) -> dict[str, Any]:
    clear(outbox)
    purge_broker(outbox.url)
    fill(outbox, count)
    relay = outbox.relay(batch_size, OldRelay if path == "old" else OutboxRelay)
    servers_before = stack.cpu_seconds()
    cpu_before, started = time.process_time(), time.perf_counter()
    relay.drain(timeout=BUDGET_SECONDS)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    servers = {name: used - servers_before.get(name, 0.0)
               for name, used in stack.cpu_seconds().items()}
    published = count - unsent(outbox)
    queued = on_audit_queue(outbox.url)
    if published == count and queued != count:
        raise SystemExit(f"{path}: {count} rows marked sent but {queued} messages queued")
    return {
        "path": path, "messages": published, "complete": published == count,
        "seconds": round(seconds, 3), "per_second": round(published / seconds, 1),
        "relay_cpu_ms_per_message": round(cpu * 1000 / published, 3),
        "server_cpu_ms_per_message": {name: round(used * 1000 / published, 3)
                                      for name, used in servers.items() if used > 0},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000,
                        help="outbox messages per run (default 5,000)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of each path, alternating (default 2)")
    parser.add_argument("--batch-size", type=int, default=200,
                        help="rows per relay batch (default 200, the relay's)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    if args.count < 1 or args.rounds < 1 or args.batch_size < 1:
        parser.error("--count, --rounds and --batch-size must be positive")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks still run

    from chancery_deploy import missing_infrastructure, throwaway_servers

    if missing := missing_infrastructure():
        print(f"server packages missing: {', '.join(missing)} (make system-packages)",
              file=sys.stderr)
        return 1
    load_start = os.getloadavg()[0]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as folder, \
            throwaway_servers(folder, environ={"PATH": os.environ.get("PATH", "")}) as stack:
        outbox = OutboxBus(stack.env["CHANCERY_ORDERS_DATABASE_URL"],
                           stack.env["CHANCERY_BROKER_URL"])
        try:
            for round_ in range(args.rounds):
                for path in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
                    run = measure(stack, outbox, path, args.count, args.batch_size)
                    run["round"] = round_ + 1
                    runs.append(run)
                    print(f"  round {round_ + 1} {path}: {run['per_second']:,.0f} msgs/s, "
                          f"relay CPU {run['relay_cpu_ms_per_message']:.3f} ms/msg"
                          + ("" if run["complete"] else " (budget hit)"),
                          file=sys.stderr, flush=True)
        finally:
            outbox.close()
    load_end = os.getloadavg()[0]

    best = {path: max((r for r in runs if r["path"] == path), key=lambda r: r["per_second"])
            for path in ("old", "new")}
    ratio = best["new"]["per_second"] / best["old"]["per_second"]
    cpu_ratio = (best["new"]["relay_cpu_ms_per_message"]
                 / best["old"]["relay_cpu_ms_per_message"])
    print(f"outbox relay, {args.count:,} messages a run, batches of {args.batch_size} "
          f"({os.cpu_count()} CPUs, load {load_start:.1f}-{load_end:.1f})")
    print(f"{'path':<6}{'round':>6}{'msgs/s':>10}{'relay CPU ms/msg':>18}"
          f"{'rabbitmq ms/msg':>17}{'postgres ms/msg':>17}")
    for r in runs:
        server = r["server_cpu_ms_per_message"]
        print(f"{r['path']:<6}{r['round']:>6}{r['per_second']:>10,.0f}"
              f"{r['relay_cpu_ms_per_message']:>18.3f}"
              f"{server.get('rabbitmq', float('nan')):>17.3f}"
              f"{server.get('postgres', float('nan')):>17.3f}")
    print(f"best new / best old: {ratio:.2f}x messages per second, "
          f"{cpu_ratio:.2f}x relay CPU per message")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "benchmark": "outbox relay", "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "load": [round(load_start, 2), round(load_end, 2)],
        "parameters": {"count": args.count, "rounds": args.rounds,
                       "batch_size": args.batch_size},
        "runs": runs,
        "best": best, "new_over_old_per_second": round(ratio, 2),
        "new_over_old_relay_cpu_per_message": round(cpu_ratio, 2),
    }, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
