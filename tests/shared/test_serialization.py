"""What a task may return (or publish as a partial): the exact conversions docs/tasks.md lists."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from shared.serialization import dumps


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Model(BaseModel):
    x: int


# Keep in step with the list in docs/tasks.md, "What a task may return".
CONVERSIONS: list[tuple[Any, Any]] = [
    (dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC), "2024-05-01T12:30:00Z"),
    (dt.datetime(2024, 5, 1, 12, 30), "2024-05-01T12:30:00"),  # naive stays naive
    (dt.date(2024, 5, 1), "2024-05-01"),
    (dt.time(12, 30), "12:30:00"),
    (dt.timedelta(seconds=90), "PT90S"),
    ({3}, [3]),
    (frozenset({3}), [3]),
    ((1, 2), [1, 2]),
    (b"hi", "aGk="),
    (bytearray(b"hi"), "aGk="),
    (float("nan"), None),
    (float("inf"), None),
    (float("-inf"), None),
    (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    (decimal.Decimal("1.10"), "1.10"),
    (Color.RED, "red"),
    (Point(1, 2), {"x": 1, "y": 2}),
    (2**70, 2**70),
]


@pytest.mark.parametrize(("value", "json_value"), CONVERSIONS)
def test_documented_conversions(value: Any, json_value: Any) -> None:
    assert json.loads(dumps(value)) == json_value


@pytest.mark.parametrize("value", [object(), Model(x=1), {1: {"nested": object()}}])
def test_anything_else_is_refused(value: Any) -> None:
    with pytest.raises(TypeError, match="is not JSON serializable"):
        dumps(value)
