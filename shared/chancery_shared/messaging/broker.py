"""Broker connections: the same code on ``amqp://`` (RabbitMQ) and ``memory://`` (embedded).

kombu's in-memory transport keeps its queues, exchanges and bindings in class attributes:
every ``memory://`` connection of a process shares one broker. That is what the embedded
mode wants (one process, one bus), but two buses in one process — an embedded stack
serving end-to-end tests while another test drives its own relay — would consume each
other's messages. So ``memory://NAME`` is a broker of its own, shared by every connection
to the same name and by nothing else; plain ``memory://`` stays the process-wide one.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from urllib.parse import urlsplit

from kombu import Connection
from kombu.transport import memory, virtual

_named_lock = threading.Lock()
_named: dict[str, type[memory.Transport]] = {}


def is_memory(url: str) -> bool:
    return url.startswith("memory://")


def memory_broker_name(url: str) -> str:
    """The name of an in-memory broker URL: ``''`` for the process-wide ``memory://``."""
    parts = urlsplit(url)
    return (parts.netloc + parts.path).strip("/")


def _memory_transport(name: str) -> type[memory.Transport]:
    """The transport class of the in-memory broker called ``name``, made once per name:
    its own queues, fan-out table and exchange state."""
    with _named_lock:
        transport = _named.get(name)
        if transport is None:
            channel = type(f"MemoryChannel_{name}", (memory.Channel,),
                           {"queues": {}, "events": defaultdict(set)})
            transport = type(f"MemoryTransport_{name}", (memory.Transport,),
                             {"Channel": channel, "global_state": virtual.BrokerState()})
            _named[name] = transport
        return transport


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
        options = {"polling_interval": 0.005}
        name = memory_broker_name(url)
        if not name:
            return Connection(url, transport_options=options)
        return Connection("memory://", transport=_memory_transport(name),
                          transport_options=options)
    return Connection(url, heartbeat=heartbeat,
                      transport_options={"confirm_publish": confirm_each_publish},
                      connect_timeout=10)
