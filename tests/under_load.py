"""Run pytest several times in a row while other processes keep every CPU busy.

    python tests/under_load.py [--spinners N] [--runs K] [--max-minutes M] -- PYTEST ARGS

``--spinners`` processes (default: one per CPU) spin in a tight loop at normal priority
for the whole time, so the tests compete for the CPU as they do on a busy CI machine.
Each run's outcome (pytest's closing line) and its duration are printed as it ends, and
a summary at the end; the exit status is 0 only when every run passed. The spinners stop
with this script, and on their own once ``--max-minutes`` have passed or their parent is
gone, so nothing keeps spinning after an interrupted run.

``make test-stress`` runs the modules that used to fail only on a busy machine this way;
docs/development.md records the full-suite runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spin(parent: int, deadline: float) -> None:
    """Burn a CPU until the deadline or until the parent process is gone."""
    checked = time.monotonic()
    while True:
        now = time.monotonic()
        if now - checked > 1:
            if now > deadline or os.getppid() != parent:
                return
            checked = now


def closing_line(output: str) -> str:
    lines = [line for line in output.splitlines() if re.search(r"\b(passed|failed|error)", line)]
    return lines[-1].strip("= ") if lines else "(no pytest summary)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spinners", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-minutes", type=float, default=120.0)
    parser.add_argument("--log-dir", type=Path, default=ROOT / "var" / "under-load")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    pytest_args = [a for a in args.pytest_args if a != "--"]
    deadline = time.monotonic() + args.max_minutes * 60
    spinners = [multiprocessing.Process(target=spin, args=(os.getpid(), deadline), daemon=True)
                for _ in range(args.spinners)]
    for process in spinners:
        process.start()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    print(f"{args.spinners} spinner(s) keep the {os.cpu_count()} CPUs busy; "
          f"{args.runs} run(s) of pytest {' '.join(pytest_args)}", flush=True)
    results = []
    try:
        for run in range(1, args.runs + 1):
            if time.monotonic() > deadline:
                print(f"stopped before run {run}: --max-minutes reached")
                break
            log = args.log_dir / f"run-{run}.log"
            started = time.monotonic()
            with log.open("w") as out:
                done = subprocess.run([sys.executable, "-m", "pytest", *pytest_args],
                                      cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                      check=False)
            seconds = time.monotonic() - started
            summary = closing_line(log.read_text())
            results.append((done.returncode, seconds, summary))
            print(f"run {run}: exit {done.returncode} in {seconds:.0f} s: {summary} "
                  f"(log: {log.relative_to(ROOT) if log.is_relative_to(ROOT) else log})",
                  flush=True)
    finally:
        for process in spinners:
            process.terminate()
        for process in spinners:
            process.join(5)
    green = sum(1 for code, _, _ in results if code == 0)
    print(f"{green} of {len(results)} run(s) green under a load of {args.spinners} spinner(s)")
    return 0 if results and green == len(results) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
