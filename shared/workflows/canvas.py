"""A workflow's canvas, as submitted (``POST /workflows``), and its compiled form: numbered steps and dependencies.

The canvas is Celery's: a task (a signature: ``task``, ``args``, ``kwargs``, options), a ``chain`` (each step
takes the value of the one before it as its first positional argument, unless it is ``immutable``, Celery's
``.si()``), a ``group`` (its members run in parallel; its value is the list of theirs, in order), a ``chord`` (a
group, then a ``callback`` that takes the group's list once every member ended) and a ``map`` (one step per item,
``task(item, *args, **kwargs)``: a group written shortly). Nodes nest freely.

A map without ``items`` maps over the value before it (a fan-out whose width is known only at run time, Celery's
chain into a map of the previous result): it compiles to one step of its own (``Step.mapped``), which takes that
value as its input like a chain's step but runs no task: the script that releases it expands it into one member
step per item, numbered after the workflow's last step (``lib.lua``, ``relay_flow_expand``).

Compiling is pure (no I/O): every task node becomes a step numbered in canvas order, with the steps it waits for
(its predecessors) and its input, a template of those steps' values (``@3``, or ``[@3,@4]`` after a group), which
the script that releases the step fills in with the values the steps left (``lib.lua``). The workflow's own value
is the template of its root node.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from shared.lanes import QUEUE_NAME_REGEX
from shared.serialization import dumps
from shared.tasks import TaskId, TaskSubmission

MAX_STEPS = 10_000  # a workflow's steps (the scripts that read them all stay well under a second)


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepOptions(_Node):
    """A step's own options, as a task submit's (``POST /tasks``)."""

    timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    max_retries: Annotated[int, Field(ge=0)] | None = None
    queue: Annotated[str, Field(pattern=f"^{QUEUE_NAME_REGEX}$")] | None = None
    priority: Annotated[int, Field(ge=0, le=9)] | None = None


class TaskNode(StepOptions):
    """One step: a task and its arguments (Celery's signature)."""

    task: Annotated[str, Field(min_length=1, max_length=200)]
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    immutable: bool = Field(False, description="Takes no value from the steps before it (Celery's .si()).")


class ChainNode(_Node):
    """Steps one after another, each taking the value of the one before it."""

    chain: Annotated[list[Node], Field(min_length=1)]


class GroupNode(_Node):
    """Steps in parallel; the group's value is the list of their values, in order."""

    group: Annotated[list[Node], Field(min_length=1)]


class ChordNode(_Node):
    """A group, then ``callback`` with the group's list once every member ended."""

    chord: Annotated[list[Node], Field(min_length=1)]
    callback: Node
    allow_failures: bool = Field(
        False,
        description="Run the callback even if members failed: a failed member's entry in its list is "
        '{"state": "failed", "task_id": ..., "error": {...}} instead of a result.',
    )


class MapNode(StepOptions):
    """One step of ``map`` per item of ``items``: ``map(item, *args, **kwargs)``, in parallel (a group). Without
    ``items``, one per item of the value before it, which must be a list, known when that value is."""

    map: Annotated[str, Field(min_length=1, max_length=200)]
    items: Annotated[list[Any], Field(min_length=1)] | None = Field(
        None,
        description="The items, one step each. Absent (or null): the value of the step before it in a chain (or the "
        "list of a group before it), which must be a list; its steps are added when that value is known, and the "
        "map's value is the list of theirs ([] for an empty list).",
    )
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


NodeKind = Literal["task", "chain", "group", "chord", "map"]
KINDS: tuple[NodeKind, ...] = ("task", "chain", "group", "chord", "map")


def _kind(value: Any) -> str | None:
    """Which node a JSON object is, by its key: ``task``, ``chain``, ``group``, ``chord`` or ``map``."""
    if isinstance(value, dict):
        return next((k for k in KINDS if k in value), None)
    kinds: dict[type, str] = {TaskNode: "task", ChainNode: "chain", GroupNode: "group", ChordNode: "chord"}
    return kinds.get(type(value), "map" if isinstance(value, MapNode) else None)


Node = Annotated[
    Annotated[TaskNode, Tag("task")]
    | Annotated[ChainNode, Tag("chain")]
    | Annotated[GroupNode, Tag("group")]
    | Annotated[ChordNode, Tag("chord")]
    | Annotated[MapNode, Tag("map")],
    Discriminator(_kind),
]
ChainNode.model_rebuild()
GroupNode.model_rebuild()
ChordNode.model_rebuild()


class WorkflowSubmission(_Node):
    """Body of ``POST /workflows``."""

    workflow: Node
    id: TaskId | None = None


@dataclass
class Step:
    """One step of a compiled workflow."""

    index: int
    node: TaskNode
    preds: list[int] = field(default_factory=list)
    input: str | None = None  # the template of its input (``@3``, ``[@3,@4]``), or None: it takes none
    tolerant: bool = False  # accepts failed inputs (a chord's callback that allows failures)
    succs: list[int] = field(default_factory=list)
    mapped: bool = False  # a map over its input: expands into one step of ``node`` per item (module docstring)

    @property
    def piped(self) -> bool:
        """It takes a value as its first positional argument."""
        return self.input is not None

    def submission(self, task_id: str) -> TaskSubmission:
        """The step as a task submit, under ``task_id``."""
        options = self.node.model_dump(include={"timeout_seconds", "max_retries", "queue", "priority"})
        return TaskSubmission(task=self.node.task, args=self.node.args, kwargs=self.node.kwargs, id=task_id, **options)


@dataclass
class Compiled:
    """A workflow as its scripts run it: its steps, its value's template and its tree (for ``GET``)."""

    steps: list[Step]
    root: str
    tree: dict[str, Any]

    @property
    def sinks(self) -> int:
        """Steps nothing follows: the workflow succeeded when they all did."""
        return sum(1 for s in self.steps if not s.succs)

    @property
    def dynamic(self) -> bool:
        """It has maps over the value before them: its number of steps is known only as it runs."""
        return any(s.mapped for s in self.steps)


@dataclass(frozen=True)
class _Value:
    """What flows into the next node: a template of step values, the steps it waits for, and whether failed
    values are accepted."""

    template: str
    deps: tuple[int, ...]
    tolerant: bool = False


class CanvasError(ValueError):
    """A canvas that cannot be compiled."""


class TooManySteps(CanvasError):
    """The canvas has more than ``MAX_STEPS`` steps."""


class NothingToMap(CanvasError):
    """A map without ``items`` where no value comes before it."""


def compile_canvas(root: Node, max_steps: int = MAX_STEPS) -> Compiled:
    """Number the steps of ``root`` and link them (see the module docstring)."""
    steps: list[Step] = []
    value, tree = _compile(root, None, steps, max_steps)
    for step in steps:
        for pred in step.preds:
            steps[pred].succs.append(step.index)
    return Compiled(steps, value.template, tree)


def _compile(node: Node, incoming: _Value | None, steps: list[Step], max_steps: int) -> tuple[_Value, dict[str, Any]]:
    if isinstance(node, TaskNode):
        return _task(node, incoming, steps, max_steps)
    if isinstance(node, ChainNode):
        value, children = incoming, []
        for child in node.chain:
            value, tree = _compile(child, value, steps, max_steps)
            children.append(tree)
        assert value is not None
        return value, {"kind": "chain", "children": children}
    if isinstance(node, MapNode):
        options = node.model_dump(include={"timeout_seconds", "max_retries", "queue", "priority"})
        if node.items is None:
            return _map_over(node, incoming, steps, max_steps, options)
        members: list[Node] = [
            TaskNode(task=node.map, args=[item, *node.args], kwargs=node.kwargs, immutable=True, **options)
            for item in node.items
        ]
        value, tree = _group(members, incoming, steps, max_steps)
        return value, tree | {"kind": "map", "task": node.map}
    if isinstance(node, GroupNode):
        return _group(node.group, incoming, steps, max_steps)
    header, header_tree = _group(node.chord, incoming, steps, max_steps)
    value, body_tree = _compile(node.callback, replace(header, tolerant=node.allow_failures), steps, max_steps)
    return value, {"kind": "chord", "children": header_tree["children"], "callback": body_tree}


def _task(node: TaskNode, incoming: _Value | None, steps: list[Step], max_steps: int) -> tuple[_Value, dict[str, Any]]:
    if len(steps) >= max_steps:
        raise TooManySteps(f"a workflow has at most {max_steps} steps")
    index = len(steps)
    step = Step(index, node)
    if incoming is not None:
        step.preds = list(incoming.deps)
        step.tolerant = incoming.tolerant
        step.input = None if node.immutable else incoming.template
    steps.append(step)
    return _Value(f"@{index}", (index,)), {"kind": "task", "step": index, "task": node.task}


def _map_over(
    node: MapNode, incoming: _Value | None, steps: list[Step], max_steps: int, options: dict[str, Any]
) -> tuple[_Value, dict[str, Any]]:
    """A map over the value before it: one step taking that value, marked to expand (module docstring)."""
    if incoming is None:
        raise NothingToMap(
            f"map {node.map!r} has no items and no step before it whose value it could map over: give it items, "
            "or put it after a step in a chain"
        )
    value, _ = _task(TaskNode(task=node.map, args=node.args, kwargs=node.kwargs, **options), incoming, steps, max_steps)
    steps[-1].mapped = True
    return value, {"kind": "map", "task": node.map, "step": steps[-1].index, "children": []}


def _group(
    members: list[Node], incoming: _Value | None, steps: list[Step], max_steps: int
) -> tuple[_Value, dict[str, Any]]:
    values, children = [], []
    for member in members:
        value, tree = _compile(member, incoming, steps, max_steps)
        values.append(value)
        children.append(tree)
    deps = tuple(sorted({d for v in values for d in v.deps}))
    template = "[" + ",".join(v.template for v in values) + "]"
    return _Value(template, deps), {"kind": "group", "children": children}


def fingerprint(submission: WorkflowSubmission) -> str:
    """Identifies what a submit asks for: the same id with another canvas is a conflict."""
    canvas = submission.model_dump(mode="json", exclude={"id"}, exclude_defaults=True)
    return hashlib.sha1(dumps(canvas), usedforsecurity=False).hexdigest()
