"""The registry every Relay process uses, and the loading of the task modules a deployment names.

A task module registers its tasks on import (``@registry.task()``); ``RELAY_TASK_MODULES`` lists the modules a
deployment runs (``worker.tasks.demo`` holds the built-in demo tasks). A module added later needs a restart.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from worker.registry import TaskDefinitionError, TaskRegistry

registry = TaskRegistry()


class TaskModuleError(RuntimeError):
    """A task module named in ``RELAY_TASK_MODULES`` cannot be loaded: it cannot be imported, or a task in it
    cannot be registered as written. Its message is one line, fit to end a worker's start with."""


def load(module_names: list[str]) -> TaskRegistry:
    """Import each task module once (they register their tasks) and return the registry."""
    for name in module_names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            hint = _closest(name) if isinstance(exc, ModuleNotFoundError) and exc.name == name else None
            said = f"RELAY_TASK_MODULES names {name!r}, which cannot be imported: {exc}"
            raise TaskModuleError(said + (f" (did you mean {hint!r}?)" if hint else "")) from exc
        except TaskDefinitionError as exc:  # it says the file and line of the task
            raise TaskModuleError(str(exc)) from exc
    return registry


def _closest(name: str) -> str | None:
    """The module next to a missing ``name`` whose name is closest to it (a typo's likely target), if any."""
    parent, _, leaf = name.rpartition(".")
    try:
        path = importlib.import_module(parent).__path__ if parent else None
    except (ImportError, AttributeError):  # no such package, or a module that is not one
        return None
    close = difflib.get_close_matches(leaf, [m.name for m in pkgutil.iter_modules(path)], n=1)
    if not close:
        return None
    return f"{parent}.{close[0]}" if parent else close[0]
