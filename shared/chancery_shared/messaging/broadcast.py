"""Events every process must hear, not one process of a service.

The service queues of ``topology`` are shared by a service's processes: each message
goes to one of them (competing consumers). Some news must reach every process — each
gunicorn worker keeps its own in-memory deny list of revoked access
(``chancery_shared.auth.revocations``). A :class:`BroadcastListener` gives its process a
queue of its own: server-named after the process, bound to the events exchange with the
routing keys it needs, ``exclusive`` (only this connection may use it) and
``auto_delete`` (it disappears with the process), so nothing piles up for a process that
is gone. It is not durable and has no inbox: what it feeds must be idempotent, in memory,
and able to live with the events that happened while the process was not listening
(before it started, or while the broker connection was lost).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from kombu import Connection, Consumer, Message, Queue, binding
from kombu.mixins import ConsumerMixin
from marshmallow import ValidationError

from chancery_shared.messaging import broker, topology
from chancery_shared.messaging import envelope as envelopes
from chancery_shared.messaging.envelope import Envelope

log = logging.getLogger(__name__)


def process_queue_name(purpose: str) -> str:
    """``<purpose>.<host>.<pid>.<random>``: one queue per listener, named for operators."""
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{purpose}.{host}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


class BroadcastListener(ConsumerMixin):
    """Consumes ``routing_keys`` on a queue of this process's own; calls ``on_event``.

    ``ready`` is set once the queue is bound and consumed (tests and start-up wait for
    it); ``heard`` counts the messages handed to ``on_event``.
    """

    def __init__(self, broker_url: str, routing_keys: Iterable[str],
                 on_event: Callable[[Envelope], Any], *, purpose: str):
        self.routing_keys = tuple(routing_keys)
        self.queue = Queue(
            process_queue_name(purpose), exchange=topology.EVENTS_EXCHANGE,
            bindings=[binding(topology.EVENTS_EXCHANGE, routing_key=key)
                      for key in self.routing_keys],
            durable=False, exclusive=True, auto_delete=True)
        self._on_event = on_event
        self.connection: Connection = broker.connect(broker_url)
        self.ready = threading.Event()
        self.heard = 0

    def get_consumers(self, consumer_cls: type[Consumer], channel: Any) -> list[Consumer]:
        topology.EVENTS_EXCHANGE(channel).declare()
        return [consumer_cls(queues=[self.queue], on_message=self.on_message, no_ack=True,
                             accept=["application/json"])]

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any,
                         **kwargs: Any) -> None:
        self.ready.set()

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        self.ready.clear()  # events published until we are back are not heard
        super().on_connection_error(exc, interval)

    def on_message(self, message: Message) -> None:
        try:
            event = envelopes.parse(message.body)
        except (ValidationError, ValueError) as exc:
            log.warning("%s: ignoring an invalid message: %s", self.queue.name, exc)
            return
        try:
            self._on_event(event)
        except Exception:  # noqa: BLE001 - one bad event must not stop the listener
            log.exception("%s: handling %s %s failed", self.queue.name, event.type,
                          event.event_id)
            return
        self.heard += 1

    def run_until(self, stop: threading.Event) -> None:
        watcher = threading.Thread(target=self._watch_stop, args=(stop,), daemon=True)
        watcher.start()
        self.run()

    def start(self, stop: threading.Event | None = None, *, name: str = "broadcast",
              ) -> threading.Thread:
        """Run on a daemon thread of its own (until ``stop`` is set, if given)."""
        thread = threading.Thread(target=self.run_until, args=(stop or threading.Event(),),
                                  name=name, daemon=True)
        thread.start()
        return thread

    def _watch_stop(self, stop: threading.Event) -> None:
        stop.wait()
        self.should_stop = True
