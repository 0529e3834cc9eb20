"""What every operator command (``chancery-ca``, ``chancery-audit``, …) does around its
subcommands: parse, run, and turn an expected failure into one line on stderr and an
exit status instead of a traceback.

Exit status: what the subcommand returned; 1 when it was refused (a ``Problem``, or one
of ``failures``); 2 for a usage error (one of ``usage_errors``; argparse's own are 2 too).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from chancery_shared.web.problems import Problem


def run(program: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None, *,
        usage_errors: tuple[type[Exception], ...] = (),
        failures: tuple[type[Exception], ...] = ()) -> int:
    """Run the subcommand ``argv`` names (its parser sets ``run``)."""
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except usage_errors as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 2
    except Problem as problem:
        print(f"{program}: {problem.detail}", file=sys.stderr)
        return 1
    except failures as exc:  # their messages are written for operators (never secrets)
        print(f"{program}: {exc}", file=sys.stderr)
        return 1
