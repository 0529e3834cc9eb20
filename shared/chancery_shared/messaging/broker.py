"""Broker connections: the same code on ``amqp://`` (RabbitMQ) and ``memory://`` (embedded)."""

from __future__ import annotations

from kombu import Connection


def is_memory(url: str) -> bool:
    return url.startswith("memory://")


def connect(url: str, *, confirm_each_publish: bool = True, heartbeat: int = 30) -> Connection:
    """A new connection with the options our delivery guarantees need.

    On RabbitMQ: publisher confirms (``publish`` returns only once the broker has the
    message) and heartbeats. In memory: a short polling interval, so a hop through the
    bus takes milliseconds instead of kombu's default second.

    ``confirm_each_publish=False`` (the outbox relay) leaves the channels out of confirm
    mode and ``publish`` without its wait: the caller selects confirm mode itself and
    waits once for the confirms of a whole batch (``relay.ConfirmedPublisher``).
    ``heartbeat=0`` turns heartbeats off, for a connection whose owner never services
    them (the relay, which blocks on PostgreSQL between batches): RabbitMQ would close it
    after two missed beats, and its next batch would fail and reconnect.
    """
    if is_memory(url):
        return Connection(url, transport_options={"polling_interval": 0.005})
    return Connection(url, heartbeat=heartbeat,
                      transport_options={"confirm_publish": confirm_each_publish},
                      connect_timeout=10)
