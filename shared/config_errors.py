"""Bad ``RELAY_*`` variables said in the variables' own names: one line each, with what would be accepted.

pydantic reports field names (``max_queue_depth``) and its own wording; an operator sets
``RELAY_MAX_QUEUE_DEPTH``, so that is the name every line starts with.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr, ValidationError

# EX_CONFIG from sysexits.h: lets a supervisor tell "fix the configuration" from a crash.
CONFIG_ERROR_EXIT_CODE = 78
ENV_PREFIX = "RELAY_"
_KINDS = {int: "an integer", float: "a number", bool: "true or false (1/0, yes/no)", str: "text"}
_USERINFO = re.compile(r"^([a-z]+://)?[^@/]*@", re.IGNORECASE)


class ConfigError(SystemExit):
    """Raised instead of a traceback: its text is the lines to show, its exit code 78."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(CONFIG_ERROR_EXIT_CODE)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(self.problems)


def describe(exc: ValidationError, model: type[BaseModel], environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per error: ``RELAY_X='value' is invalid: expected ...``."""
    present = {k.upper() for k in (os.environ if environ is None else environ)}
    return [_line(error, model, present) for error in exc.errors()]


def _line(error: Any, model: type[BaseModel], present: set[str]) -> str:
    loc = str(error["loc"][0]) if error["loc"] else ""
    name, field = _variable(loc, model, present)
    shown = _shown(error.get("input"), field, model)
    if error["type"] == "value_error":  # our own validators already say what they expect
        expected = str(error["ctx"]["error"])
    else:
        expected = f"expected {_accepted(field, model)}" if field else error["msg"]
    return f"{name}={shown} is invalid: {expected}"


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
    """The bad value, quoted; secrets are never echoed and URL passwords are masked."""
    if field and model.model_fields[field].annotation is SecretStr:
        return "(hidden)"
    text = str(value)
    return repr(_USERINFO.sub(lambda m: (m.group(1) or "") + "***@", text))


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
    return " ".join([kind, *bounds])
