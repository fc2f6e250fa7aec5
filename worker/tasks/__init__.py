"""The registry every Relay process uses, and the loading of the task modules a deployment names.

A task module registers its tasks on import (``@registry.task()``); ``RELAY_TASK_MODULES`` lists the modules a
deployment runs (``worker.tasks.demo`` holds the built-in demo tasks). A module added later needs a restart.
"""

from __future__ import annotations

import importlib

from worker.registry import TaskRegistry

registry = TaskRegistry()


class TaskModuleError(RuntimeError):
    """A task module named in ``RELAY_TASK_MODULES`` cannot be loaded."""


def load(module_names: list[str]) -> TaskRegistry:
    """Import each task module once (they register their tasks) and return the registry."""
    for name in module_names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise TaskModuleError(f"RELAY_TASK_MODULES names {name!r}, which cannot be imported: {exc}") from exc
    return registry
