"""A task with a schedule, registered only by the workers of the schedule test (a schedule runs wherever its
module is loaded, so the suite's other workers must not load it)."""

from __future__ import annotations

from relay.tasks import Schedule, TaskContext, task


@task(schedules=[Schedule(second=None, kwargs={"note": "every second"})])
async def tick(ctx: TaskContext, note: str = "") -> dict[str, str]:
    """Runs every second, once per point, however many workers run."""
    return {"id": ctx.id, "note": note}
