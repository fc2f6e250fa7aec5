"""What ``RELAY_API_KEYS`` means: named keys, so one can be rotated without downtime.

``name1:key1,name2:key2`` names each key; the name (never the key) appears in logs, metrics and quota
records. The older unnamed form ``key1,key2`` still works: those keys are named by position, ``key1``,
``key2``... (a key that itself contains ``:`` must therefore be given with a name). Errors name the
entry's position, never its content, so a typo cannot print a secret into a startup log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ANONYMOUS = "anonymous"  # who a request is when auth is off; reserved, so no key can be named so


class ApiKeyError(ValueError):
    """``RELAY_API_KEYS`` cannot be parsed; the message never contains a key."""


@dataclass(frozen=True)
class ApiKey:
    """A configured key and the name it is known by everywhere it is mentioned."""

    name: str
    secret: str = field(repr=False)


def parse_api_keys(raw: str) -> list[ApiKey]:
    """Every key in ``raw`` (blank entries skipped); ``ApiKeyError`` on a bad or repeated name or empty key."""
    keys: list[ApiKey] = []
    entries = [entry.strip() for entry in raw.split(",")]
    for position, entry in enumerate((e for e in entries if e), start=1):
        name, sep, secret = entry.partition(":")
        if not sep:
            name, secret = f"key{position}", entry
        name, secret = name.strip(), secret.strip()
        if not NAME_PATTERN.fullmatch(name):
            raise ApiKeyError(f"RELAY_API_KEYS entry {position}: a name is letters, digits, '_', '.', '-' (max 64)")
        if name == ANONYMOUS:
            raise ApiKeyError(f"RELAY_API_KEYS entry {position}: the name {ANONYMOUS!r} is reserved")
        if not secret:
            raise ApiKeyError(f"RELAY_API_KEYS entry {position} ({name}): the key is empty")
        if any(k.name == name for k in keys):
            raise ApiKeyError(f"RELAY_API_KEYS entry {position}: the name {name!r} is used twice")
        keys.append(ApiKey(name, secret))
    return keys
