"""The fault runs' own distributed stack, started once for the module.

Its own, not the session's ``distributed_stack``: the runs kill RabbitMQ, PostgreSQL and
application processes, and compare every event the stack ever emitted with the audit
log, so they must neither disturb the other end-to-end tests nor see their traffic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from conftest import require_servers  # the repository root's conftest
from tests.conftest import stack_environment

if TYPE_CHECKING:
    from chancery_deploy import Stack


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory, loopback_dns) -> Iterator[Stack]:
    """A full distributed stack (two signer workers) whose processes the tests may kill."""
    require_servers()
    from chancery_deploy import Ports, Stack

    stack = Stack(var_dir=tmp_path_factory.mktemp("chaos"), ports=Ports.find_free(),
                  signer_workers=2,
                  environ={**os.environ, **stack_environment(loopback_dns)})
    try:
        stack.up()
        yield stack
    finally:
        stack.destroy()  # the same handle restarted what it killed, so it stops those too
