"""Task arguments from the command line: ``--arg key=value`` and ``--args-json``.

A ``--arg`` value is typed by the task's published schema (``GET /openapi.json``): ``--arg message=123`` stays
the string ``"123"`` for a ``str`` parameter and becomes the number 123 for an ``int`` one; a value that cannot be
what the parameter takes is a usage error naming both. Without a schema (an argument the task does not declare,
a task no worker offers, an API without the document) the value is JSON when it parses, else a string.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

# The order a value is tried in when a parameter takes several types (a string, if allowed, always fits).
_ORDER = ("null", "integer", "number", "boolean", "array", "object")
_KINDS = {
    "null": "null",
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
    "array": "a JSON array",
    "object": "a JSON object",
    "string": "a string",
}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _no_constants(name: str) -> Any:
    raise ValueError(name)  # NaN/Infinity are not JSON; "--arg x=NaN" stays the string "NaN"


def parse_value(text: str) -> Any:
    """``42`` -> 42, ``true`` -> True, ``[1,2]`` -> [1, 2], ``{"a":1}`` -> {"a": 1}, anything else -> the string.
    Only for a value whose parameter has no known type."""
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ValueError:
        return text


def split_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("a=1", "b=x=y")`` -> ``{"a": "1", "b": "x=y"}``, the values as typed."""
    raw: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--arg")
        raw[key] = value
    return raw


def parse_pairs(pairs: tuple[str, ...], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Each ``--arg``'s value typed by ``schema`` (the task's arguments schema), or guessed without one."""
    properties = (schema or {}).get("properties") or {}
    typed: dict[str, Any] = {}
    for key, text in split_pairs(pairs).items():
        prop = properties.get(key)
        types = schema_types(prop) if isinstance(prop, dict) else set()
        typed[key] = convert(key, text, types) if types else parse_value(text)
    return typed


def schema_types(prop: Mapping[str, Any]) -> set[str]:
    """The JSON types a parameter's schema allows (``int | None`` -> integer, null); empty when any value is."""
    declared = prop.get("type")
    if isinstance(declared, str):
        types = {declared}
    elif isinstance(declared, list):
        types = {str(t) for t in declared}
    elif "enum" in prop or "const" in prop:
        values = prop.get("enum", [prop.get("const")])
        types = {_json_type(v) for v in values}
    else:
        types = set()
    for key in ("anyOf", "oneOf", "allOf"):
        for option in prop.get(key) or []:
            if isinstance(option, dict):
                more = schema_types(option)
                if not more:
                    return set()  # one branch takes anything, so the whole does
                types |= more
    return types


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "string"


def convert(key: str, text: str, types: set[str]) -> Any:
    """``text`` as the first of ``types`` it can be; a string whenever strings are allowed."""
    if "string" in types:
        return text
    for kind in _ORDER:
        if kind in types:
            try:
                return _as(kind, text)
            except ValueError:
                continue
    kinds = " or ".join(_KINDS.get(t, t) for t in sorted(types, key=lambda t: (t == "null", _rank(t))))
    raise click.BadParameter(f"{key}={text!r}: {key} takes {kinds}, and {text!r} is not one", param_hint="--arg")


def _rank(kind: str) -> int:
    return _ORDER.index(kind) if kind in _ORDER else len(_ORDER)


def _as(kind: str, text: str) -> Any:
    """``text`` as one JSON type, or ValueError."""
    if kind == "null":
        if text.strip() in ("", "null"):
            return None
    elif kind == "boolean":
        if text.strip().lower() in _TRUE | _FALSE:
            return text.strip().lower() in _TRUE
    elif kind == "integer":
        value = json.loads(text, parse_constant=_no_constants)
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e3, 3.0: a whole number, which JSON Schema counts as an integer
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "number":
        value = json.loads(text, parse_constant=_no_constants)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    elif kind in ("array", "object"):
        value = json.loads(text, parse_constant=_no_constants)
        if isinstance(value, list if kind == "array" else dict):
            return value
    raise ValueError(text)


def parse_args_json(args_json: str | None) -> tuple[list[Any], dict[str, Any]]:
    """``--args-json``: an object (keyword arguments) or an array (positional ones)."""
    if args_json is None:
        return [], {}
    try:
        parsed = json.loads(args_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--args-json") from None
    if isinstance(parsed, dict):
        return [], parsed
    if isinstance(parsed, list):
        return parsed, {}
    raise click.BadParameter("must be a JSON object or array", param_hint="--args-json")


def task_arguments(
    pairs: tuple[str, ...], args_json: str | None, schema: Mapping[str, Any] | None = None
) -> tuple[list[Any], dict[str, Any]]:
    """(args, kwargs): ``--args-json`` is an object (keyword arguments) or an array (positional ones);
    ``--arg`` pairs are keyword arguments, typed by ``schema``, and win over the same keys in ``--args-json``."""
    args, kwargs = parse_args_json(args_json)
    return args, kwargs | parse_pairs(pairs, schema)
