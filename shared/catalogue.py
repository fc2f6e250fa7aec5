"""What the live workers offer: each task's argument schema and limits, published by workers in Redis so an API
process validates submits without the tasks' code (or their dependencies).

A worker stores its catalogue once (``relay:catalogue:<digest>``, the same for every worker with the same task
modules) and names the digest in its presence record (``shared.presence``, refreshed every few seconds). A
worker counts as live while its record is younger than ``STALE_SECONDS`` (a worker that stopped cleanly too,
so a restart does not turn submits away); a task no live worker offers is refused (``unknown_task``). An API
process reads the records at most once a second, and each catalogue once (a digest names its content).

A submit does not wait for that read: once its copy is older than ``REFRESH_SECONDS``, a request answers from it
and starts a read in the background, so what it answers from is at most ``MAX_STALE_SECONDS`` old (older, when no
request came for a while or reads fail, a request reads first, as at start). A name the copy does not know is read
again at once before it is refused (a worker that has just started is taken at its word), at most every
``MISS_REFRESH_SECONDS``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeGuard

from redis.asyncio import Redis

from shared import keys, presence
from shared.arguments import bind
from shared.errors import InvalidArguments, UnknownTask
from shared.schema_check import Check, compile_schema, is_number
from shared.serialization import dumps, loads
from shared.settings import MAX_JOB_TIMEOUT_SECONDS
from shared.waiting import cancel_and_wait

if TYPE_CHECKING:  # imported where first needed: a worker validates few arguments with it (~0.15 s of its start)
    from jsonschema.exceptions import ValidationError as SchemaError
    from jsonschema.protocols import Validator

logger = logging.getLogger("relay.catalogue")

STALE_SECONDS: Final = 30.0
CATALOGUE_TTL_SECONDS: Final = 24 * 3600
STORE_EVERY_SECONDS: Final = 3600.0
REFRESH_SECONDS: Final = 1.0
MAX_STALE_SECONDS: Final = 3.0  # the oldest copy a request answers from without reading it again first
MISS_REFRESH_SECONDS: Final = 0.1  # an unknown name reads the heartbeats again, at most this often


def load_validation() -> None:
    """Import ``jsonschema`` now (an API process, at start): a worker imports it only if it validates arguments the
    compiled check cannot pass (``TaskOffer.validate``), an API process should not make a request wait for it."""
    import jsonschema  # noqa: F401


def encode(tasks: Sequence[Mapping[str, Any]]) -> tuple[str, bytes]:
    """A catalogue's digest and stored form."""
    body = dumps(sorted(tasks, key=lambda t: str(t["name"])))
    return hashlib.sha256(body).hexdigest()[:32], body


async def store(redis: Redis, digest: str, body: bytes) -> None:
    """Store a catalogue (a worker, when it starts, and every hour after: it expires a day after the last)."""
    with keys.on_shard(0):  # per deployment, not per task: in shard 0 (shared/keys.py)
        key = keys.catalogue(digest)
    await redis.set(key, body, ex=CATALOGUE_TTL_SECONDS)


@dataclass
class TaskOffer:
    """One task as the live workers describe it: enough to validate a submit and to document it."""

    name: str
    description: str
    schema: dict[str, Any]
    positional: tuple[str, ...]
    timeout_seconds: float | None  # None: its workers published none usable (``_published_seconds``)
    max_retries: int
    workers: int = 0
    queue: str = "default"
    queues: tuple[str, ...] = ("default",)
    priority: int = 0
    concurrency: dict[str, Any] | None = None  # {"running", "key"} (``shared.lanes.Limit.describe``)
    rate: dict[str, Any] | None = None  # {"starts", "per_seconds", "key", "burst"}
    _validator: Validator | None = field(default=None, repr=False)
    _check: Check | None = field(default=None, repr=False)  # ``shared.schema_check``: a fast "valid"
    _defaults: tuple[tuple[str, Any], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        """Compiled once per offer (a catalogue's offers are built once per version of it)."""
        self._check = compile_schema(self.schema)
        self._defaults = tuple(
            (name, prop["default"])
            for name, prop in self.schema.get("properties", {}).items()
            if isinstance(prop, dict) and "default" in prop
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskOffer:
        return cls(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            schema=dict(data["schema"]),
            positional=tuple(data.get("positional", ())),
            timeout_seconds=_published_seconds(data.get("timeout_seconds")),
            max_retries=int(data.get("max_retries", 0)),
            queue=str(data.get("queue") or "default"),
            queues=tuple(data.get("queues") or (data.get("queue") or "default",)),
            priority=int(data.get("priority") or 0),
            concurrency=data.get("concurrency"),
            rate=data.get("rate"),
        )

    @property
    def concurrency_key(self) -> str | None:
        """The argument whose value splits its concurrency limit, if any."""
        return self.concurrency.get("key") if self.concurrency else None

    @property
    def rate_key(self) -> str | None:
        """The argument whose value splits its rate limit, if any."""
        return self.rate.get("key") if self.rate else None

    def max_timeout(self, default: float) -> float:
        """The longest timeout its workers allow (they published their own default in); ``default`` (this
        process's ``RELAY_JOB_TIMEOUT_SECONDS``) if they published none usable."""
        return self.timeout_seconds or default

    def validate(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Bind positional arguments, check everything against the published schema, fill in defaults."""
        params = bind(self.positional, args, kwargs)
        if self._check is None or not self._check(params):  # not certainly valid: jsonschema decides, and words it
            problems = sorted(self._errors(params), key=lambda e: list(e.absolute_path))
            if problems:
                raise InvalidArguments([p for e in problems for p in _problems(e)])
        for name, default in self._defaults:
            if name not in params:
                params[name] = default
        return params

    def _errors(self, params: dict[str, Any]) -> Iterator[SchemaError]:
        if self._validator is None:
            validator = _validator_class()
            self._validator = validator(self.schema, format_checker=validator.FORMAT_CHECKER)
        return self._validator.iter_errors(params)

    def validate_piped(self, args: Sequence[Any], kwargs: Mapping[str, Any], piped: str) -> dict[str, Any]:
        """``validate`` for a workflow's step whose parameter ``piped`` takes the value of the steps before it
        (known only when it runs, where the worker checks it): every other argument is checked now."""
        params = bind(self.positional, [None, *args], kwargs)
        del params[piped]
        problems = sorted(self._errors(params), key=lambda e: list(e.absolute_path))
        found = [p for e in problems for p in _problems(e) if p["loc"][:1] != [piped]]
        if found:
            raise InvalidArguments(found)
        for name, prop in self.schema.get("properties", {}).items():
            if name not in params and name != piped and isinstance(prop, dict) and "default" in prop:
                params[name] = prop["default"]
        return params


def _published_seconds(value: Any) -> float | None:
    """A timeout a worker published, or None if it is none a submit can be checked against: missing, not a
    number, not finite (a worker of an older version published an infinite one as null), not positive or beyond
    what any worker may have (``MAX_JOB_TIMEOUT_SECONDS``). One bad offer must not fail every submit of its task."""
    if not is_number(value):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and 0 < seconds <= MAX_JOB_TIMEOUT_SECONDS else None


@functools.cache
def _validator_class() -> type[Validator]:
    """Draft 2020-12 with Relay's "number" (``shared.schema_check.is_number``: no int a float cannot hold, which
    the worker's pydantic refuses), so such an argument is refused at submit, not accepted to fail every try."""
    from jsonschema import Draft202012Validator, validators  # here, not at the top: see the TYPE_CHECKING import

    checker = Draft202012Validator.TYPE_CHECKER.redefine("number", lambda _, instance: is_number(instance))
    validator: type[Validator] = validators.extend(Draft202012Validator, type_checker=checker)  # type: ignore[no-untyped-call]
    return validator


def _too_large(value: object) -> TypeGuard[int]:
    """An int a float cannot hold."""
    return isinstance(value, int) and not isinstance(value, bool) and not is_number(value)


def _problems(error: SchemaError) -> list[dict[str, Any]]:
    """A schema error as Relay reports argument problems: where (``loc``), what (``msg``), which rule (``type``),
    one per argument (an unexpected argument each, so a body with 60,000 of them gets a capped list, not one
    60,000-name message)."""
    loc: list[Any] = list(error.absolute_path)
    instance, expected, schema = error.instance, error.validator_value, error.schema
    if error.validator == "required" and isinstance(instance, dict) and isinstance(expected, list):
        missing = [name for name in expected if name not in instance]
        return [{"loc": [*loc, name], "msg": "missing", "type": "required"} for name in missing]
    if error.validator == "additionalProperties" and isinstance(instance, dict) and isinstance(schema, dict):
        extra = sorted(set(instance) - set(schema.get("properties", {})))
        return [{"loc": [*loc, name], "msg": "unexpected argument", "type": "extra_forbidden"} for name in extra]
    message = error.message
    if _too_large(instance):  # its message would start with all its digits (up to 4300): say what is wrong instead
        types = expected if isinstance(expected, list) else [expected]
        if error.validator == "type" and "number" in types:
            return [{"loc": loc, "msg": "an integer too large for a number (at most about 1.8e308)", "type": "type"}]
        message = message.replace(repr(instance), f"an integer of {len(str(abs(instance)))} digits")
    return [{"loc": loc, "msg": message[:200], "type": str(error.validator)}]


class Catalogue:
    """The tasks the live workers of one queue offer, as seen by an API process (see the module docstring)."""

    def __init__(self, redis: Redis, queue_name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._clock = clock
        self._queue_name = queue_name
        self._bodies: dict[str, list[dict[str, Any]]] = {}  # digest -> tasks (a digest's content never changes)
        self._offers: dict[str, TaskOffer] = {}
        self._offers_digests: frozenset[str] = frozenset()
        self._fresh_until = 0.0
        self._refreshed_at = 0.0
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        self.workers = 0
        self._serving: dict[str, frozenset[str]] = {}  # task -> the named queues live workers run it on

    async def get(self, name: str) -> TaskOffer:
        """The offer for ``name``; ``UnknownTask`` (naming what is offered) if no live worker offers it."""
        offers = await self.offers()
        if name not in offers and self._clock() - self._refreshed_at > MISS_REFRESH_SECONDS:
            offers = await self.offers(force=True)  # a worker that has just started is taken at its word at once
        offer = offers.get(name)
        if offer is None:
            if not offers:
                why = f"no worker is running on this queue (none has offered a task in the last {STALE_SECONDS:g}s)"
                raise UnknownTask(name, [], why)
            raise UnknownTask(name, sorted(offers))
        return offer

    async def serves(self, name: str, queue: str) -> bool:
        """Whether a live worker runs task ``name`` on named queue ``queue`` (``RELAY_QUEUES``)."""
        await self.offers()
        return queue in self._serving.get(name, frozenset())

    async def known_queues(self) -> frozenset[str]:
        """Every named queue a live worker serves or a live worker's task may be sent to (a pool scaled to zero
        still has its queue named by the tasks the other workers publish)."""
        offers = await self.offers()
        served = {q for queues in self._serving.values() for q in queues}
        return frozenset(served.union(*(offer.queues for offer in offers.values())))

    def cached(self, name: str) -> TaskOffer | None:
        """The last known offer for ``name``, without a Redis call (for labels like a timeout shown in a view)."""
        return self._offers.get(name)

    async def offers(self, force: bool = False) -> dict[str, TaskOffer]:
        """Name -> offer, read at most every ``REFRESH_SECONDS`` (unless ``force``); a copy up to
        ``MAX_STALE_SECONDS`` old is answered at once while a background read refreshes it."""
        if not force:
            now = self._clock()
            if now < self._fresh_until:
                return self._offers
            if self._refreshed_at and now - self._refreshed_at < MAX_STALE_SECONDS:
                if self._refresher is None or self._refresher.done():
                    self._refresher = asyncio.create_task(self._refresh_quietly(), name="relay-catalogue")
                return self._offers
        await self._read(force)
        return self._offers

    async def _read(self, force: bool) -> None:
        async with self._lock:
            if force or self._clock() >= self._fresh_until:
                await self._refresh()
                self._refreshed_at = self._clock()
                self._fresh_until = self._refreshed_at + REFRESH_SECONDS

    async def _refresh_quietly(self) -> None:
        """A background read: a failure leaves the copy to age, until a request reads (and fails) itself."""
        try:
            await self._read(force=False)
        except Exception as exc:  # a Redis error, typically: the request that reads next reports it
            logger.debug("task catalogue: background read failed: %s", exc)

    async def close(self) -> None:
        """Stop a background read still under way."""
        if self._refresher is not None:
            await cancel_and_wait(self._refresher)

    async def _refresh(self) -> None:
        fields, redis_now_ms = await presence.records(self._redis, self._queue_name)
        cutoff = redis_now_ms - STALE_SECONDS * 1000  # both on Redis's clock (shared.presence)
        live: list[tuple[int, str]] = []
        queues_of: dict[str, set[str]] = {}  # digest -> the named queues its live workers serve
        for raw in fields.values():
            try:
                record = loads(raw)
                seen, digest = int(record["seen_ms"]), str(record["catalogue"])
                served = [str(q) for q in record.get("queues") or ["default"]]
            except (ValueError, KeyError, TypeError):
                continue  # a record of another version, or unreadable: not an offer
            if seen >= cutoff:
                live.append((seen, digest))
                queues_of.setdefault(digest, set()).update(served)
        missing = sorted({d for _, d in live} - set(self._bodies))
        if missing:
            with keys.on_shard(0):  # per deployment: in shard 0 (shared/keys.py)
                names = [keys.catalogue(d) for d in missing]
            for digest, raw in zip(missing, await self._redis.mget(names), strict=True):
                if raw:
                    self._bodies[digest] = _readable(digest, raw)
        self.workers = len(live)
        digests = frozenset(d for _, d in live if d in self._bodies)
        counts: dict[str, int] = {}
        serving: dict[str, set[str]] = {}
        for _, digest in live:
            for task in self._bodies.get(digest, []):
                counts[task["name"]] = counts.get(task["name"], 0) + 1
                serving.setdefault(task["name"], set()).update(queues_of[digest])
        self._serving = {name: frozenset(queues) for name, queues in serving.items()}
        if digests != self._offers_digests:
            offers: dict[str, TaskOffer] = {}
            for _, digest in sorted(live):  # the newest heartbeat's version of a task wins (a rolling deploy)
                for task in self._bodies.get(digest, []):
                    try:
                        offers[task["name"]] = TaskOffer.from_json(task)
                    except (KeyError, TypeError, ValueError) as exc:  # its worker's task stays unknown here
                        logger.warning("task catalogue %s: task %r cannot be read: %r", digest, task["name"], exc)
            self._offers, self._offers_digests = offers, digests
        for name, offer in self._offers.items():
            offer.workers = counts.get(name, 0)


def _readable(digest: str, raw: bytes) -> list[dict[str, Any]]:
    """A stored catalogue's tasks, without what is not a task at all (each is a JSON object with a string
    ``name``); an unreadable catalogue offers nothing. A bad catalogue never fails a request."""
    try:
        body = loads(raw)
    except ValueError as exc:
        logger.warning("task catalogue %s cannot be read: %s", digest, exc)
        return []
    tasks = (
        [t for t in body if isinstance(t, dict) and isinstance(t.get("name"), str)] if isinstance(body, list) else []
    )
    if not isinstance(body, list) or len(tasks) < len(body):
        logger.warning("task catalogue %s: entries that are no task are ignored", digest)
    return tasks
