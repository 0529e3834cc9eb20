"""Stacks for the end-to-end tests: the embedded process, and the distributed stack."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

PASSWORD = "e2e-dev-password-123"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> Iterator[tuple[str, str]]:
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
        yield chancery.serve_in_background(), "memory://"
    finally:
        chancery.stop()


def missing_servers() -> list[str]:
    needed = {"rabbitmq-server": "/usr/lib/rabbitmq/bin/rabbitmq-server", "nginx": "nginx",
              "openssl": "openssl"}
    missing = [name for name, exe in needed.items() if not shutil.which(exe)]
    if not any(os.path.exists(f"/usr/lib/postgresql/{v}/bin/initdb") for v in range(12, 20)):
        missing.append("postgresql")
    return missing


@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> Iterator[tuple[str, str]]:
    missing = missing_servers()
    if missing:
        message = f"the distributed stack needs {', '.join(missing)} (make system-packages)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from chancery_deploy import Ports, Stack

    var = tmp_path_factory.mktemp("distributed")
    stack = Stack(var_dir=var, ports=Ports.find_free(),
                  environ={**os.environ, "CHANCERY_DEV_PASSWORD": PASSWORD,
                           "CHANCERY_DEV_BOOTSTRAP": "true"})
    try:
        stack.up()
        yield stack.base_url, stack.env["CHANCERY_BROKER_URL"]
    finally:
        stack.down()
