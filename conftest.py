"""Fixtures every test folder may use: the real infrastructure, started once per run.

Tests that need RabbitMQ and PostgreSQL ask for ``infrastructure``; the Debian servers
are started on free loopback ports in a temporary directory (deploy's ``Stack`` with
``apps=False``). Outside CI a missing server skips such tests with the reason; with
``CI=true`` it fails them, so a broken machine can never turn them into silent skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_servers() -> None:
    from chancery_deploy import missing_infrastructure

    missing = missing_infrastructure()
    if not missing:
        return
    reason = f"server packages missing: {', '.join(missing)} (run `make system-packages` as root)"
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def infrastructure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """RabbitMQ and PostgreSQL (and nginx) for the whole run; yields the stack's variables."""
    require_servers()
    from chancery_deploy import Ports, Stack

    stack = Stack(tmp_path_factory.mktemp("infrastructure"), Ports.find_free(),
                  environ={"PATH": os.environ.get("PATH", "")})
    try:
        stack.up(apps=False)
        yield stack.env
    finally:
        stack.destroy()
