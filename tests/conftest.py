"""The running Chancery stacks shared by the cross-service tests (end to end, authz).

Each is started once per test run and shared: the embedded process in this test
process, and the distributed stack from deploy/ on free loopback ports. Tests that use
them create their own accounts or names, so they do not depend on one another.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from conftest import require_servers  # the repository root's conftest

PASSWORD = "e2e-dev-password-123"


@dataclass(frozen=True)
class RunningStack:
    mode: str
    base_url: str
    broker_url: str


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory) -> Iterator[RunningStack]:
    from chancery_shared.embedded import EmbeddedChancery
    from chancery_shared.testing import purge_broker

    purge_broker("memory://")
    var = tmp_path_factory.mktemp("embedded")
    chancery = EmbeddedChancery({**os.environ, "CHANCERY_VAR_DIR": str(var),
                                 "CHANCERY_BROKER_URL": "memory://",
                                 "CHANCERY_DEV_BOOTSTRAP": "true",
                                 "CHANCERY_DEV_PASSWORD": PASSWORD})
    chancery.start()
    try:
        yield RunningStack("embedded", chancery.serve_in_background(), "memory://")
    finally:
        chancery.stop()


@pytest.fixture(scope="session")
def distributed_stack(tmp_path_factory) -> Iterator[RunningStack]:
    require_servers()
    from chancery_deploy import Ports, Stack

    var = tmp_path_factory.mktemp("distributed")
    stack = Stack(var_dir=var, ports=Ports.find_free(),
                  environ={**os.environ, "CHANCERY_DEV_PASSWORD": PASSWORD,
                           "CHANCERY_DEV_BOOTSTRAP": "true"})
    try:
        stack.up()
        yield RunningStack("distributed", stack.base_url, stack.env["CHANCERY_BROKER_URL"])
    finally:
        stack.down()


@pytest.fixture(params=["embedded", "distributed"])
def stack(request) -> RunningStack:
    """Run the test once in each mode."""
    return request.getfixturevalue(f"{request.param}_stack")
