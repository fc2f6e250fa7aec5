"""Reading a task's event stream across reconnects, with no event lost or repeated (sans I/O).

The sync and async clients open connections and sleep; this module decides. It remembers the last
``seq`` it handed out, so every connection resumes with ``?after=<seq>`` and anything sent twice
(a replay overlapping what arrived before a cut) is dropped. How a connection ended says what next:
an ``end`` event (or ``204``) stops, a ``reconnect`` frame reconnects after the server's hint, a cut
connection or a 503 reconnects after a backoff bounded by the retry budget.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from relay.client.config import ClientConfig, RetryPolicy
from relay.client.errors import RelayConnectionError, RelayError
from relay.client.models import Event, TaskView, WorkflowView
from relay.client.protocol import Call, submit_call, task_path, workflow_path
from relay.client.retry import Deadline, RetryBudget, bounded
from relay.client.senders import Timeouts, httpx_arguments

logger = logging.getLogger("relay.client")

NDJSON = "application/x-ndjson"
FINAL_EVENT = "end"
WORKFLOW_FINAL_EVENT = "workflow_end"


class StreamBroken(Exception):
    """A line that is not an event: the connection is treated as cut, and resumed."""


@dataclass(frozen=True, slots=True)
class Reconnect:
    """The server asked us to reconnect (it is going away) after ``wait`` seconds."""

    wait: float


@dataclass(frozen=True, slots=True)
class Ended:
    """The stream reached an ``end`` event, or the server said (204) we already had it."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """The connection failed or closed before an ``end``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The server answered the stream request with an error."""

    error: RelayError


ConnectionEnd = Ended | Reconnect | Dropped | Refused


@dataclass(frozen=True, slots=True)
class Next:
    """What to do after a connection ended: stop, look at the task's state first, or wait and reconnect."""

    stop: bool = False
    check_state: bool = False
    wait: float = 0.0


class Follower:
    """The state of one ``events()`` iteration: where to resume, and what to do after each connection.

    With ``until_final``, an ``end`` is not the end if the task is not in a final state any more (it was
    retried since): the iteration goes on with the next run's events.
    """

    def __init__(
        self,
        task_id: str,
        after: int,
        until_final: bool,
        policy: RetryPolicy,
        first_contact: bool = False,
        workflow: bool = False,
    ) -> None:
        self.task_id = task_id
        self.kind = "workflow" if workflow else "task"  # for messages: a workflow is not "task wf1"
        # A workflow's stream (``/workflows/{id}/events``) ends at its ``workflow_end``, not at a step's ``end``.
        self.path = workflow_path(task_id, "/events") if workflow else task_path(task_id, "/events")
        self.final = WORKFLOW_FINAL_EVENT if workflow else FINAL_EVENT
        self.last_seq = after
        self.until_final = until_final
        self._budget = RetryBudget(policy, first_contact=first_contact)
        self._polls = 0
        self._policy = policy

    def params(self) -> dict[str, int]:
        return {"after": self.last_seq}

    def answered(self) -> None:
        """The API answered this stream's request: it exists, so a later outage gets the whole retry budget,
        not the first-contact one (a queued task's stream may bring nothing but heartbeats for a long time)."""
        self._budget.answered()

    def feed(self, line: str) -> Event | Reconnect | None:
        """The event on this line (None for heartbeats, blank lines and repeats), or a reconnect request."""
        if not line.strip():
            return None
        item = parse_line(line)
        # Any well-formed line is progress (RetryPolicy): the API is up and serving this stream, so the next
        # outage gets the whole budget again. A heartbeat counts, as a long-deferred task's stream brings
        # nothing else; a bare 200 does not, or a proxy that answers and closes at once would be retried forever.
        self._budget.reset()
        if not isinstance(item, Event):
            return item
        if item.seq <= self.last_seq:
            return None  # already handed out before the connection was cut
        self.last_seq = item.seq
        self._polls = 0
        return item

    def after(self, end: ConnectionEnd) -> Next:
        """What to do once a connection ended this way (raises when giving up)."""
        if isinstance(end, Ended):
            return Next(check_state=True) if self.until_final else Next(stop=True)
        if isinstance(end, Reconnect):
            # A planned handover (the API is shutting down), not a failure: no budget spent.
            logger.info(
                "the API asked to reconnect; resuming %s %s after event %d", self.kind, self.task_id, self.last_seq
            )
            return Next(wait=end.wait)
        if isinstance(end, Refused):
            self._budget.answered()
            return Next(wait=self._budget.wait_or_raise(end.error))
        error = RelayConnectionError(f"the event stream of {self.kind} {self.task_id} broke: {end.reason}")
        return Next(wait=self._budget.wait_or_raise(error))

    def after_state(self, view: TaskView | WorkflowView | None) -> Next:
        """After an ``end`` with ``until_final``: stop if the task is final (or gone), else follow its next run."""
        if view is None or view.is_final:
            return Next(stop=True)
        # Retried since that end: its next events may not be published yet (the API answers 204 until
        # then), so poll with a growing pause rather than spin.
        wait = 0.0 if self._polls == 0 else min(self._policy.backoff_max, self._policy.backoff_base * 2**self._polls)
        self._polls += 1
        return Next(wait=wait)


def parse_line(line: str) -> Event | Reconnect | None:
    """One stream line: an event, a reconnect request, or None for a heartbeat (``StreamBroken`` if none)."""
    try:
        raw: Any = json.loads(line)
        kind = raw["type"]
        if kind == "heartbeat":
            return None
        if kind == "reconnect":
            hint = raw.get("data")
            retry_ms = hint.get("retry_ms", 1000) if isinstance(hint, dict) else 1000
            return Reconnect(max(0.0, float(retry_ms) / 1000))
        return Event.from_json(raw)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StreamBroken(f"not an event: {line[:100]!r}") from exc


def events_call(follower: Follower) -> Call:
    """The next connection's request: resume after the last event handed out."""
    return Call("GET", follower.path, params=follower.params(), headers={"Accept": NDJSON})


@dataclass
class RunWatch:
    """``run``'s view of one task (the same for both clients): its submit asking for the task's events on the
    response, and, fed the events, its result's value and how it ended."""

    task_id: str
    submit: Call
    deadline: Deadline | None
    value: Any = None
    ended: str = ""

    @classmethod
    def start(
        cls, task: str, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], wait: float | None, **options: Any
    ) -> RunWatch:
        call = submit_call(task, args, kwargs, **options)
        task_id = str((call.json or {})["id"])
        deadline = Deadline(task_id, wait) if wait is not None else None
        return cls(task_id, replace(call, headers={"Accept": NDJSON}), deadline)

    def feed(self, event: Event) -> None:
        if event.type == "result":
            self.value = event.data
        elif event.type == FINAL_EVENT:
            self.ended = str((event.data or {}).get("state", ""))

    @property
    def succeeded(self) -> bool:
        """Whether the stream ended with the task succeeded (else its state says why: failed, aborted, or
        retried since that end, and a retry is followed)."""
        return self.ended == "succeeded"

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline.remaining()


def stream_timeouts(config: ClientConfig, deadline: Deadline | None) -> Timeouts:
    """A stream's: a read may wait ``stream_read_timeout`` (heartbeats keep it alive), never past the caller's
    deadline."""
    return Timeouts(bounded(config.timeout, deadline), bounded(config.stream_read_timeout, deadline))


def stream_request(call: Call, config: ClientConfig, deadline: Deadline | None) -> dict[str, Any]:
    """``call`` opening a stream (``events_call``, or a submit asking for its events), as arguments of
    httpx's ``build_request`` (the async client's), with ``stream_timeouts``."""
    return httpx_arguments(call, stream_timeouts(config, deadline))


def describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
