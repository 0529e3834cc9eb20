"""`chancery-stack`: the distributed topology on this machine, and its compose rendering.

    chancery-stack up [--no-apps] [--signer-workers N]   start (idempotent), wait until healthy
    chancery-stack down                                  stop everything it started
    chancery-stack status                                each process, pid, alive
    chancery-stack env                                   export lines for clients and tests
    chancery-stack restart NAME [--graceful]             kill -9 (or stop) one process, start it
    chancery-stack compose                               print docker-compose.yml (see README)

Data, logs and pid files live under $CHANCERY_VAR_DIR/stack (default ./var/stack).
Ports: CHANCERY_PORT (gateway, 8080), CHANCERY_SERVICE_PORT_BASE (8100: services on
+1..+5), CHANCERY_PG_PORT (55432), CHANCERY_AMQP_PORT (55672), CHANCERY_ERLANG_DIST_PORT
(55673). CHANCERY_SIGNER_WORKERS sets the number of ca-signer workers (2).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from .compose import render_compose, write_assets
from .local import Stack
from .procs import StackError


def cmd_up(args: argparse.Namespace) -> int:
    stack = Stack(signer_workers=args.signer_workers)
    stack.up(apps=not args.no_apps)
    print(f"gateway: {stack.base_url}   logs: {stack.logs_dir}   stop: make down")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    Stack().down()
    print("chancery stack stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    stack = Stack()
    rows = stack.status()
    width = max(len(row.name) for row in rows)
    for row in rows:
        pid = str(row.pid) if row.pid else "-"
        port = str(row.port) if row.port else ""
        print(f"{row.name:<{width}}  {row.state:<4}  pid {pid:<8}  {port:<5}  {row.log}")
    return 0 if all(row.ok for row in rows) else 3


def cmd_env(args: argparse.Namespace) -> int:
    for key, value in Stack().env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    Stack().restart(args.name, hard=not args.graceful)
    print(f"{args.name} restarted")
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    """Print the compose file; refresh the files it mounts so all stay in step."""
    for path in write_assets(signer_workers=args.signer_workers):
        print(f"chancery-stack: updated {path}", file=sys.stderr)
    sys.stdout.write(render_compose(args.signer_workers))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chancery-stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="start the stack and wait until it is healthy")
    p.add_argument("--no-apps", action="store_true", help="only PostgreSQL, RabbitMQ and nginx")
    p.add_argument("--signer-workers", type=int, default=None,
                   help="ca-signer worker processes (default $CHANCERY_SIGNER_WORKERS or 2)")
    p.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything").set_defaults(func=cmd_down)
    sub.add_parser("status", help="list processes").set_defaults(func=cmd_status)
    sub.add_parser("env", help="print export lines").set_defaults(func=cmd_env)
    p = sub.add_parser("restart", help="kill -9 one process and start it again")
    p.add_argument("name", help="postgres, rabbitmq, nginx or an app process (see status)")
    p.add_argument("--graceful", action="store_true", help="SIGTERM instead of SIGKILL")
    p.set_defaults(func=cmd_restart)
    p = sub.add_parser("compose", help="print docker-compose.yml")
    p.add_argument("--signer-workers", type=int, default=2)
    p.set_defaults(func=cmd_compose)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except StackError as exc:
        print(f"chancery-stack {args.command}: {exc}", file=sys.stderr)
        if args.command == "up":
            print("(processes that did start are still running: `make status`, `make down`)",
                  file=sys.stderr)
        return 1
    except KeyError as exc:
        print(f"chancery-stack {args.command}: {exc.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
