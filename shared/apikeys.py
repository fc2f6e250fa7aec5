"""What ``RELAY_API_KEYS`` means: named keys, each with a role; the name is the tenant the key acts for.

``name1:key1,name2:key2`` names each key; the name (never the key) appears in logs, metrics and quota
records, and it is the tenant that owns the tasks the key submits (``shared/tenancy.py``). A third part
grants a role: ``name:key:read`` (read its tenant's tasks, nothing else) or ``name:key:admin`` (every
tenant's tasks); ``name:key`` (or ``name:key:submit``) submits and reads, aborts and retries its own. One name
may have several keys (rotating a tenant's key without downtime, or a read-only key next to a submitting
one); one key may not appear twice. The older unnamed form ``key1,key2`` still works: those keys are named by
position, ``key1``, ``key2``... (a key that itself contains ``:`` must therefore be given with a name, and a
named key that ends in ``:read``, ``:admin`` or ``:submit`` must be given with its role). Errors name the
entry's position, never its content, so a typo cannot print a secret into a startup log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ANONYMOUS = "anonymous"  # who a request is when auth is off; reserved, so no key can be named so


class Role(StrEnum):
    """What a key may do. Rights grow: read < submit < admin."""

    READ = "read"  # read its tenant's tasks
    SUBMIT = "submit"  # also submit, abort and retry them
    ADMIN = "admin"  # every tenant's tasks, and the tasks no tenant owns


class ApiKeyError(ValueError):
    """``RELAY_API_KEYS`` cannot be parsed; the message never contains a key."""


@dataclass(frozen=True)
class ApiKey:
    """A configured key, the name (tenant) it is known by everywhere it is mentioned, and its role."""

    name: str
    secret: str = field(repr=False)
    role: Role = Role.SUBMIT


def _split(entry: str, position: int) -> tuple[str, str, Role, bool]:
    """(name, secret, role, named) of one entry."""
    name, sep, secret = entry.partition(":")
    if not sep:
        return f"key{position}", entry.strip(), Role.SUBMIT, False
    rest, sep, role = secret.rpartition(":")
    if sep and role.strip() in set(Role):
        return name.strip(), rest.strip(), Role(role.strip()), True
    return name.strip(), secret.strip(), Role.SUBMIT, True


def parse_api_keys(raw: str) -> list[ApiKey]:
    """Every key in ``raw`` (blank entries skipped); ``ApiKeyError`` on a bad name, an empty or repeated key,
    or a name given both explicitly and by position."""
    keys: list[ApiKey] = []
    positional: set[str] = set()
    named: set[str] = set()
    entries = [entry.strip() for entry in raw.split(",")]
    for position, entry in enumerate((e for e in entries if e), start=1):
        name, secret, role, is_named = _split(entry, position)
        if not NAME_PATTERN.fullmatch(name):
            raise ApiKeyError(f"RELAY_API_KEYS entry {position}: a name is letters, digits, '_', '.', '-' (max 64)")
        if name == ANONYMOUS:
            raise ApiKeyError(f"RELAY_API_KEYS entry {position}: the name {ANONYMOUS!r} is reserved")
        if not secret:
            raise ApiKeyError(f"RELAY_API_KEYS entry {position}: the key is empty")
        if not _is_utf8(secret):  # a header carries it as UTF-8: such a key could never be presented
            raise ApiKeyError(f"RELAY_API_KEYS entry {position}: the key is not valid UTF-8")
        if any(k.secret == secret for k in keys):
            raise ApiKeyError(f"RELAY_API_KEYS entry {position}: this key is used twice")
        # A positional name is nobody's choice: sharing it with another entry would merge two tenants by accident.
        if name in positional or (not is_named and name in named):
            raise ApiKeyError(f"RELAY_API_KEYS entry {position}: the name {name!r} is used twice")
        (named if is_named else positional).add(name)
        keys.append(ApiKey(name, secret, role))
    return keys


def _is_utf8(text: str) -> bool:
    """Whether ``text`` is real text (an environment variable's bytes that are not UTF-8 are read as surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def tenant_names(keys: list[ApiKey]) -> list[str]:
    """Each tenant once, in the order first configured (quotas and metrics are per tenant)."""
    return list(dict.fromkeys(key.name for key in keys))
