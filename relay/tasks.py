"""What a project's own task modules import: ``from relay.tasks import TaskContext, task``.

```python
from relay.tasks import RetryPolicy, Schedule, TaskContext, task

@task(timeout_seconds=60, retry=RetryPolicy(max_retries=3, retry_on=(ConnectionError,)))
async def resize(ctx: TaskContext, url: str, width: int = 800) -> dict[str, str]:
    await ctx.progress(1, 2, "downloaded")
    return {"url": url}
```

Name the module in ``RELAY_TASK_MODULES`` for the workers (``arq worker.settings``); API processes need
neither the module nor its dependencies: they validate submits against what the live workers publish.
"""

try:
    from shared.lanes import Limit, Rate
    from shared.retry import RetryPolicy
    from worker.context import TaskContext
    from worker.schedule import Schedule
    from worker.tasks import registry
except ModuleNotFoundError as exc:  # the client distribution (clients/python) ships relay/ without the server
    if exc.name not in ("shared", "worker"):
        raise
    raise ModuleNotFoundError(
        "relay.tasks defines tasks for Relay's workers and needs the server package (the repository's own "
        "pyproject: pip install -e .); the client distribution, relay-client, has relay.client and relay.cli only",
        name=exc.name,
    ) from exc

task = registry.task

__all__ = ["Limit", "Rate", "RetryPolicy", "Schedule", "TaskContext", "registry", "task"]
