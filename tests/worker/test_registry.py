"""The registry validates arguments from each task's own signature."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import Field

from worker.context import TaskContext
from worker.registry import InvalidArguments, TaskDefinitionError, TaskRegistry, UnknownTask
from worker.schedule import Schedule


def make_registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task(timeout_seconds=5)
    async def add(task: TaskContext, a: int, b: Annotated[int, Field(ge=0)] = 1, *, label: str = "") -> int:
        return a + b

    return registry


def test_binds_positional_and_keyword_arguments() -> None:
    spec = make_registry().get("add")
    assert spec.validate([2], {"b": 3}) == {"a": 2, "b": 3, "label": ""}
    assert spec.validate([], {"a": "4"}) == {"a": 4, "b": 1, "label": ""}
    assert spec.timeout_seconds == 5


@pytest.mark.parametrize(
    ("args", "kwargs", "where"),
    [
        ([], {}, ["a"]),
        (["x"], {}, ["a"]),
        ([1], {"b": -1}, ["b"]),
        ([1], {"c": 1}, ["c"]),
        ([1, 2, 3], {}, ["args"]),
        ([1], {"a": 1}, ["kwargs", "a"]),
    ],
)
def test_rejects_arguments_that_do_not_fit(args: list[object], kwargs: dict[str, object], where: list[str]) -> None:
    with pytest.raises(InvalidArguments) as caught:
        make_registry().get("add").validate(args, kwargs)
    assert caught.value.errors[0]["loc"] == where


def test_unknown_name() -> None:
    with pytest.raises(UnknownTask):
        make_registry().get("os.system")
    assert "add" in make_registry()
    assert "nope" not in make_registry()


def test_registration_rules() -> None:
    registry = TaskRegistry()

    async def no_context(x: int) -> None: ...

    async def var_args(task: TaskContext, *args: int) -> None: ...

    # Each refusal starts with where the task is defined: a worker says it in one line, with no traceback.
    with pytest.raises(TaskDefinitionError, match=r"test_registry.py:\d+: task 'no_context': .*TaskContext"):
        registry.task()(no_context)
    with pytest.raises(TaskDefinitionError, match=r"\*args"):
        registry.task()(var_args)

    async def fine(task: TaskContext) -> None: ...

    registry.task("fine")(fine)
    with pytest.raises(TaskDefinitionError, match="twice"):
        registry.task("fine")(fine)


def test_a_schedule_whose_kwargs_do_not_fit_is_refused_where_the_task_is_defined() -> None:
    async def report(task: TaskContext, day: int) -> None: ...

    with pytest.raises(TaskDefinitionError, match=r"test_registry.py:\d+: task 'report': a schedule's kwargs do not "):
        TaskRegistry().task(schedules=[Schedule(hour=3, kwargs={"day": "monday"})])(report)


def test_unknown_task_message_is_capped_but_details_list_every_name() -> None:
    names = [f"task{i:02}" for i in range(25)]
    error = UnknownTask("nope", names)
    assert error.message == f"no task is registered as 'nope'; registered: {', '.join(names[:20])} and 5 more"
    assert error.details == {"registered": names}
    assert UnknownTask("nope", []).message == "no task is registered as 'nope'; registered: none"
