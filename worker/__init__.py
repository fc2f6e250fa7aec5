"""arq workers that run Relay's registered tasks. ``arq worker.settings`` starts one."""

from __future__ import annotations

import importlib
from types import ModuleType


def __getattr__(name: str) -> ModuleType:
    """``arq worker.settings`` resolves ``settings`` as an attribute of this package: load it only then, so
    importing ``worker.registry`` (as task modules do) does not start configuring a worker."""
    if name == "settings":
        return importlib.import_module("worker.settings")
    raise AttributeError(name)
