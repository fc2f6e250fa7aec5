"""The task registry: the only names a client can run, with a parameter model built from each signature."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from shared import lanes
from shared.arguments import bind
from shared.errors import InvalidArguments, UnknownTask
from shared.lanes import Limit, Rate
from shared.retry import NO_RETRIES, RetryPolicy
from shared.settings import MAX_JOB_TIMEOUT_SECONDS
from shared.tasks import TASK_NAME_REGEX, is_task_name
from worker.context import TaskContext
from worker.schedule import Schedule

__all__ = ["InvalidArguments", "RetryPolicy", "TaskDefinitionError", "TaskRegistry", "TaskSpec", "UnknownTask"]

TaskFn = Callable[..., Any]
F = TypeVar("F", bound=TaskFn)


class TaskDefinitionError(ValueError):
    """A task cannot be registered as written; the message starts with the file and line that define it, so a
    worker can refuse to start in one line instead of a traceback through the import machinery."""


def _refused(fn: TaskFn, problem: str) -> TaskDefinitionError:
    """``problem``, after the file and first line of ``fn`` (its first decorator's, if it has any)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return TaskDefinitionError(problem)
    path = Path(code.co_filename)
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path.cwd())
    return TaskDefinitionError(f"{path}:{code.co_firstlineno}: {problem}")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its code, its parameter model, its limits and its retry policy."""

    name: str
    fn: TaskFn
    params: type[BaseModel]
    timeout_seconds: float | None = None
    description: str = ""
    retry: RetryPolicy = NO_RETRIES
    is_async: bool = True
    schedules: tuple[Schedule, ...] = ()
    _param_names: tuple[str, ...] = field(default=())
    queue: str = lanes.DEFAULT_QUEUE
    queues: tuple[str, ...] = (lanes.DEFAULT_QUEUE,)  # where a submit may send it (``queue`` first)
    priority: int = 0
    concurrency: Limit | None = None
    rate: Rate | None = None

    @property
    def concurrency_key(self) -> str | None:
        """The argument whose value splits its concurrency limit, if any."""
        return self.concurrency.key if self.concurrency else None

    @property
    def rate_key(self) -> str | None:
        """The argument whose value splits its rate limit, if any."""
        return self.rate.key if self.rate else None

    def claim_entry(self) -> str:
        """How the claim script knows this task (``claim.lua``): its name, with its limits if it has any."""
        if self.concurrency is None and self.rate is None:
            return self.name
        running = self.concurrency.running if self.concurrency else 0
        interval = f"{self.rate.interval_ms:.3f}" if self.rate else "0"
        burst = self.rate.burst if self.rate else 1
        return f"{self.name}={running}:{interval}:{burst}"

    @property
    def max_retries(self) -> int:
        """The most retries a submit may ask for (its policy's)."""
        return self.retry.max_retries

    def max_timeout(self, default: float) -> float:
        """The task's own timeout, or the worker's default."""
        return self.timeout_seconds or default

    @property
    def positional(self) -> tuple[str, ...]:
        """The parameters that may be given positionally, in order."""
        return self._param_names

    def describe(self, default_timeout: float) -> dict[str, Any]:
        """What a worker publishes about this task, so an API process can validate submits without its code."""
        return {
            "name": self.name,
            "description": self.description,
            "schema": self.params.model_json_schema(),
            "positional": list(self._param_names),
            "timeout_seconds": self.timeout_seconds or default_timeout,
            "max_retries": self.retry.max_retries,
            "sync": not self.is_async,
            "queue": self.queue,
            "queues": list(self.queues),
            "priority": self.priority,
            "concurrency": self.concurrency.describe() if self.concurrency else None,
            "rate": self.rate.describe() if self.rate else None,
        }

    def validate(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Bind positional and keyword arguments, check their types, return them all as JSON keywords."""
        return self._model(bind(self._param_names, args, kwargs)).model_dump(mode="json")

    def validate_piped(self, args: Sequence[Any], kwargs: Mapping[str, Any], piped: str) -> dict[str, Any]:
        """``validate`` for a workflow's step whose parameter ``piped`` takes the value of the steps before it
        (checked when it runs): every other argument is checked now."""
        values = bind(self._param_names, [None, *args], kwargs)
        del values[piped]
        try:
            self.params.model_validate(values)
        except ValidationError as exc:
            found = [e for e in _errors(exc) if e["loc"][:1] != [piped]]
            if found:
                raise InvalidArguments(found) from None
        fields = self.params.model_fields
        defaults = {n: f.get_default(call_default_factory=True) for n, f in fields.items() if not f.is_required()}
        return {n: v for n, v in defaults.items() if n != piped} | values

    def parse(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validate stored keyword arguments again (jobs may not come from the API) into Python values."""
        model = self._model(params)
        return {name: getattr(model, name) for name in type(model).model_fields}

    def _model(self, values: Mapping[str, Any]) -> BaseModel:
        try:
            return self.params.model_validate(values)
        except ValidationError as exc:
            raise InvalidArguments(_errors(exc)) from None


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _params_model(name: str, fn: TaskFn) -> tuple[type[BaseModel], tuple[str, ...]]:
    """A pydantic model of every parameter after the leading ``TaskContext``."""
    signature = inspect.signature(fn)
    hints = get_type_hints(fn, include_extras=True)
    parameters = list(signature.parameters.values())
    if not parameters or hints.get(parameters[0].name) is not TaskContext:
        raise _refused(
            fn,
            f"task {name!r}: the first parameter must be annotated TaskContext, e.g. "
            f"`def {fn.__name__}(task: TaskContext, ...)`",
        )
    fields: dict[str, Any] = {}
    for p in parameters[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise _refused(fn, f"task {name!r}: *args/**kwargs cannot be validated; name every parameter")
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (hints.get(p.name, Any), default)
    model = create_model(f"{name}_params", __base__=_Params, **fields)
    return model, tuple(p.name for p in parameters[1:] if p.kind is not p.KEYWORD_ONLY)


class TaskRegistry:
    """Name -> TaskSpec. Shared by the API (validation) and the worker (execution)."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    def task(
        self,
        name: str | None = None,
        *,
        timeout_seconds: float | None = None,
        retry: RetryPolicy | None = None,
        schedules: Sequence[Schedule] = (),
        queue: str = lanes.DEFAULT_QUEUE,
        queues: Sequence[str] = (),
        priority: int = 0,
        concurrency: Limit | int | None = None,
        rate: Rate | None = None,
    ) -> Callable[[F], F]:
        """Register ``fn(task: TaskContext, ...)`` under ``name`` (default: its own name). ``async def`` runs on
        the worker's event loop; a plain ``def`` runs in the worker's thread pool. Each of ``schedules`` also
        runs it periodically (with the schedule's ``kwargs``).

        It waits on named queue ``queue`` (a submit may pick another of ``queues``), at ``priority`` (0-9, higher
        first) unless a submit says otherwise; ``concurrency`` caps its running jobs across all workers (an int,
        or ``Limit(n, key="arg")`` per value of an argument) and ``rate`` its starts (``Rate(50, per_seconds=1)``)."""
        limit = Limit(concurrency) if isinstance(concurrency, int) else concurrency

        def register(fn: F) -> F:
            task_name = name or fn.__name__
            if not is_task_name(task_name):
                raise _refused(fn, f"task name {task_name!r} must match {TASK_NAME_REGEX}")
            if task_name in self._specs:
                raise _refused(fn, f"task {task_name!r} is registered twice")
            if timeout_seconds is not None and not 0 < timeout_seconds <= MAX_JOB_TIMEOUT_SECONDS:  # nan too
                raise _refused(
                    fn,
                    f"task {task_name!r}: timeout_seconds must be positive, "
                    f"at most {MAX_JOB_TIMEOUT_SECONDS} (30 days)",
                )
            params, names = _params_model(task_name, fn)
            allowed = (queue, *[q for q in queues if q != queue])
            bad_queue = next((q for q in allowed if not lanes.is_queue_name(q)), None)
            if bad_queue is not None:
                raise _refused(fn, f"task {task_name!r}: queue name {bad_queue!r} must match {lanes.QUEUE_NAME_REGEX}")
            if not lanes.MIN_PRIORITY <= priority <= lanes.MAX_PRIORITY:
                raise _refused(fn, f"task {task_name!r}: priority must be 0 to 9")
            problem = lanes.limit_problem(limit, rate, tuple(params.model_fields))
            if problem is not None:
                raise _refused(fn, f"task {task_name!r}: {problem}")
            doc = inspect.getdoc(fn) or ""
            spec = TaskSpec(
                task_name,
                fn,
                params,
                timeout_seconds,
                doc.split("\n\n")[0],
                retry or NO_RETRIES,
                inspect.iscoroutinefunction(fn),
                tuple(schedules),
                _param_names=names,
                queue=queue,
                queues=allowed,
                priority=priority,
                concurrency=limit,
                rate=rate,
            )
            for schedule in schedules:  # a schedule's arguments must fit the task, checked now, not at 3 a.m.
                try:
                    spec.validate((), schedule.kwargs)
                except InvalidArguments as exc:
                    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors)
                    raise _refused(fn, f"task {task_name!r}: a schedule's kwargs do not fit it ({problems})") from None
            self._specs[task_name] = spec
            return fn

        return register

    def get(self, name: str) -> TaskSpec:
        """The spec registered under ``name``; ``UnknownTask`` otherwise."""
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownTask(name, self._specs) from None

    def names(self) -> list[str]:
        """The names of the registered tasks."""
        return list(self._specs)

    def claim_entries(self) -> list[str]:
        """The tasks this worker runs, as the claim script takes them (``TaskSpec.claim_entry``)."""
        return [spec.claim_entry() for spec in self._specs.values()]

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)
