"""Bytes on the wire <-> stored messages: batch splitting, broker annotations, readable views.

The stored form is the sender's own encoding of the bare message; every delivery decodes it,
adds what the broker owns (header delivery count, ``x-opt-*`` annotations, dead-letter
properties) and re-encodes. That keeps the body in the section type it arrived in (a ``data``
section for SDK messages), which the SDK needs to decode a redelivered body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proton import Data, Described, Message, symbol, timestamp, ulong

from bench.harness.servicebus import names
from bench.harness.servicebus.store import Lock, StoredMessage

_SECTION_CODES = range(names.SECTION_HEADER, names.SECTION_FOOTER + 1)
_BODY_CODES = (names.SECTION_DATA, names.SECTION_SEQUENCE, names.SECTION_VALUE)


@dataclass
class _Section:
    """One message section: its descriptor code, decoded value and byte span in the encoding."""

    code: int
    value: Any
    start: int
    end: int


@dataclass
class MessageInfo:
    """A stored message as a test reads it: payload, SDK-visible properties and broker state."""

    body: Any
    message_id: str | None
    correlation_id: str | None
    reply_to: str | None
    session_id: str | None
    subject: str | None
    content_type: str | None
    application_properties: dict[str, Any] = field(default_factory=dict)
    delivery_count: int = 0
    sequence_number: int = 0
    dead_letter_reason: str | None = None
    dead_letter_error_description: str | None = None

    @property
    def properties(self) -> dict[str, Any]:
        """Short name for ``application_properties`` (AMQP's name for them)."""
        return self.application_properties


def split_transfer(raw: bytes) -> list[bytes]:
    """The messages carried by one transfer: several for an SDK batch, else just ``raw``.

    ``send_messages([...])`` sends one message of format 0x80013700 whose body is a run of
    ``data`` sections, each holding a complete encoded message (the envelope may also carry the
    first message's id and partition key). proton's Python binding does not expose the message
    format, so a batch is recognised by shape: a body of ``data`` sections only, each of which is
    itself a well-formed run of message sections.
    """
    bodies = [section for section in _sections(raw) if section.code in _BODY_CODES]
    if not bodies or any(section.code != names.SECTION_DATA for section in bodies):
        return [raw]
    inner = [bytes(section.value) for section in bodies]
    if all(_sections(payload) for payload in inner):
        return inner
    return [raw]


def message_id_of(encoded: bytes) -> str | None:
    """The ``message_id`` property of an encoded message, as the SDK would report it."""
    return _text(_decode(encoded).id)


def outgoing(stored: StoredMessage, lock: Lock | None) -> bytes:
    """The message to deliver: the stored one plus the broker-owned header and annotations."""
    message = _decode(stored.encoded)
    annotations = dict(message.annotations or {})
    annotations[symbol(names.SEQUENCE_NUMBER)] = stored.sequence_number
    annotations[symbol(names.ENQUEUED_TIME)] = timestamp(int(stored.enqueued_at * 1000))
    if lock is not None:
        annotations[symbol(names.LOCKED_UNTIL)] = timestamp(int(lock.locked_until * 1000))
        annotations[symbol(names.LOCK_TOKEN)] = lock.token
    message.annotations = annotations
    if stored.dead_letter_reason is not None or stored.dead_letter_description is not None:
        properties = dict(message.properties or {})
        properties[names.DEAD_LETTER_REASON] = stored.dead_letter_reason or ""
        properties[names.DEAD_LETTER_DESCRIPTION] = stored.dead_letter_description or ""
        message.properties = properties
    encoded = bytes(message.encode())
    rest = b"".join(encoded[s.start : s.end] for s in _sections(encoded) if s.code != names.SECTION_HEADER)
    return _header(message, stored.delivery_count) + rest


def _header(message: Message, delivery_count: int) -> bytes:
    """The header section with every field written out.

    proton omits fields at their default, and the SDK then reports ``delivery_count`` as None
    instead of 0 on a first delivery; Service Bus always sends it.
    """
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(names.SECTION_HEADER)
    data.put_list()
    data.enter()
    data.put_bool(bool(message.durable))
    data.put_ubyte(int(message.priority))
    if message.ttl:
        data.put_uint(int(message.ttl * 1000))
    else:
        data.put_null()
    data.put_bool(bool(message.first_acquirer))
    data.put_uint(delivery_count)
    data.exit()
    data.exit()
    return bytes(data.encode())


def encode_new(
    body: bytes | str,
    *,
    message_id: str | None = None,
    application_properties: dict[str, Any] | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    session_id: str | None = None,
    subject: str | None = None,
    content_type: str | None = None,
) -> bytes:
    """Encode a message the way the SDK would send it: the body as one ``data`` section."""
    message = Message(body=body.encode() if isinstance(body, str) else bytes(body))
    message.inferred = True
    message.id = message_id
    message.correlation_id = correlation_id
    message.reply_to = reply_to
    message.group_id = session_id
    message.subject = subject
    message.content_type = content_type
    message.properties = dict(application_properties) if application_properties else None
    return bytes(message.encode())


def info(stored: StoredMessage) -> MessageInfo:
    """A readable snapshot of ``stored``."""
    message = _decode(stored.encoded)
    return MessageInfo(
        body=message.body,
        message_id=_text(message.id),
        correlation_id=_text(message.correlation_id),
        reply_to=message.reply_to,
        session_id=message.group_id,
        subject=message.subject,
        content_type=message.content_type or None,
        application_properties={str(key): value for key, value in (message.properties or {}).items()},
        delivery_count=stored.delivery_count,
        sequence_number=stored.sequence_number,
        dead_letter_reason=stored.dead_letter_reason,
        dead_letter_error_description=stored.dead_letter_description,
    )


def _decode(encoded: bytes) -> Message:
    message = Message()
    message.decode(encoded)
    if isinstance(message.body, memoryview):
        # proton hands binary bodies out as views into its own buffer; own the bytes.
        message.body = bytes(message.body)
    return message


def _sections(raw: bytes) -> list[_Section]:
    """Split ``raw`` into its message sections; [] if it is not a run of message sections."""
    sections: list[_Section] = []
    offset = 0
    try:
        while offset < len(raw):
            data = Data()
            consumed = data.decode(raw[offset:])
            data.rewind()
            data.next()
            value = data.get_object()
            if consumed <= 0 or not isinstance(value, Described) or not isinstance(value.descriptor, ulong):
                return []
            if int(value.descriptor) not in _SECTION_CODES:
                return []
            # Views point into ``data``'s buffer, which dies with this iteration: copy them out.
            content = bytes(value.value) if isinstance(value.value, memoryview) else value.value
            sections.append(_Section(int(value.descriptor), content, offset, offset + consumed))
            offset += consumed
    except Exception:  # proton raises DataException and friends on anything that is not AMQP
        return []
    return sections


def _text(value: Any) -> str | None:
    """Message and correlation ids may be strings, UUIDs, ulongs or binary; the SDK shows strings."""
    if value is None:
        return None
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode(errors="replace")
    return str(value)
