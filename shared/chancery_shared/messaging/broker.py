"""Broker connections: the same code on ``amqp://`` (RabbitMQ) and ``memory://`` (embedded)."""

from __future__ import annotations

from kombu import Connection


def is_memory(url: str) -> bool:
    return url.startswith("memory://")


def connect(url: str) -> Connection:
    """A new connection with the options our delivery guarantees need.

    On RabbitMQ: publisher confirms (``publish`` returns only once the broker has the
    message) and heartbeats. In memory: a short polling interval, so a hop through the
    bus takes milliseconds instead of kombu's default second.
    """
    if is_memory(url):
        return Connection(url, transport_options={"polling_interval": 0.005})
    return Connection(url, heartbeat=30, transport_options={"confirm_publish": True},
                      connect_timeout=10)
