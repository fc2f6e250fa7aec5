"""In-memory queues with Service Bus peek-lock semantics, free of any AMQP detail.

The AMQP server and the Python API both change state only through these methods, under one
re-entrant lock, so a test thread and the reactor thread never see a half-moved message.
"""

from __future__ import annotations

import heapq
import threading
import uuid
from dataclasses import dataclass, field

from bench.harness.servicebus import names


@dataclass
class QueueSettings:
    """Per-queue behaviour, mirroring the Service Bus queue properties of the same names.

    - ``max_delivery_count``: deliveries allowed before the message is dead-lettered with
      ``MaxDeliveryCountExceeded`` (Service Bus default 10).
    - ``lock_duration``: seconds a peek-lock lasts before the message is redelivered.
    """

    max_delivery_count: int = 10
    lock_duration: float = 60.0


@dataclass
class StoredMessage:
    """A message as the broker keeps it: the sender's encoded bare message plus broker state.

    Keeping the sender's bytes (rather than re-building the message) is what preserves the body
    section type, so a redelivered message decodes in the SDK exactly like the first delivery.
    """

    sequence_number: int
    encoded: bytes
    enqueued_at: float
    message_id: str | None = None
    delivery_count: int = 0
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None


@dataclass
class Lock:
    """A peek-lock held on one message; ``token`` is what the SDK reports as ``lock_token``."""

    message: StoredMessage
    locked_until: float
    token: uuid.UUID = field(default_factory=uuid.uuid4)


class LockLostError(Exception):
    """The lock token is unknown: settled already, expired, or never issued."""


class Entity:
    """One receivable store (a queue or its dead-letter sub-queue) with peek-lock semantics.

    Messages wait in sequence-number order, so an abandoned or released message goes back to where
    it was rather than to the tail. ``dead_letter`` is where failed deliveries go once they reach
    the delivery limit; the dead-letter sub-queue itself has none, as in Service Bus.
    """

    def __init__(
        self, path: str, settings: QueueSettings, guard: threading.RLock, dead_letter: Entity | None = None
    ) -> None:
        self.path = path
        self.settings = settings
        self._completed: list[str | None] = []
        self._guard = guard
        self._dead_letter = dead_letter
        self._waiting: list[tuple[int, StoredMessage]] = []
        self._locks: dict[uuid.UUID, Lock] = {}

    def add(self, message: StoredMessage) -> None:
        """Make ``message`` available to receivers."""
        with self._guard:
            heapq.heappush(self._waiting, (message.sequence_number, message))

    def take(self, now: float) -> Lock | None:
        """Lock the first available message for ``lock_duration`` seconds, or None when empty."""
        with self._guard:
            if not self._waiting:
                return None
            _, message = heapq.heappop(self._waiting)
            lock = Lock(message, now + self.settings.lock_duration)
            self._locks[lock.token] = lock
            return lock

    def complete(self, token: uuid.UUID) -> StoredMessage:
        """Remove the locked message for good."""
        with self._guard:
            message = self._unlock(token)
            self._completed.append(message.message_id)
            return message

    def release(self, token: uuid.UUID) -> None:
        """Return an unprocessed message without counting a delivery (AMQP ``released``)."""
        with self._guard:
            self.add(self._unlock(token))

    def abandon(self, token: uuid.UUID) -> None:
        """Return a message whose processing failed: one more delivery counted."""
        with self._guard:
            self._count_failed_delivery(self._unlock(token))

    def dead_letter(self, token: uuid.UUID, reason: str | None, description: str | None) -> None:
        """Move the locked message to the dead-letter sub-queue with the caller's reason."""
        with self._guard:
            message = self._unlock(token)
            if self._dead_letter is None:
                # Dead-lettering from the dead-letter queue keeps the message where it is.
                self.add(message)
                return
            self._move_to_dead_letter(message, reason, description)

    def renew(self, token: uuid.UUID, now: float) -> float:
        """Extend a held lock by ``lock_duration`` from now; returns the new expiry."""
        with self._guard:
            lock = self._locks.get(token)
            if lock is None or lock.locked_until <= now:
                raise LockLostError(str(token))
            lock.locked_until = now + self.settings.lock_duration
            return lock.locked_until

    def expire_locks(self, now: float) -> list[uuid.UUID]:
        """Redeliver every message whose lock ran out, counting it as a failed delivery."""
        with self._guard:
            expired = [token for token, lock in self._locks.items() if lock.locked_until <= now]
            for token in expired:
                self._count_failed_delivery(self._locks.pop(token).message)
            return expired

    def waiting(self) -> list[StoredMessage]:
        """Snapshot of the available messages in delivery order."""
        with self._guard:
            return [message for _, message in sorted(self._waiting, key=lambda item: item[0])]

    def locked(self) -> list[Lock]:
        """Snapshot of the locks currently held."""
        with self._guard:
            return list(self._locks.values())

    def completed_ids(self) -> list[str | None]:
        """Message ids of every completed message, in completion order."""
        with self._guard:
            return list(self._completed)

    def _unlock(self, token: uuid.UUID) -> StoredMessage:
        lock = self._locks.pop(token, None)
        if lock is None:
            raise LockLostError(str(token))
        return lock.message

    def _count_failed_delivery(self, message: StoredMessage) -> None:
        message.delivery_count += 1
        limit = self.settings.max_delivery_count
        if self._dead_letter is not None and message.delivery_count >= limit:
            description = f"Message could not be consumed after {limit} delivery attempts."
            self._move_to_dead_letter(message, names.MAX_DELIVERY_COUNT_EXCEEDED, description)
        else:
            self.add(message)

    def _move_to_dead_letter(self, message: StoredMessage, reason: str | None, description: str | None) -> None:
        assert self._dead_letter is not None
        message.dead_letter_reason = reason
        message.dead_letter_description = description
        self._dead_letter.add(message)


class Queue:
    """A named queue: its main entity, its ``$DeadLetterQueue`` and its sequence numbers."""

    def __init__(self, name: str, settings: QueueSettings, guard: threading.RLock) -> None:
        self.name = name
        self.settings = settings
        self.dead_letter = Entity(name + names.DEAD_LETTER_SUFFIX, settings, guard)
        self.main = Entity(name, settings, guard, dead_letter=self.dead_letter)
        self._guard = guard
        self._next_sequence = 1

    def enqueue(self, encoded: bytes, message_id: str | None, now: float) -> StoredMessage:
        """Store one sent message, stamping the sequence number the SDK will report."""
        with self._guard:
            message = StoredMessage(self._next_sequence, encoded, now, message_id)
            self._next_sequence += 1
            self.main.add(message)
            return message


class Namespace:
    """All queues of one endpoint; queues appear on first use, as request/reply needs."""

    def __init__(self, defaults: QueueSettings) -> None:
        self.guard = threading.RLock()
        self._defaults = defaults
        self._queues: dict[str, Queue] = {}

    def create_queue(
        self, name: str, *, max_delivery_count: int | None = None, lock_duration: float | None = None
    ) -> Queue:
        """Create ``name`` (or reconfigure it if it exists) with explicit settings."""
        with self.guard:
            queue = self.queue(name)
            if max_delivery_count is not None:
                queue.settings.max_delivery_count = max_delivery_count
            if lock_duration is not None:
                queue.settings.lock_duration = lock_duration
            return queue

    def queue(self, name: str) -> Queue:
        """The queue called ``name`` (case-insensitive, as in Service Bus), created if missing."""
        with self.guard:
            key = name.lower()
            if key not in self._queues:
                settings = QueueSettings(self._defaults.max_delivery_count, self._defaults.lock_duration)
                self._queues[key] = Queue(name, settings, self.guard)
            return self._queues[key]

    def entities(self) -> list[Entity]:
        """Every receivable entity, for the lock-expiry sweep."""
        with self.guard:
            return [entity for queue in self._queues.values() for entity in (queue.main, queue.dead_letter)]
