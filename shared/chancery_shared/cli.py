"""``chancery``: one command for every process of every mode.

    chancery embedded                  everything in one process (make run)
    chancery migrate SERVICE|all       create or upgrade a service's database
    chancery relay SERVICE             outbox relay and scheduled jobs of a service
    chancery consume SERVICE           message consumers of a service (signer workers)
    chancery bootstrap-dev SERVICE     seed development data
    chancery dead-letters list|replay QUEUE
    chancery makemigration SERVICE -m MESSAGE
    chancery openapi SERVICE           print the OpenAPI document
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from chancery_shared import config as cfg
from chancery_shared import migrations
from chancery_shared.messaging import topology
from chancery_shared.service import Runtime, build, service_classes


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_embedded(args: argparse.Namespace) -> int:
    from chancery_shared.embedded import EmbeddedChancery

    port = args.port or int(__import__("os").environ.get("CHANCERY_PORT", "8080"))
    chancery = EmbeddedChancery()
    chancery.start()
    password = chancery.runtime.platform.dev_password
    print(f"Chancery (embedded) on http://127.0.0.1:{port}")
    print(f"  API browser: http://127.0.0.1:{port}/api/docs/")
    if chancery.runtime.platform.dev_bootstrap:
        print("  development accounts: operator@chancery.local and admin@example.com")
        if password == "chancery-dev-password":
            print("  WARNING: the development password is the default 'chancery-dev-password';"
                  " set CHANCERY_DEV_PASSWORD")
    sys.stdout.flush()
    try:
        chancery.serve(port=port)
    except KeyboardInterrupt:
        pass
    finally:
        chancery.stop()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    names = list(service_classes()) if args.service == "all" else [args.service]
    for name in names:
        service = build(name)
        service.migrate()
        print(f"migrated {name}")
        if service.platform.dev_bootstrap:  # CHANCERY_DEV_BOOTSTRAP: seed after migrating
            service.bootstrap_dev()
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    service = build(args.service)
    stop = _stop_on_signals()
    threads = [threading.Thread(target=job, args=(stop,), daemon=True)
               for job in service.background_jobs()]
    for thread in threads:
        thread.start()
    service.relay().run(stop)
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    service = build(args.service)
    consumers = service.consumers(prefetch=args.prefetch)
    stop = _stop_on_signals()
    if not consumers:  # stay up like every other process: supervisors expect that
        print(f"{args.service} consumes no queue; idling until stopped")
    threads = [threading.Thread(target=c.run_until, args=(stop,), daemon=True) for c in consumers]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(timeout=10)
    return 0


def cmd_bootstrap_dev(args: argparse.Namespace) -> int:
    build(args.service).bootstrap_dev()
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from chancery_shared.messaging.consumer import peek_dead_letters, replay_dead_letters

    url = Runtime.from_environment().platform.broker_url
    if args.action == "list":
        print(json.dumps(peek_dead_letters(url, args.queue, args.limit), indent=2))
    else:
        print(f"replayed {replay_dead_letters(url, args.queue, args.limit)} message(s)")
    return 0


def cmd_makemigration(args: argparse.Namespace) -> int:
    service = build(args.service)
    migrations.autogenerate(service.migrations_dir, service.engine, args.message)
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    app = build(args.service).create_app()
    print(json.dumps(app.extensions["chancery_api"].spec.to_dict(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="chancery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("embedded")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_embedded)
    p = sub.add_parser("migrate")
    p.add_argument("service", choices=[*cfg.SERVICES, "all"])
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("relay")
    p.add_argument("service", choices=cfg.SERVICES)
    p.set_defaults(func=cmd_relay)
    p = sub.add_parser("consume")
    p.add_argument("service", choices=cfg.SERVICES)
    p.add_argument("--prefetch", type=int, default=10)
    p.set_defaults(func=cmd_consume)
    p = sub.add_parser("bootstrap-dev")
    p.add_argument("service", choices=cfg.SERVICES)
    p.set_defaults(func=cmd_bootstrap_dev)
    p = sub.add_parser("dead-letters", help="show or replay a queue's dead letters")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("queue", choices=sorted(topology.QUEUES),
                   help="the queue the messages failed on (its <queue>.dead holds them)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    p.set_defaults(func=cmd_dead_letters)
    p = sub.add_parser("makemigration")
    p.add_argument("service", choices=cfg.SERVICES)
    p.add_argument("-m", "--message", required=True)
    p.set_defaults(func=cmd_makemigration)
    p = sub.add_parser("openapi")
    p.add_argument("service", choices=cfg.SERVICES)
    p.set_defaults(func=cmd_openapi)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
