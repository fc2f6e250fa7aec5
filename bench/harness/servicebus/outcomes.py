"""Receive-link settlement: apply the SDK's disposition, and choose the outcome to echo back.

The SDK's peek-lock receiver attaches with rcv-settle-mode *second*: it sends its outcome
unsettled and waits for the broker to settle with the outcome it applied (``accepted`` for
complete, ``modified`` for abandon, ``rejected`` *without* an error for dead-letter). A
``rejected`` that carries an error is how the broker says the settlement failed, so that is what
a lost lock gets.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proton import Condition, Delivery, Disposition

from bench.harness.servicebus import names
from bench.harness.servicebus.store import Entity, LockLostError

if TYPE_CHECKING:
    from proton._delivery import DispositionType  # the enum proton's public API returns but does not export

TERMINAL = (Delivery.ACCEPTED, Delivery.REJECTED, Delivery.RELEASED, Delivery.MODIFIED)


@dataclass
class Echo:
    """The disposition the broker settles with."""

    state: DispositionType | int
    condition: Condition | None = None


def apply(entity: Entity, token: uuid.UUID, state: DispositionType | int, remote: Disposition) -> Echo:
    """Apply the receiver's outcome ``state`` to the message locked under ``token``."""
    try:
        return _apply(entity, token, state, remote)
    except LockLostError:
        return lock_lost()


def lock_lost() -> Echo:
    """The echo for a settlement whose lock is gone."""
    description = "The lock supplied is invalid: it expired or the message was already settled."
    return Echo(Delivery.REJECTED, Condition(names.MESSAGE_LOCK_LOST, description))


def _apply(entity: Entity, token: uuid.UUID, state: DispositionType | int, remote: Disposition) -> Echo:
    if state == Delivery.ACCEPTED:
        entity.complete(token)
        return Echo(Delivery.ACCEPTED)
    if state == Delivery.REJECTED:
        reason, description = _dead_letter_details(remote.condition)
        entity.dead_letter(token, reason, description)
        return Echo(Delivery.REJECTED)
    if state == Delivery.MODIFIED and remote.undeliverable:
        # That is the SDK's defer, which needs receive-by-sequence-number: not served here.
        return Echo(Delivery.REJECTED, Condition(names.NOT_IMPLEMENTED, "defer is not supported"))
    if state == Delivery.MODIFIED and remote.failed:
        entity.abandon(token)
        return Echo(Delivery.MODIFIED)
    # `released` (the SDK returning an unwanted prefetched message) costs no delivery attempt.
    entity.release(token)
    return Echo(state)


def _dead_letter_details(condition: Condition | None) -> tuple[str | None, str | None]:
    """Reason and description from the ``rejected`` error: its info map, else its description."""
    if condition is None:
        return None, None
    info: dict[str, Any] = {str(key): value for key, value in (condition.info or {}).items()}
    reason = info.get(names.DEAD_LETTER_REASON)
    description = info.get(names.DEAD_LETTER_DESCRIPTION, condition.description)
    return _text(reason), _text(description)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return bytes(value).decode() if isinstance(value, bytes | memoryview) else str(value)
