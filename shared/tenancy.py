"""Which tenant owns a task, recorded in its stored id: ``<tenant>~<client id>``.

A tenant's ids live in their own namespace: two tenants may both submit id ``report-1`` and get two tasks,
and a tenant naming another's id names a task of its own that does not exist. The owner is part of the id,
so every record, event log, quota entry and index entry of the task carries it with no extra field, and a
task keeps its owner after it ends. Ids with no ``~`` belong to no tenant: tasks submitted with auth off, by
an admin key, by the Service Bus bridge or the schedules when no tenant is configured for them, and tasks
submitted before tenants existed; only admins (or anyone, with auth off) see those.

The separator cannot be abused: client ids (``shared.tasks.TASK_ID_REGEX``) and tenant names
(``shared.apikeys.NAME_PATTERN``) cannot contain ``~``, so a stored id splits one way only.
"""

from __future__ import annotations

from typing import Final

from shared.apikeys import NAME_PATTERN
from shared.tasks import TASK_ID_REGEX, is_task_id

SEPARATOR: Final = "~"
# What a path may name: a tenant's own id, or (for an admin) a stored id, with its tenant in front.
STORED_ID_PATTERN: Final = f"^({NAME_PATTERN.pattern.strip('^$')}{SEPARATOR})?{TASK_ID_REGEX}$"


def stored_id(tenant: str | None, client_id: str) -> str:
    """The id a tenant's task is stored under (``client_id`` itself for a task no tenant owns)."""
    return f"{tenant}{SEPARATOR}{client_id}" if tenant else client_id


def owner(stored: str) -> str | None:
    """The tenant that owns a stored id, or None."""
    tenant, sep, _ = stored.partition(SEPARATOR)
    return tenant if sep else None


def client_id(stored: str) -> str:
    """The id its tenant knows a stored task by."""
    return stored.partition(SEPARATOR)[2] or stored


def prefix(tenant: str) -> str:
    """What every stored id of ``tenant`` starts with."""
    return tenant + SEPARATOR


def is_stored_id(value: str) -> bool:
    """True if ``value`` is a whole id a task can be stored under (a tenant's, or one no tenant owns)."""
    tenant, sep, rest = value.partition(SEPARATOR)
    if not sep:
        return is_task_id(value)
    return NAME_PATTERN.fullmatch(tenant) is not None and is_task_id(rest)
