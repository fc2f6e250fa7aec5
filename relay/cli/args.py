"""Task arguments from the command line: ``--arg key=value`` (JSON when it parses) and ``--args-json``."""

from __future__ import annotations

import json
from typing import Any

import click


def _no_constants(name: str) -> Any:
    raise ValueError(name)  # NaN/Infinity are not JSON; "--arg x=NaN" stays the string "NaN"


def parse_value(text: str) -> Any:
    """``42`` -> 42, ``true`` -> True, ``[1,2]`` -> [1, 2], ``{"a":1}`` -> {"a": 1}, anything else -> the string."""
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ValueError:
        return text


def parse_pairs(pairs: tuple[str, ...]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--arg")
        kwargs[key] = parse_value(value)
    return kwargs


def task_arguments(pairs: tuple[str, ...], args_json: str | None) -> tuple[list[Any], dict[str, Any]]:
    """(args, kwargs): ``--args-json`` is an object (keyword arguments) or an array (positional ones);
    ``--arg`` pairs are keyword arguments and win over the same keys in ``--args-json``."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    if args_json is not None:
        try:
            parsed = json.loads(args_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--args-json") from None
        if isinstance(parsed, dict):
            kwargs = parsed
        elif isinstance(parsed, list):
            args = parsed
        else:
            raise click.BadParameter("must be a JSON object or array", param_hint="--args-json")
    return args, kwargs | parse_pairs(pairs)
