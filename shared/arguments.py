"""Binding a submit's positional and keyword arguments to a task's parameter names (worker and API alike)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.errors import InvalidArguments


def bind(positional: Sequence[str], args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """All arguments by name; ``InvalidArguments`` for too many positional ones or one given twice."""
    if not args:
        return dict(kwargs)
    if len(args) > len(positional):
        most = f"takes at most {len(positional)} positional argument{'' if len(positional) == 1 else 's'}"
        raise InvalidArguments([{"loc": ["args"], "msg": f"{most} ({len(args)} given)"}])
    bound = dict(zip(positional, args, strict=False))
    clashes = sorted(set(bound) & set(kwargs))
    if clashes:
        raise InvalidArguments([{"loc": ["kwargs", n], "msg": "given positionally too"} for n in clashes])
    return bound | dict(kwargs)
