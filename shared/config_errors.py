"""Bad ``RELAY_*`` variables said in the variables' own names: one line each, with what would be accepted.

pydantic reports field names (``max_queue_depth``) and its own wording; an operator sets
``RELAY_MAX_QUEUE_DEPTH``, so that is the name every line starts with. No line shows a secret: secret settings
are hidden, passwords in URLs masked, and a check across several settings (whose input, to pydantic, is every
variable set) names its variables instead of showing values.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import annotated_types
from pydantic import BaseModel, SecretStr, ValidationError

# EX_CONFIG from sysexits.h: lets a supervisor tell "fix the configuration" from a crash.
CONFIG_ERROR_EXIT_CODE = 78
ENV_PREFIX = "RELAY_"
_KINDS = {int: "an integer", float: "a number", bool: "true or false (1/0, yes/no)", str: "text"}
# The user and password of a URL (up to its last @: a password may hold / or @), or of a value that starts with them.
_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://|^)[^\s'\",]*@", re.IGNORECASE)


class ConfigError(SystemExit):
    """Raised instead of a traceback: its text is the lines to show, its exit code 78."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(CONFIG_ERROR_EXIT_CODE)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(self.problems)


def refuse(problems: list[str]) -> NoReturn:
    """End the process as a bad configuration does: ``problems`` on stderr, one line each, and exit code 78.
    (``ConfigError`` is a ``SystemExit``: ``arq worker.settings`` and Sanic let it through without a traceback.)"""
    print("\n".join(problems), file=sys.stderr, flush=True)
    raise ConfigError(problems)


class Conflict(ValueError):
    """A check across several settings failed; ``fields`` are the settings it involves, so its line can name
    their variables (pydantic gives such a check the whole input: every variable set, secrets included)."""

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields


def describe(exc: ValidationError, model: type[BaseModel], environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per error: ``RELAY_X='value' is invalid: expected ...``."""
    present = {k.upper() for k in (os.environ if environ is None else environ)}
    return [_line(error, model, present) for error in exc.errors()]


def _line(error: Any, model: type[BaseModel], present: set[str]) -> str:
    # Our own validators (value_error) already say what they expect.
    expected = _masked(str(error["ctx"]["error"])) if error["type"] == "value_error" else None
    if not error["loc"]:  # a check across settings: its input is every variable set, so it is never shown
        fields = getattr(error.get("ctx", {}).get("error"), "fields", ())
        names = [_variable(field, model, present)[0] for field in fields]
        subject = " and ".join(names) + " are" if names else "The settings are"
        return f"{subject} invalid together: {expected or error['msg']}"
    name, field = _variable(str(error["loc"][0]), model, present)
    if expected is None:
        expected = f"expected {_accepted(field, model)}" if field else error["msg"]
    return f"{name}={_shown(error.get('input'), field, model)} is invalid: {expected}"


def _variable(loc: str, model: type[BaseModel], present: set[str]) -> tuple[str, str | None]:
    """The variable the operator set (a field may be read from several, e.g. a deprecated name) and its field."""
    if loc in model.model_fields:
        return ENV_PREFIX + loc.upper(), loc
    for name, info in model.model_fields.items():
        choices = [str(c).upper() for c in getattr(info.validation_alias, "choices", [info.validation_alias]) if c]
        if loc.upper() in choices:
            return next((c for c in choices if c in present), loc.upper()), name
    return loc.upper(), None


def _shown(value: Any, field: str | None, model: type[BaseModel]) -> str:
    """The bad value, quoted; secrets (and values of no known setting) are never echoed, URL passwords masked."""
    if field is None or model.model_fields[field].annotation is SecretStr:
        return "(hidden)"
    return repr(_masked(str(value)))


def _masked(text: str) -> str:
    return _USERINFO.sub(lambda m: m.group(1) + "***@", text)


def _accepted(field: str, model: type[BaseModel]) -> str:
    info = model.model_fields[field]
    kind = _KINDS.get(info.annotation, "text") if isinstance(info.annotation, type) else "text"
    bounds = []
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            bounds.append(f">= {meta.ge}")
        elif isinstance(meta, annotated_types.Gt):
            bounds.append(f"> {meta.gt}")
        elif isinstance(meta, annotated_types.Le):
            bounds.append(f"<= {meta.le}")
    return " ".join([kind, " and ".join(bounds)]) if bounds else kind
