"""JSON codec for arq jobs and results: never pickle, so nothing from Redis can execute code when decoded."""

from __future__ import annotations

from typing import Any

import msgspec


def _encode_extra(value: Any) -> Any:
    """Exceptions (arq stores them as failed results) become a small, typed JSON object.

    msgspec itself converts some non-JSON values (datetimes, sets, bytes as base64, NaN as null, ...):
    docs/tasks.md lists them and tests/shared/test_serialization.py holds them. Anything else
    is refused here."""
    if isinstance(value, BaseException):
        return {"error_type": type(value).__name__, "message": str(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encoder = msgspec.json.Encoder(enc_hook=_encode_extra)
_decoder = msgspec.json.Decoder()


def dumps(value: Any) -> bytes:
    """arq ``job_serializer``: JSON bytes."""
    return _encoder.encode(value)


def loads(data: bytes) -> Any:
    """arq ``job_deserializer``: plain JSON values only."""
    return _decoder.decode(data)
