"""What a link address names: the CBS node, an entity's management node, or an entity itself.

The SDK attaches entity links to ``amqps://<host>/<queue>`` but management and CBS links to bare
``<queue>/$management`` and ``$cbs``, so both shapes are accepted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import urlparse

from bench.harness.servicebus import names


class Node(enum.Enum):
    """The kinds of node a link can attach to."""

    CBS = "cbs"
    MANAGEMENT = "management"
    ENTITY = "entity"


@dataclass(frozen=True)
class Address:
    """A parsed link address; ``queue`` is None only for the CBS node."""

    node: Node
    queue: str | None = None
    dead_letter: bool = False


def parse(address: str | None) -> Address | None:
    """Parse a link address, or None for one this endpoint does not serve."""
    if not address:
        return None
    path = urlparse(address).path.lstrip("/") if "://" in address else address.lstrip("/")
    if path == names.CBS_NODE:
        return Address(Node.CBS)
    node = Node.ENTITY
    if _has_suffix(path, names.MANAGEMENT_SUFFIX):
        node = Node.MANAGEMENT
        path = path[: -len(names.MANAGEMENT_SUFFIX)]
    dead_letter = _has_suffix(path, names.DEAD_LETTER_SUFFIX)
    if dead_letter:
        path = path[: -len(names.DEAD_LETTER_SUFFIX)]
    if not path or "/" in path or path.startswith("$"):
        return None
    return Address(node, path, dead_letter)


def _has_suffix(path: str, suffix: str) -> bool:
    """Entity paths are case-insensitive in Service Bus, and so are their suffixes."""
    return path.lower().endswith(suffix.lower())
