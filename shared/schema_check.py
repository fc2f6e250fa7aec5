"""A fast yes for arguments that fit a task's published JSON Schema, compiled once per schema.

``jsonschema`` builds a validator per keyword and per nested value on every call: about 8 us for a one-string
task, the largest part of an API process's own work per submit. Almost every submit is valid, and the answer
"valid" needs none of the error reporting, so each schema is compiled once into plain Python checks that say
only "certainly valid" (True) or "maybe not" (False). On False the caller runs ``jsonschema`` as before, which
finds the errors and words them: what a client sees for bad arguments never comes from here.

So the one rule is soundness: True only where Draft 2020-12, as ``jsonschema`` applies it, finds no error (with
one rule of Relay's own, which ``shared.catalogue`` gives ``jsonschema`` too: an int a float cannot hold is no
"number", ``is_number``).
Only the keywords pydantic writes for plain parameters are compiled (type, properties, required,
additionalProperties, items, min/max and their exclusive forms, string lengths, pattern, enum and const of
strings or null, anyOf, allOf, and ``$ref`` into the schema's own ``$defs``); a schema with any other keyword
(``format``, ``multipleOf``, ``oneOf``, ...) is not compiled at all and always goes to ``jsonschema``.
``tests/shared/test_schema_check.py`` holds the compiled checks to ``jsonschema``'s verdicts.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

Check = Callable[[Any], bool]

# Keywords that never make an instance invalid (annotations), and containers read through ``$ref``.
IGNORED: Final = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "$defs"}
)
_DEFS_REF: Final = "#/$defs/"


class Unsupported(Exception):
    """The schema uses something this module does not compile: ``jsonschema`` checks it instead."""


def compile_schema(schema: Any) -> Check | None:
    """A check for ``schema`` (see the module docstring), or None when it cannot be compiled."""
    try:
        return _Compiler(schema).compile(schema)
    except (Unsupported, RecursionError):
        return None


def is_number(value: Any) -> bool:
    """A JSON "number" as Relay takes it: an int or float, not a bool, and no int a float cannot hold (JSON allows
    any integer, but a ``float`` parameter could never take one beyond about 1.8e308: the task would always fail)."""
    if isinstance(value, float):
        return True
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


_TYPES: Final[Mapping[str, Check]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": is_number,
    "integer": _is_integer,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _all(checks: list[Check]) -> Check:
    if not checks:
        return lambda value: True
    if len(checks) == 1:
        return checks[0]

    def every(value: Any) -> bool:
        for check in checks:  # noqa: SIM110 (a loop: all() over a generator costs more per call)
            if not check(value):
                return False
        return True

    return every


class _Compiler:
    """Compiles one root schema; ``$ref``s into its ``$defs`` are compiled once each (and may recurse)."""

    def __init__(self, root: Any) -> None:
        self._defs = root.get("$defs", {}) if isinstance(root, dict) else {}
        if not isinstance(self._defs, dict):
            raise Unsupported("$defs")
        self._refs: dict[str, Check | None] = {}

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda value: True
        if not isinstance(schema, dict):
            raise Unsupported("a schema that is not an object or true")  # false: never valid, jsonschema says why
        unknown = set(schema) - IGNORED - set(_KEYWORDS)
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        checks = [_KEYWORDS[name](self, schema[name], schema) for name in schema if name in _KEYWORDS]
        return _all([c for c in checks if c is not None])

    def ref(self, ref: Any, schema: Mapping[str, Any]) -> Check:
        if not isinstance(ref, str) or not ref.startswith(_DEFS_REF) or "/" in ref[len(_DEFS_REF) :]:
            raise Unsupported(f"$ref {ref!r}")
        name = ref[len(_DEFS_REF) :]
        if "~" in name or "%" in name or name not in self._defs:
            raise Unsupported(f"$ref {ref!r}")
        if name not in self._refs:
            self._refs[name] = None  # compiling: a recursive reference looks it up when called
            self._refs[name] = self.compile(self._defs[name])
        refs = self._refs

        def referenced(value: Any) -> bool:
            check = refs[name]
            return check is not None and check(value)

        return referenced


def _type(compiler: _Compiler, types: Any, schema: Mapping[str, Any]) -> Check:
    names = [types] if isinstance(types, str) else types
    if not isinstance(names, list) or not names or any(n not in _TYPES for n in names):
        raise Unsupported(f"type {types!r}")
    checks = [_TYPES[n] for n in names]
    if len(checks) == 1:
        return checks[0]
    return lambda value: any(check(value) for check in checks)


def _properties(compiler: _Compiler, properties: Any, schema: Mapping[str, Any]) -> Check | None:
    if not isinstance(properties, dict):
        raise Unsupported("properties")
    if "additionalProperties" in schema:
        return None  # checked together with additionalProperties
    checks = {name: compiler.compile(sub) for name, sub in properties.items()}

    def fits(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for name, check in checks.items():  # noqa: SIM110 (as in _all)
            if name in value and not check(value[name]):
                return False
        return True

    return fits


def _additional(compiler: _Compiler, additional: Any, schema: Mapping[str, Any]) -> Check:
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or "patternProperties" in schema:
        raise Unsupported("additionalProperties")
    checks = {name: compiler.compile(sub) for name, sub in properties.items()}
    if additional is False:
        others: Check | None = None
    elif additional is True or additional == {}:
        others = lambda value: True  # noqa: E731
    else:
        others = compiler.compile(additional)

    def fits(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for name, item in value.items():
            check = checks.get(name, others)
            if check is None or not check(item):
                return False
        return True

    return fits


def _required(compiler: _Compiler, required: Any, schema: Mapping[str, Any]) -> Check | None:
    if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
        raise Unsupported("required")
    if not required:
        return None
    names = tuple(required)

    def present(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for name in names:  # noqa: SIM110 (as in _all)
            if name not in value:
                return False
        return True

    return present


def _items(compiler: _Compiler, items: Any, schema: Mapping[str, Any]) -> Check:
    if "prefixItems" in schema:
        raise Unsupported("items with prefixItems")
    check = compiler.compile(items)
    return lambda value: not isinstance(value, list) or all(check(item) for item in value)


def _bound(op: Callable[[Any, Any], bool]) -> Callable[[_Compiler, Any, Mapping[str, Any]], Check]:
    """minimum and its kin: the number compared with the limit by ``op`` (True: within it)."""

    def build(compiler: _Compiler, limit: Any, schema: Mapping[str, Any]) -> Check:
        if not is_number(limit):
            raise Unsupported("a bound that is not a number")

        def within(value: Any) -> bool:
            kind = type(value)
            if kind is int or kind is float:
                return op(value, limit)
            # Not a number to jsonschema: no bound applies. A number of another kind: left to jsonschema.
            return isinstance(value, bool) or not isinstance(value, numbers.Number)

        return within

    return build


def _length(longest: bool) -> Callable[[_Compiler, Any, Mapping[str, Any]], Check]:
    def build(compiler: _Compiler, limit: Any, schema: Mapping[str, Any]) -> Check:
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise Unsupported("a length that is not an integer")
        if longest:
            return lambda value: not isinstance(value, str) or len(value) <= limit
        return lambda value: not isinstance(value, str) or len(value) >= limit

    return build


def _count(longest: bool) -> Callable[[_Compiler, Any, Mapping[str, Any]], Check]:
    def build(compiler: _Compiler, limit: Any, schema: Mapping[str, Any]) -> Check:
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise Unsupported("an item count that is not an integer")
        if longest:
            return lambda value: not isinstance(value, list) or len(value) <= limit
        return lambda value: not isinstance(value, list) or len(value) >= limit

    return build


def _pattern(compiler: _Compiler, pattern: Any, schema: Mapping[str, Any]) -> Check:
    if not isinstance(pattern, str):
        raise Unsupported("pattern")
    try:
        search = re.compile(pattern).search  # what jsonschema's re.search(pattern, value) does
    except re.error:
        raise Unsupported("pattern") from None
    return lambda value: not isinstance(value, str) or search(value) is not None


def _members(values: list[Any]) -> Check:
    """An enum of strings and null, matched as ``jsonschema``'s ``equal`` matches a string or None (by ==, and
    None only to None); any other value is left to ``jsonschema``."""
    strings = frozenset(v for v in values if isinstance(v, str))
    null = any(v is None for v in values)
    return lambda value: (isinstance(value, str) and value in strings) or (value is None and null)


def _enum(compiler: _Compiler, values: Any, schema: Mapping[str, Any]) -> Check:
    if not isinstance(values, list):
        raise Unsupported("enum")
    return _members(values)


def _const(compiler: _Compiler, value: Any, schema: Mapping[str, Any]) -> Check:
    return _members([value])


def _any_of(compiler: _Compiler, schemas: Any, schema: Mapping[str, Any]) -> Check:
    if not isinstance(schemas, list) or not schemas:
        raise Unsupported("anyOf")
    checks = [compiler.compile(sub) for sub in schemas]
    return lambda value: any(check(value) for check in checks)


def _all_of(compiler: _Compiler, schemas: Any, schema: Mapping[str, Any]) -> Check:
    if not isinstance(schemas, list) or not schemas:
        raise Unsupported("allOf")
    return _all([compiler.compile(sub) for sub in schemas])


_KEYWORDS: Final[Mapping[str, Callable[[_Compiler, Any, Mapping[str, Any]], Check | None]]] = {
    "type": _type,
    "properties": _properties,
    "additionalProperties": _additional,
    "required": _required,
    "items": _items,
    "minimum": _bound(lambda value, limit: value >= limit),
    "maximum": _bound(lambda value, limit: value <= limit),
    "exclusiveMinimum": _bound(lambda value, limit: value > limit),
    "exclusiveMaximum": _bound(lambda value, limit: value < limit),
    "minLength": _length(longest=False),
    "maxLength": _length(longest=True),
    "minItems": _count(longest=False),
    "maxItems": _count(longest=True),
    "pattern": _pattern,
    "enum": _enum,
    "const": _const,
    "anyOf": _any_of,
    "allOf": _all_of,
    "$ref": lambda compiler, ref, schema: compiler.ref(ref, schema),
}
