"""Celery's canvas for Relay's workflows: signatures (``.s()``, ``.si()``), ``|``, ``chain``, ``group``, ``chord``
and ``.map()``, turned into the JSON ``POST /workflows`` takes (docs/workflows.md).

```python
add, mul, tsum = relay.task("add"), relay.task("mul"), relay.task("tsum")
flow = (add.s(2, 2) | mul.s(4)).delay()                       # chain: 16
flow = chord([add.s(i, i) for i in range(10)], tsum.s()).delay()  # chord: 90
flow = (relay.task("numbers").s(3) | add.map(None, 10) | tsum.s()).delay()  # a map over [1, 2, 3]: 36
flow.result()
```

A signature made from a client's ``task(...)`` knows its client, so a canvas of them submits itself
(``.delay()``, ``.apply_async(id=...)``); any canvas can be given to ``client.workflow(canvas)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from relay.client.aio import AsyncClient
    from relay.client.sync import Client

Bound = Union["Client", "AsyncClient", None]
OPTIONS = ("queue", "priority", "timeout_seconds", "max_retries")


class Canvas:
    """A node of a workflow: composes with ``|`` (a chain) and submits through the client it came from."""

    client: Bound = None

    def to_json(self) -> dict[str, Any]:
        """The node as ``POST /workflows`` takes it."""
        raise NotImplementedError

    def __or__(self, other: Canvas) -> Canvas:
        if isinstance(self, Group):  # Celery: a group followed by a task is a chord
            return Chord(self.members, other, client=self.client or other.client)
        return Chain([*_steps_of(self), *_steps_of(other)], client=self.client or other.client)

    def apply_async(self, id: str | None = None) -> Any:
        """Submit through the client this canvas's signatures came from (``client.workflow``): a
        ``WorkflowHandle``, or with an ``AsyncClient`` an awaitable of an ``AsyncWorkflowHandle``."""
        if self.client is None:
            raise TypeError("this canvas has no client: submit it with client.workflow(canvas)")
        return self.client.workflow(self, id=id)

    def delay(self) -> Any:
        """``apply_async()`` with a new id."""
        return self.apply_async()


def _steps_of(node: Canvas) -> list[Canvas]:
    return list(node.steps) if isinstance(node, Chain) else [node]


@dataclass
class Signature(Canvas):
    """One task with some of its arguments (Celery's ``add.s(2, 2)``): in a chain it takes the value before
    it as its first positional argument, unless ``immutable`` (``.si()``)."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    immutable: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    client: Bound = field(default=None, repr=False, compare=False)

    def set(self, **options: Any) -> Signature:
        """A copy with step options: ``queue``, ``priority``, ``timeout_seconds``, ``max_retries``."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise TypeError(f"unknown step option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
        return replace(self, options=self.options | options)

    def to_json(self) -> dict[str, Any]:
        node = {"task": self.task, "args": list(self.args), "kwargs": dict(self.kwargs)}
        return node | ({"immutable": True} if self.immutable else {}) | self.options


@dataclass
class Chain(Canvas):
    """Steps one after another, each taking the value of the one before it."""

    steps: list[Canvas]
    client: Bound = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"chain": [step.to_json() for step in self.steps]}


@dataclass
class Group(Canvas):
    """Steps in parallel; its value is the list of theirs, in order."""

    members: list[Canvas]
    client: Bound = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"group": [member.to_json() for member in self.members]}


@dataclass
class Chord(Canvas):
    """A group, then ``callback`` with the group's list once every member ended (``allow_failures``: even if
    some failed; their entries are then ``{"state", "task_id", "error"}``)."""

    members: list[Canvas]
    callback: Canvas
    allow_failures: bool = False
    client: Bound = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        node = {"chord": [m.to_json() for m in self.members], "callback": self.callback.to_json()}
        return node | ({"allow_failures": True} if self.allow_failures else {})


@dataclass
class Map(Canvas):
    """One step of ``task`` per item, ``task(item, *args, **kwargs)``, in parallel (Celery's ``task.map``). With
    ``items`` None, one per item of the value before it in a chain (a list, known only when that step ended):
    ``list_urls.s(site) | fetch.map()``."""

    task: str
    items: list[Any] | None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    client: Bound = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        node: dict[str, Any] = {"map": self.task, "args": list(self.args), "kwargs": dict(self.kwargs)}
        return node | ({"items": list(self.items)} if self.items is not None else {})


def _client_of(nodes: Iterable[Canvas]) -> Bound:
    return next((n.client for n in nodes if n.client is not None), None)


def chain(*steps: Canvas) -> Chain:
    """``chain(a.s(), b.s(), c.s())``: the same as ``a.s() | b.s() | c.s()``."""
    return Chain(list(steps), client=_client_of(steps))


def group(*members: Canvas | Sequence[Canvas]) -> Group:
    """``group(a.s(1), a.s(2))`` or ``group([a.s(i) for i in ...])``."""
    flat: list[Canvas] = []
    for member in members:
        flat.extend([member] if isinstance(member, Canvas) else member)
    return Group(flat, client=_client_of(flat))


class _ChordHeader:
    """``chord(header)``, waiting for its callback: ``chord(header)(callback)`` as in Celery."""

    def __init__(self, members: list[Canvas], allow_failures: bool) -> None:
        self.members = members
        self.allow_failures = allow_failures

    def __call__(self, callback: Canvas) -> Chord:
        return Chord(self.members, callback, self.allow_failures, client=_client_of([*self.members, callback]))


def chord(
    header: Group | Sequence[Canvas], callback: Canvas | None = None, *, allow_failures: bool = False
) -> Chord | _ChordHeader:
    """``chord([a.s(i) for i in ...], tsum.s())``, or Celery's ``chord(header)(callback)``."""
    members = list(header.members) if isinstance(header, Group) else list(header)
    if callback is None:
        return _ChordHeader(members, allow_failures)
    return Chord(members, callback, allow_failures, client=_client_of([*members, callback]))


def as_canvas(value: Canvas | dict[str, Any]) -> dict[str, Any]:
    """A canvas, or its JSON already, as ``POST /workflows`` takes it."""
    return value.to_json() if isinstance(value, Canvas) else dict(value)


def signature(task: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any) -> Signature:
    """Celery's ``signature("add", args=(2, 2))``: a step by task name, with no client."""
    immutable = bool(options.pop("immutable", False))
    return Signature(task, tuple(args), dict(kwargs or {}), immutable).set(**options)


__all__ = ["Canvas", "Chain", "Chord", "Group", "Map", "Signature", "chain", "chord", "group", "signature"]
