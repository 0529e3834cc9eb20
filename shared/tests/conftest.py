"""The bus the messaging tests run on (``OutboxBus``): embedded, and on the real servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from chancery_shared.testing import OutboxBus


@pytest.fixture(params=["sqlite+memory", "postgresql+rabbitmq"])
def bus(request, tmp_path) -> Iterator[OutboxBus]:
    """The same mechanisms on the embedded parts and on the real servers."""
    if request.param == "sqlite+memory":
        # a broker of its own: an embedded stack of the same run may be on ``memory://``
        b = OutboxBus(f"sqlite:///{tmp_path / 'bus.db'}", f"memory://bus-{uuid.uuid4().hex}")
    else:
        env = request.getfixturevalue("infrastructure")
        b = OutboxBus(env["CHANCERY_ORDERS_DATABASE_URL"], env["CHANCERY_BROKER_URL"])
    yield b
    b.close()


@pytest.fixture
def pg_bus(infrastructure) -> Iterator[OutboxBus]:
    """The bus on PostgreSQL and RabbitMQ only."""
    b = OutboxBus(infrastructure["CHANCERY_ORDERS_DATABASE_URL"],
                  infrastructure["CHANCERY_BROKER_URL"])
    yield b
    b.close()
