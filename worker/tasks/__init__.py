"""The registry every Relay process uses. Add a task: write it in a module here and import that module below."""

from worker.registry import TaskRegistry

registry = TaskRegistry()

from worker.tasks import demo  # noqa: E402,F401  (registers the built-in demo tasks)
