"""Shared fixtures for the deployment tests.

Server-backed tests need the Debian server packages. Outside CI a missing server skips
them with the reason; with CI=true it fails them, so a broken CI image cannot turn the
distributed tests into silent skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from chancery_deploy import Ports, Stack

from conftest import require_servers  # the repository root's conftest


@pytest.fixture(scope="module")
def infra_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """PostgreSQL, RabbitMQ and nginx only, on free non-default ports in a temp var dir.

    pytest's temp dirs are private (0700), so as root this also exercises the move of
    the PostgreSQL cluster to a postgres-owned directory.
    """
    require_servers()
    var_dir: Path = tmp_path_factory.mktemp("stack-var")
    stack = Stack(var_dir, Ports.find_free(), environ={"PATH": os.environ.get("PATH", "")})
    try:
        stack.up(apps=False)
        yield stack
    finally:
        stack.destroy()
