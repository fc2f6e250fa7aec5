"""``LocalServiceBus``: start the endpoint on a loopback port in a thread, and inspect its queues.

Tests talk to it twice over: through the real ``azure-servicebus`` SDK using
:attr:`LocalServiceBus.connection_string`, and directly through the methods below to inject
messages and check what the broker holds, without racing the SDK.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

from proton.reactor import Container

from bench.harness.servicebus import codec
from bench.harness.servicebus.codec import MessageInfo
from bench.harness.servicebus.server import Broker
from bench.harness.servicebus.store import Namespace, QueueSettings

log = logging.getLogger(__name__)

CONNECTION_STRING = (
    "Endpoint=sb://{host}:{port};SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true"
)
_PORT_ATTEMPTS = 20


class LocalServiceBus:
    """An Azure Service Bus-compatible AMQP 1.0 endpoint for tests.

    - ``host``/``port``: where to listen; port 0 picks a free one.
    - ``max_delivery_count``/``lock_duration``: defaults for queues created on first use.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_delivery_count: int = 10,
        lock_duration: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self._namespace = Namespace(QueueSettings(max_delivery_count, lock_duration))
        self._broker = Broker(self._namespace)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalServiceBus:
        """Bind the port (so clients can connect as soon as this returns) and run the reactor."""
        container = Container(self._broker)
        self._broker.acceptor = self._listen(container)
        self._thread = threading.Thread(target=self._run, args=(container,), name="local-servicebus", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close client connections and the listener, and wait for the reactor thread to end."""
        if self._thread is None:
            return
        self._broker.request_stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("LocalServiceBus reactor did not stop in time")
        self._thread = None
        if self._error is not None:
            raise RuntimeError("LocalServiceBus reactor failed") from self._error

    def __enter__(self) -> LocalServiceBus:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def connection_string(self) -> str:
        """For ``ServiceBusClient.from_connection_string``; the emulator flag makes the SDK skip TLS."""
        return CONNECTION_STRING.format(host=self.host, port=self.port)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _listen(self, container: Container) -> Any:
        if self.port:
            return container.listen(f"{self.host}:{self.port}")
        for _ in range(_PORT_ATTEMPTS):
            # proton cannot report the port it bound, so pick one and retry if someone takes it first.
            self.port = _free_port(self.host)
            try:
                return container.listen(f"{self.host}:{self.port}")
            except OSError:
                continue
        raise RuntimeError(f"no free port found on {self.host}")

    def _run(self, container: Container) -> None:
        try:
            container.run()
        except BaseException as error:  # surfaced by stop(): a dead reactor must fail the test
            log.exception("LocalServiceBus reactor failed")
            self._error = error

    # -- queues ------------------------------------------------------------------------------

    def create_queue(
        self, name: str, *, max_delivery_count: int | None = None, lock_duration: float | None = None
    ) -> None:
        """Create (or reconfigure) a queue; queues also appear on first use with the defaults."""
        self._namespace.create_queue(name, max_delivery_count=max_delivery_count, lock_duration=lock_duration)

    def send(
        self,
        queue: str,
        body: bytes | str,
        *,
        message_id: str | None = None,
        application_properties: dict[str, Any] | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        session_id: str | None = None,
        subject: str | None = None,
        content_type: str | None = None,
    ) -> int:
        """Enqueue a message as if an SDK sender had sent it; returns its sequence number."""
        encoded = codec.encode_new(
            body,
            message_id=message_id,
            application_properties=application_properties,
            reply_to=reply_to,
            correlation_id=correlation_id,
            session_id=session_id,
            subject=subject,
            content_type=content_type,
        )
        return self._namespace.queue(queue).enqueue(encoded, message_id, time.time()).sequence_number

    def active_count(self, queue: str) -> int:
        """Messages waiting to be received (not locked, not dead-lettered)."""
        return len(self._namespace.queue(queue).main.waiting())

    def locked_count(self, queue: str) -> int:
        """Messages currently held under a peek-lock."""
        return len(self._namespace.queue(queue).main.locked())

    def dead_letter_count(self, queue: str) -> int:
        """Messages in the queue's ``$DeadLetterQueue``, locked or not."""
        dead_letter = self._namespace.queue(queue).dead_letter
        return len(dead_letter.waiting()) + len(dead_letter.locked())

    def peek(self, queue: str) -> list[MessageInfo]:
        """The waiting messages, in delivery order."""
        return [codec.info(message) for message in self._namespace.queue(queue).main.waiting()]

    def dead_letters(self, queue: str) -> list[MessageInfo]:
        """The dead-lettered messages, with their reason and description."""
        dead_letter = self._namespace.queue(queue).dead_letter
        stored = dead_letter.waiting() + [lock.message for lock in dead_letter.locked()]
        return [codec.info(message) for message in sorted(stored, key=lambda m: m.sequence_number)]

    def hold_settlements(self, hold: bool = True) -> None:
        """Hold (or release) settlements sent on receive links, unanswered and unapplied."""
        if hold:
            self._broker.hold_outcomes.set()
        else:
            self._broker.hold_outcomes.clear()

    def held_settlements(self) -> int:
        """Settlements waiting because of ``hold_settlements``."""
        return len(self._broker._held)  # read across threads: a list length is safe enough for polling

    def completed_ids(self, queue: str) -> list[str | None]:
        """Ids of the messages settled with complete, in the order they were completed."""
        return self._namespace.queue(queue).main.completed_ids()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
