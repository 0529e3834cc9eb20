"""How long a deactivation takes to close every service's door (make bench-revocation).

    .venv/bin/python bench/bench_revocation.py [--samples 20] [--json PATH]

Starts the distributed stack (RabbitMQ, PostgreSQL, gunicorn with two workers per
service, nginx) on free ports in a temporary directory, destroyed at the end. Then, per
sample: an admin creates a user, the user signs in and reads orders through the gateway;
the admin deactivates the user at identity, and the user's still unexpired token is sent
to orders over and over until it is refused (401 ``token_revoked``) 20 times in a row
(the kernel spreads the requests over both workers, and each must have heard the event
on its own queue). Reported per sample, in milliseconds:

- ``first``: from just before the deactivation request to the first refusal;
- ``after_answer``: from identity's answer to the first refusal (the bus's share);
- ``everywhere``: from the request to the 20th refusal in a row (an upper bound: it
  includes the 20 sequential requests themselves).

Median, 95th percentile and maximum go to standard output and ``var/bench/revocation.json``.
About a minute, most of it starting the stack. docs/security.md quotes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "var" / "bench" / "revocation.json"
DEV_PASSWORD = "bench-dev-password-" + uuid.uuid4().hex[:8]
USER_PASSWORD = "Granite-Willow-Sextant-83"
IN_A_ROW = 20
CAP_SECONDS = 10.0


def sign_in(base: str, email: str, password: str) -> dict[str, str]:
    r = requests.post(f"{base}/api/identity/v1/sessions",
                      json={"email": email, "password": password}, timeout=30)
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def sample(base: str, admin: dict[str, str]) -> dict[str, float]:
    email = f"bench-leaver-{uuid.uuid4().hex[:8]}@example.com"
    r = requests.post(f"{base}/api/identity/v1/users", headers=admin, timeout=30, json={
        "email": email, "name": "Bench Leaver", "role": "limited", "unit_ids": [],
        "password": USER_PASSWORD})
    r.raise_for_status()
    user_id = r.json()["id"]
    leaver = sign_in(base, email, USER_PASSWORD)
    orders = f"{base}/api/orders/v1/orders?limit=1"
    session = requests.Session()
    for _ in range(IN_A_ROW):
        session.get(orders, headers=leaver, timeout=30).raise_for_status()
    started = time.monotonic()
    requests.patch(f"{base}/api/identity/v1/users/{user_id}", headers=admin, timeout=30,
                   json={"active": False}).raise_for_status()
    answered = time.monotonic()
    first, in_a_row = None, 0
    while in_a_row < IN_A_ROW:
        if time.monotonic() - started > CAP_SECONDS:
            raise SystemExit(f"orders still accepted the token after {CAP_SECONDS} s")
        r = session.get(orders, headers=leaver, timeout=30)
        if r.status_code == 401 and r.json().get("code") == "token_revoked":
            first = first or time.monotonic()
            in_a_row += 1
        else:
            in_a_row = 0
    everywhere = time.monotonic()
    assert first is not None
    return {"first": (first - started) * 1000, "after_answer": (first - answered) * 1000,
            "everywhere": (everywhere - started) * 1000}


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": statistics.median(ordered),
            "p95": ordered[max(0, round(0.95 * len(ordered)) - 1)], "max": ordered[-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    from chancery_deploy import Ports, Stack, missing_infrastructure

    missing = missing_infrastructure()
    if missing:
        raise SystemExit(f"server packages missing: {', '.join(missing)} (make system-packages)")
    with tempfile.TemporaryDirectory(prefix="chancery-bench-revocation-") as temp:
        environ = {**os.environ, "CHANCERY_DEV_BOOTSTRAP": "true",
                   "CHANCERY_DEV_PASSWORD": DEV_PASSWORD}
        stack = Stack(Path(temp), ports=Ports.find_free(), environ=environ)
        try:
            print("starting the distributed stack (not timed)", flush=True)
            stack.up()
            admin = sign_in(stack.base_url, "admin@example.com", DEV_PASSWORD)
            samples = [sample(stack.base_url, admin) for _ in range(args.samples)]
        finally:
            stack.destroy()
    result = {"samples": len(samples), "in_a_row": IN_A_ROW,
              **{key: summary([s[key] for s in samples])
                 for key in ("first", "after_answer", "everywhere")}}
    for key in ("first", "after_answer", "everywhere"):
        figures = result[key]
        print(f"{key:>12}: median {figures['median']:.0f} ms, p95 {figures['p95']:.0f} ms, "
              f"max {figures['max']:.0f} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
