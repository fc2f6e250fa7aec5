"""Relay's job and result records: arq's own formats (``arq.jobs``), plus a few fields arq ignores.

arq reads ``f``, ``a``, ``k``, ``t`` and ``et`` from a job and those plus ``s``, ``r``, ``st``, ``ft``, ``q`` and
``id`` from a result, so its ``Job`` API can read results (a waiting job is in its task's lane, not in arq's
queue: arq's ``Job.status`` calls it not found, and its ``Job.abort`` takes effect when the job falls due).
Relay writes the records itself (in its Lua scripts) and puts its own fields first, in a fixed order, so a script
can read a task's name, fingerprint and state from the first bytes of a record (``GETRANGE``) without decoding a
payload that may be a megabyte.

A workflow's step names its workflow and step (``wf``, ``ws``, with its ``tb`` beside them, right after ``ln``), a
child task its parent (``pt``), where ``lib.lua``'s ``relay_record_links`` reads them, and after those a job
submitted with its events streamed back names the submitting API process's inbox (``ib``, ``keys.inbox_channel``):
its events are published there too, so that stream needs no subscription of its own. A step that takes the value
of the steps before it has it in ``in`` (added by the script that releases it), for the parameter its submit
named in ``k.pipe``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

from shared.serialization import dumps, loads

WAITING: Final = "q"  # a job waiting for its first try (or its next, after a re-queue)
RETRYING: Final = "r"  # a job waiting for a retry after a failure


# The fields ``JobRecord`` reads; any other is kept in ``extra`` (a trace context, a field of a newer version).
_JOB_FIELDS: Final = frozenset(
    {"f", "fp", "w", "t", "a", "k", "et", "fl", "tb", "le", "nt", "rp", "du", "ln", "wf", "ws", "pt", "in", "ib"}
)


def fingerprint(name: str, job_kwargs: dict[str, Any]) -> str:
    """Identifies what a submit asks for: the same id with another fingerprint is a conflict."""
    return hashlib.sha1(dumps([name, job_kwargs]), usedforsecurity=False).hexdigest()


@dataclass
class JobRecord:
    """A job waiting or running: arq's fields plus Relay's retry bookkeeping."""

    function: str
    kwargs: dict[str, Any]
    enqueue_ms: int
    fp: str
    wait: str = WAITING
    failures: int = 0  # failed tries that were retried
    last_error: dict[str, Any] | None = None
    next_try_ms: int | None = None
    tries_base: int = 0  # tries used before a manual retry started this round
    reply: bool = False  # a Service Bus reply is requested
    due_ms: int | None = None  # when a deferred job falls due (Redis's clock; set by the enqueue script)
    lane: str | None = None  # its lane id (``shared.lanes``); None for a job from before named queues
    flow: str | None = None  # the workflow this job is a step of (``shared.workflows``)
    step: int | None = None  # its step in that workflow
    parent: str | None = None  # the task that submitted it (``await ctx.submit``)
    inbox: str | None = None  # the channel of the API process streaming its events to its submitter
    input: Any = None  # the value of the steps before it (see ``has_input``)
    has_input: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        """The task's validated arguments, with its input (a workflow's step) as the parameter it goes to."""
        params: dict[str, Any] = self.kwargs.get("params", {})
        piped = self.kwargs.get("pipe")
        if piped and self.has_input:
            return {piped: self.input} | params
        return params

    @property
    def link(self) -> str:
        """What a commit of this job names (``commit.lua``): '<workflow>|<step>' for a workflow's step or its
        children, '|' for another child task, '' for a task linked to nothing."""
        if self.flow is not None:
            return f"{self.flow}|{self.step}"
        return "|" if self.parent is not None else ""

    @property
    def timeout_seconds(self) -> float | None:
        """The timeout the submit asked for, if any."""
        value = self.kwargs.get("timeout_seconds")
        return float(value) if value is not None else None

    @property
    def max_retries(self) -> int | None:
        """The retries the submit allowed, if it lowered the task's policy."""
        value = self.kwargs.get("max_retries")
        return int(value) if value is not None else None

    def encode(self) -> bytes:
        """The record as stored (Relay's fields first; see the module docstring)."""
        data: dict[str, Any] = {"f": self.function, "fp": self.fp, "w": self.wait, "et": self.enqueue_ms}
        if self.lane is not None:
            data["ln"] = self.lane  # right after "et": the scripts read it there (lib.lua relay_record_lane)
        if self.flow is not None:  # then its links (lib.lua relay_record_links)
            data |= {"wf": self.flow, "ws": self.step, "tb": self.tries_base}
        if self.parent is not None:
            data["pt"] = self.parent
        if self.inbox is not None:
            data["ib"] = self.inbox
        data |= {"t": None, "a": [], "k": self.kwargs, "fl": self.failures, "tb": self.tries_base}
        if self.last_error is not None:
            data["le"] = self.last_error
        if self.next_try_ms is not None:
            data["nt"] = self.next_try_ms
        if self.reply:
            data["rp"] = 1
        if self.due_ms is not None:
            data["du"] = self.due_ms
        if self.has_input:
            data["in"] = self.input
        return dumps(data | self.extra)

    @classmethod
    def decode(cls, raw: bytes) -> JobRecord:
        """A stored record back (``ValueError`` if it is not one of Relay's)."""
        data = loads(raw)
        if not isinstance(data, dict) or "f" not in data or "k" not in data:
            raise ValueError("not a job record")
        known = _JOB_FIELDS
        return cls(
            function=str(data["f"]),
            kwargs=dict(data["k"]),
            enqueue_ms=int(data.get("et") or 0),
            fp=str(data.get("fp", "")),
            wait=str(data.get("w", WAITING)),
            failures=int(data.get("fl") or 0),
            last_error=data.get("le"),
            next_try_ms=data.get("nt"),
            tries_base=int(data.get("tb") or 0),
            reply=bool(data.get("rp")),
            due_ms=int(data["du"]) if data.get("du") is not None else None,
            lane=str(data["ln"]) if data.get("ln") is not None else None,
            flow=str(data["wf"]) if data.get("wf") is not None else None,
            step=int(data["ws"]) if data.get("ws") is not None else None,
            parent=str(data["pt"]) if data.get("pt") is not None else None,
            inbox=str(data["ib"]) if data.get("ib") is not None else None,
            input=data.get("in"),
            has_input="in" in data,
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass
class ResultRecord:
    """A task's outcome, in arq's result format with Relay's state (``rs``) in front."""

    state: str  # succeeded, failed or aborted
    function: str
    kwargs: dict[str, Any]
    job_try: int
    enqueue_ms: int
    result: Any
    start_ms: int | None
    finish_ms: int
    queue_name: str
    task_id: str
    fp: str = ""
    tries_base: int = 0
    reply: bool = False
    lane: str | None = None
    flow: str | None = None
    step: int | None = None
    parent: str | None = None

    def encode(self) -> bytes:
        """The record as stored (a workflow's step names it right after ``fp``: ``flow_retry.lua`` reads it)."""
        data: dict[str, Any] = {"rs": self.state, "f": self.function, "fp": self.fp}
        if self.flow is not None:
            data |= {"wf": self.flow, "ws": self.step}
        if self.parent is not None:
            data["pt"] = self.parent
        data |= {"t": self.job_try, "a": []}
        data |= {"k": self.kwargs, "et": self.enqueue_ms, "s": self.state == "succeeded", "r": self.result}
        # arq needs a start time; a task that never started reports its finish time there and null in ``rst``.
        data |= {"st": self.start_ms or self.finish_ms, "ft": self.finish_ms, "q": self.queue_name, "id": self.task_id}
        data |= {"rst": self.start_ms, "tb": self.tries_base}
        if self.reply:
            data["rp"] = 1
        if self.lane is not None:
            data["ln"] = self.lane
        return dumps(data)

    @classmethod
    def decode(cls, raw: bytes) -> ResultRecord:
        """A stored result back; results written by plain arq (no ``rs``) are classified by ``s``."""
        data = loads(raw)
        if not isinstance(data, dict) or "f" not in data:
            raise ValueError("not a result record")
        state = data.get("rs") or ("succeeded" if data.get("s") else "failed")
        return cls(
            state=str(state),
            function=str(data["f"]),
            kwargs=dict(data.get("k") or {}),
            job_try=int(data.get("t") or 0),
            enqueue_ms=int(data.get("et") or 0),
            result=data.get("r"),
            start_ms=data.get("rst", data.get("st")),
            finish_ms=int(data.get("ft") or 0),
            queue_name=str(data.get("q", "")),
            task_id=str(data.get("id", "")),
            fp=str(data.get("fp", "")),
            tries_base=int(data.get("tb") or 0),
            reply=bool(data.get("rp")),
            lane=str(data["ln"]) if data.get("ln") is not None else None,
            flow=str(data["wf"]) if data.get("wf") is not None else None,
            step=int(data["ws"]) if data.get("ws") is not None else None,
            parent=str(data["pt"]) if data.get("pt") is not None else None,
        )
