"""One settings object, read from the environment once (every variable is prefixed ``RELAY_``)."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib.util import find_spec
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import keys, lanes
from shared.apikeys import ANONYMOUS, NAME_PATTERN, ApiKeyError, parse_api_keys
from shared.config_errors import CONFIG_ERROR_EXIT_CODE, ConfigError, Conflict, describe, refuse

__all__ = [
    "CONFIG_ERROR_EXIT_CODE",
    "LOG_LEVELS",
    "MAX_JOB_TIMEOUT_SECONDS",
    "ConfigError",
    "Settings",
    "environment_warnings",
    "get_settings",
    "load_settings",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TRACE_EXPORTERS = ("none", "otlp", "console")
REDIS_SCHEMES = ("redis", "rediss", "unix")
# A namespace on a Redis Cluster is part of every key's hash tag ({relay:<namespace>}, shared/keys.py): no brace
# may end the tag early, and no quote or backslash may break the Lua string literals the tag is compiled into.
CLUSTER_NAMESPACE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
# Most shards one queue may spread over (RELAY_QUEUE_SHARDS): every idle worker polls each, and cross-shard reads
# (the task list, counts) read each.
MAX_QUEUE_SHARDS = 64
# Upper bounds of durations: generous for any real deployment, and far enough below what Redis takes (a TTL or
# lease in ms must be an integer below 2**63, a score exact below 2**53) and what round() and int() take (no inf).
HOUR = 3600
DAY = 24 * HOUR
MAX_JOB_TIMEOUT_SECONDS = 30 * DAY  # RELAY_JOB_TIMEOUT_SECONDS, and a task's own timeout (worker/registry.py)
MAX_RESULT_TTL_SECONDS = 3650 * DAY  # ten years
# Old names still read, so existing deployments keep working; each start warns (``environment_warnings``).
DEPRECATED_VARIABLES = {"RELAY_MAX_TRIES": "RELAY_MAX_PICKUPS"}
# What a browser sends in its Origin header: scheme, host and optional port, nothing else.
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


class Settings(BaseSettings):
    """Everything an API or worker process can be configured with; docs/operations.md lists them all."""

    # allow_inf_nan=False: no float setting takes inf or nan (they passed gt=0, then broke round(), int() or Redis).
    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore", populate_by_name=True, allow_inf_nan=False)

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL: redis://, rediss:// (TLS) or unix://.")
    queue_name: str = Field(
        "relay:queue",
        description="The deployment's schedule (a Redis sorted set; arq's queue): every named queue's jobs, and "
        "the keys derived from it, are under this name.",
    )
    queues: str = Field(
        "default",
        description="The named queues a worker serves, comma-separated, earlier first: a worker takes due jobs "
        "of a later queue only when none of an earlier one is due (a `gpu,default` pool helps with `default` "
        "when idle).",
    )
    queue_depths: str = Field(
        "",
        description="Named queues with a depth limit of their own, e.g. `gpu=100,batch=50000` "
        "(others: RELAY_MAX_QUEUE_DEPTH).",
    )
    tenant_weights: str = Field(
        "",
        description="Weights for the round-robin between tenants' due jobs, e.g. `acme=3,globex=1` (others: 1): "
        "a tenant of weight 3 gets up to 3 jobs a turn.",
    )
    task_modules: str = Field(
        "",
        description="Comma-separated Python modules that register the tasks to run (worker.tasks.demo: the "
        "demo tasks).",
    )
    max_queue_depth: int = Field(
        10_000, ge=1, description="Submits beyond this many waiting jobs of a named queue get 503."
    )
    worker_concurrency: int = Field(10, ge=1, description="Jobs one worker process runs at once.")
    worker_grace_seconds: int = Field(
        25,
        ge=0,
        le=DAY,
        description="On SIGTERM/SIGINT a worker lets running jobs finish for this long, then re-queues "
        "(at most a day).",
    )
    poll_delay_seconds: float = Field(
        2.0,
        gt=0,
        le=HOUR,
        description="Longest sleep of an idle worker between queue checks (wake-up notices and known due times "
        "end it sooner; at most an hour).",
    )
    handoff: bool = Field(
        True,
        description="An idle worker waits for hand-offs: a submit due now goes straight to it, claimed by the "
        "enqueue, saving the claim's round trip (not with RELAY_QUEUE_SHARDS above 1).",
    )
    lease_seconds: float = Field(
        10,
        ge=1,
        le=DAY,
        description="A running job's lease: if its worker stops renewing it (killed, node lost), another worker "
        "takes the job over within about this long (at most a day).",
    )
    sync_task_threads: int = Field(10, ge=1, description="Threads that run plain `def` tasks, per worker process.")
    stall_warning_seconds: float = Field(
        1.0,
        gt=0,
        le=DAY,
        description="A task that blocks a worker's event loop this long is named in a warning (at most a day).",
    )
    log_task_values: bool = Field(
        False, description="Log task arguments and results (they may carry secrets: for debugging only)."
    )
    error_tracebacks: bool = Field(
        True,
        description="A failed task's error (its events, GET /tasks/{id}, Service Bus replies) carries the "
        "traceback of the task's own code, bounded; false where tracebacks may show secrets (the worker log "
        "still has them).",
    )
    task_index_max: int = Field(
        1_000_000, ge=1000, description="Most tasks GET /tasks remembers (the oldest are forgotten first)."
    )
    job_timeout_seconds: float = Field(
        300,
        gt=0,
        le=MAX_JOB_TIMEOUT_SECONDS,
        description="Default (and maximum) time a task may run (at most 30 days).",
    )
    max_pickups: int = Field(
        5,
        ge=1,
        validation_alias=AliasChoices("RELAY_MAX_PICKUPS", "RELAY_MAX_TRIES"),
        description="Times a job may be picked up by a worker before it fails (a lost worker costs one; "
        "a shutdown re-queue does not). Not a retry policy (a task's policy may allow more).",
    )
    result_ttl_seconds: int = Field(
        3600,
        ge=1,
        le=MAX_RESULT_TTL_SECONDS,
        description="How long results and event logs are kept (at most 10 years: 315360000).",
    )
    event_log_max_len: int = Field(10_000, ge=10, description="Events kept per task for replay.")
    event_log_max_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Bytes of events kept per task for replay: beyond it the oldest are dropped (late readers "
        "get a `gap`; live followers still see every event). At least RELAY_MAX_EVENT_BYTES.",
    )
    workflow_log_max_len: int = Field(
        100_000, ge=10, description="Events kept per workflow for replay (every step's, and the workflow's own)."
    )
    workflow_log_max_bytes: int = Field(
        16_777_216,
        ge=1024,
        description="Bytes of events kept per workflow for replay: beyond it the oldest are dropped (a `gap`).",
    )
    max_workflow_steps: int = Field(10_000, ge=1, le=100_000, description="Most steps one workflow may have.")
    max_result_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Largest JSON-encoded result of a task; a larger one fails the try with ResultTooLarge.",
    )
    max_event_bytes: int = Field(
        65_536,
        ge=1024,
        description="Largest event a task may emit (a progress or partial, JSON-encoded); a larger one fails the "
        "try with EventTooLarge.",
    )
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated API keys, each `name:key` (or just `key`, named key1, key2...), optionally "
        "with a role, `name:key:read` or `name:key:admin`; the name is the tenant that owns the key's tasks. "
        "Empty disables auth (health stays open).",
    )
    bridge_tenant: str = Field(
        "", description="Tenant (an API key name) owning tasks from Service Bus; empty: admins only see them."
    )
    schedule_tenant: str = Field("", description="Tenant owning tasks of cron schedules; empty: admins only.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies get 413.")
    max_args_bytes: int = Field(
        16_384, ge=64, description="Largest JSON-encoded arguments (args + kwargs) of one task; larger get 413."
    )
    max_streams: int = Field(
        2000, ge=1, description="Event streams one API process serves at once; more get 503 too_many_streams."
    )
    key_submit_rate: float = Field(
        0, ge=0, description="Submits per second each API key may make on average, over all API processes; 0: no limit."
    )
    key_submit_burst: int = Field(
        20, ge=1, description="Submits an API key may make at once before RELAY_KEY_SUBMIT_RATE applies."
    )
    key_max_active: int = Field(
        0,
        ge=0,
        description="Tasks each API key may have queued or running (not yet ended) at once, over all API "
        "processes and every shard of the queue (RELAY_QUEUE_SHARDS); 0: no limit.",
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated origins (https://app.example.com) whose web pages may call the API; "
        "`*` for any origin (then without credentials); empty: none.",
    )
    heartbeat_seconds: float = Field(
        15, gt=0, le=HOUR, description="Idle streams send a heartbeat this often (at most every hour)."
    )
    api_drain_seconds: float = Field(
        10,
        ge=0,
        le=DAY,
        description="On SIGTERM the API lets open streams finish for this long, then asks to reconnect "
        "(at most a day).",
    )
    log_level: str = Field("INFO", description="Level of Relay's own loggers: DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    access_log: bool = Field(False, description="Log one line per HTTP request (Sanic's access log).")
    redis_timeout_seconds: float = Field(
        2,
        gt=0,
        le=HOUR,
        description="Connect and command timeout of every Redis connection (API, workers, bridge; at most an hour).",
    )
    redis_username: str = Field("", description="Redis ACL user; overrides the one in RELAY_REDIS_URL.")
    redis_password: SecretStr = Field(
        SecretStr(""), description="Redis password (or access key); overrides the one in RELAY_REDIS_URL."
    )
    redis_sentinels: str = Field(
        "", description="Sentinel addresses `host:port,host:port`; when set, the primary is found through them."
    )
    redis_cluster: bool = Field(
        False,
        description="Redis is a Redis Cluster (or cluster-mode managed Redis): RELAY_REDIS_URL names any node, the "
        "client finds the rest and follows redirections; each namespace's keys share one hash slot "
        "(RELAY_QUEUE_SHARDS: several).",
    )
    queue_shards: int = Field(
        1,
        ge=1,
        le=MAX_QUEUE_SHARDS,
        description="With RELAY_REDIS_CLUSTER, how many hash slots (shards) one queue spreads over: a task's keys "
        "are in shard crc16(id) mod N; workers claim from every shard. Limits and tenant fairness are then per "
        "shard (a concurrency or rate limit of L allows up to L per shard), as is RELAY_MAX_QUEUE_DEPTH; "
        "RELAY_KEY_MAX_ACTIVE counts over every shard. "
        "1: one slot, the layout before sharding.",
    )
    redis_sentinel_master: str = Field("mymaster", description="Name of the primary the sentinels monitor.")
    redis_sentinel_username: str = Field("", description="ACL user for the sentinels themselves.")
    redis_sentinel_password: SecretStr = Field(SecretStr(""), description="Password of the sentinels themselves.")
    redis_tls_ca_file: str = Field(
        "", description="CA bundle (PEM) that signs the Redis server's certificate; empty: the system's CAs."
    )
    redis_tls_check_hostname: bool = Field(
        True, description="With rediss://, the certificate must name the host Relay connects to."
    )
    redis_max_connections: int = Field(
        100, ge=2, description="Redis connections one API process may open (its pub/sub connection included)."
    )
    redis_pool_timeout_seconds: float = Field(
        2,
        gt=0,
        le=HOUR,
        description="How long an API request waits for a free connection before a 503 (at most an hour).",
    )
    redis_wait_replicas: int = Field(
        0, ge=0, description="Acknowledge a submit only once this many replicas have it (Redis WAIT); 0: off."
    )
    redis_wait_timeout_ms: int = Field(
        500,
        ge=1,
        le=HOUR * 1000,
        description="How long a submit waits for those replicas before a 503 `not_replicated` (at most an hour).",
    )
    worker_metrics_port: int = Field(
        9191,
        ge=0,
        le=65535,
        description="Port of a worker's Prometheus metrics (/metrics); 0: none. Workers on one host each need "
        "their own (scripts/dev numbers its workers' ports from this one).",
    )
    worker_metrics_host: str = Field(
        "127.0.0.1",
        description="Address a worker's metrics server listens on (0.0.0.0 in containers, so Prometheus can "
        "reach the pod).",
    )
    trace_exporter: str = Field(
        "none",
        description="Where Relay's own OpenTelemetry setup sends spans: none (Relay sets up nothing; a tracer "
        "provider you configure still gets them), otlp (OTEL_EXPORTER_OTLP_* variables) or console. Needs the "
        "otel extra.",
    )

    servicebus_connection_string: SecretStr = Field(
        SecretStr(""), description="Service Bus connection string; enables the bridge (or use the namespace)."
    )
    servicebus_namespace: str = Field(
        "", description="Fully qualified namespace (x.servicebus.windows.net), authenticated by Azure AD."
    )
    servicebus_queue: str = Field("", description="Queue the bridge receives tasks from.")
    servicebus_topic: str = Field("", description="Or: topic the bridge receives from (with a subscription).")
    servicebus_subscription: str = Field("", description="Subscription of RELAY_SERVICEBUS_TOPIC.")
    servicebus_max_concurrency: int = Field(8, ge=1, description="Messages the bridge handles at once.")
    servicebus_prefetch: int = Field(16, ge=0, description="Messages the SDK fetches ahead.")
    servicebus_lock_renewal_seconds: float = Field(
        300,
        gt=0,
        le=DAY,
        description="How long a message lock is renewed while its task is being enqueued (at most a day).",
    )
    servicebus_retry_seconds: float = Field(
        5,
        ge=0,
        le=DAY,
        description="How long a transient failure (Redis down) is retried before abandoning (at most a day).",
    )

    @field_validator("queues")
    @classmethod
    def _queue_list(cls, value: str) -> str:
        names = [q.strip() for q in value.split(",") if q.strip()]
        bad = [q for q in names if not lanes.is_queue_name(q)]
        if not names or bad:
            raise ValueError(f"RELAY_QUEUES must list queue names matching {lanes.QUEUE_NAME_REGEX} (got {value!r})")
        return ",".join(dict.fromkeys(names))

    @field_validator("queue_depths", "tenant_weights")
    @classmethod
    def _name_numbers(cls, value: str, info: ValidationInfo) -> str:
        pairs = [p.strip() for p in value.split(",") if p.strip()]
        for pair in pairs:
            name, sep, number = pair.partition("=")
            if not sep or not name.strip() or not number.strip().isdigit() or int(number) < 1:
                what = f"RELAY_{str(info.field_name).upper()}"
                raise ValueError(f"{what} takes name=number pairs with numbers >= 1, e.g. `a=3,b=1` (got {pair!r})")
        return ",".join(f"{n.strip()}={v.strip()}" for n, _, v in (p.partition("=") for p in pairs))

    def max_depth_of(self, queue: str) -> int:
        """The most jobs named queue ``queue`` may hold waiting (``RELAY_QUEUE_DEPTHS``, else
        ``RELAY_MAX_QUEUE_DEPTH``), as the enqueue script counts them."""
        own = dict(pair.split("=") for pair in self.queue_depths.split(",") if pair)
        return int(own.get(queue, self.max_queue_depth))

    @property
    def queue_list(self) -> list[str]:
        """``RELAY_QUEUES`` as a list, in the order they are served."""
        return self.queues.split(",")

    @field_validator("queue_name")
    @classmethod
    def _queue_name_is_free(cls, value: str) -> str:
        problem = keys.queue_name_problem(value)
        if problem:
            raise ValueError(f"queue name {value!r} cannot be used: {problem}")
        return value

    @field_validator("bridge_tenant", "schedule_tenant")
    @classmethod
    def _tenant_name(cls, value: str) -> str:
        if value and (not NAME_PATTERN.fullmatch(value) or value == ANONYMOUS):
            raise ValueError(f"a tenant is an API key name: letters, digits, '_', '.', '-' (max 64), not {ANONYMOUS!r}")
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @field_validator("api_keys")
    @classmethod
    def _keys_parse(cls, value: SecretStr) -> SecretStr:
        # Here, not first in create_app: a mistake is then one line and exit 78 like any other setting's. The
        # message names the entry by position, never its content (shared.apikeys), and drops the variable's name,
        # which the line starts with anyway.
        try:
            parse_api_keys(value.get_secret_value())
        except ApiKeyError as exc:
            raise ValueError(str(exc).removeprefix("RELAY_API_KEYS ")) from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().upper() in LOG_LEVELS:
            return value.strip().upper()
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        # Checked here, not first by arq or redis-py ("invalid DSN scheme"), so the error names the variable.
        if urlsplit(value).scheme in REDIS_SCHEMES:
            return value
        rest = value.split("://")[-1]
        hint = f" (e.g. redis://{rest})" if rest and not set("/@") & set(rest) else ""
        raise ValueError(f"expected a URL starting with redis://, rediss:// or unix://{hint}")

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_parse(cls, value: str) -> str:
        _parse_addresses(value)  # fail at start-up, not at the first connection
        return value

    @model_validator(mode="after")
    def _wait_fits_timeout(self) -> Settings:
        if self.redis_wait_replicas and self.redis_wait_timeout_ms >= self.redis_timeout_seconds * 1000:
            raise Conflict(
                f"RELAY_REDIS_WAIT_TIMEOUT_MS ({self.redis_wait_timeout_ms}) must be below RELAY_REDIS_TIMEOUT_SECONDS "
                f"({self.redis_timeout_seconds} s = {self.redis_timeout_seconds * 1000:g} ms)",
                "redis_wait_timeout_ms",
                "redis_timeout_seconds",
            )
        return self

    @model_validator(mode="after")
    def _cluster_fits(self) -> Settings:
        if self.queue_shards > 1 and not self.redis_cluster:
            raise Conflict(
                f"RELAY_QUEUE_SHARDS={self.queue_shards} needs RELAY_REDIS_CLUSTER=true (shards are hash slots of a "
                "Redis Cluster; one Redis or Sentinel holds every key of a queue anyway)",
                "queue_shards",
                "redis_cluster",
            )
        if not self.redis_cluster:
            return self
        if self.redis_sentinels:
            raise Conflict("RELAY_REDIS_CLUSTER and RELAY_REDIS_SENTINELS exclude each other", "redis_cluster")
        if urlsplit(self.redis_url).scheme == "unix":
            raise Conflict("RELAY_REDIS_CLUSTER needs a redis:// or rediss:// RELAY_REDIS_URL", "redis_cluster")
        if urlsplit(self.redis_url).path.strip("/") not in ("", "0"):
            raise Conflict("a Redis Cluster has database 0 only: drop the database from RELAY_REDIS_URL", "redis_url")
        if not CLUSTER_NAMESPACE.fullmatch(self.queue_name):
            raise Conflict(
                f"with RELAY_REDIS_CLUSTER, RELAY_QUEUE_NAME must match {CLUSTER_NAMESPACE.pattern} (it is the "
                f"hash tag of every key; got {self.queue_name!r})",
                "queue_name",
            )
        return self

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``RELAY_REDIS_SENTINELS`` as (host, port) pairs; empty when Sentinel is not used."""
        return _parse_addresses(self.redis_sentinels)

    @property
    def servicebus_enabled(self) -> bool:
        """The bridge runs when it has both a way in and an entity to read."""
        has_auth = bool(self.servicebus_connection_string.get_secret_value() or self.servicebus_namespace)
        has_entity = bool(self.servicebus_queue or (self.servicebus_topic and self.servicebus_subscription))
        return has_auth and has_entity

    def task_module_list(self) -> list[str]:
        """The task modules to load, without blanks."""
        return [m.strip() for m in self.task_modules.split(",") if m.strip()]

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        origins = [origin.strip() for origin in value.split(",") if origin.strip()]
        if "*" in origins and len(origins) > 1:
            raise ValueError("`*` allows every origin; list origins or give `*` alone")
        for origin in origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an origin: scheme://host[:port], no path or trailing slash")
        return value

    @field_validator("trace_exporter", mode="before")
    @classmethod
    def _exporter_installed(cls, value: object) -> object:
        value = value.strip().lower() if isinstance(value, str) else value
        if value not in TRACE_EXPORTERS:
            raise ValueError(f"expected one of {', '.join(TRACE_EXPORTERS)}")
        # Checked at start, so a missing extra is one line naming the variable, not an ImportError mid-request.
        needed = {"otlp": "opentelemetry.exporter.otlp.proto.http", "console": "opentelemetry.sdk"}.get(value)
        if needed is not None and _missing(needed):
            raise ValueError(f"{value} needs OpenTelemetry, which is not installed: pip install 'relay[otel]'")
        return value

    @model_validator(mode="after")
    def _args_fit_body(self) -> Settings:
        if self.max_args_bytes > self.max_body_bytes:
            raise Conflict(
                f"RELAY_MAX_ARGS_BYTES ({self.max_args_bytes}) must not exceed RELAY_MAX_BODY_BYTES "
                f"({self.max_body_bytes})",
                "max_args_bytes",
                "max_body_bytes",
            )
        return self

    @model_validator(mode="after")
    def _event_fits_log(self) -> Settings:
        if self.max_event_bytes > self.event_log_max_bytes:
            raise Conflict(
                f"RELAY_MAX_EVENT_BYTES ({self.max_event_bytes}) must not exceed RELAY_EVENT_LOG_MAX_BYTES "
                f"({self.event_log_max_bytes}): a task's log must hold its largest event",
                "max_event_bytes",
                "event_log_max_bytes",
            )
        return self

    def api_key_list(self) -> list[str]:
        """The configured API keys (without their names), without blanks."""
        return [key.secret for key in parse_api_keys(self.api_keys.get_secret_value())]

    def cors_origin_list(self) -> list[str]:
        """The origins allowed to call the API from a browser, without blanks."""
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


def _missing(module: str) -> bool:
    try:
        return find_spec(module) is None
    except ModuleNotFoundError:  # a parent package is missing
        return True


def environment_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """What a process should warn about at start: deprecated names in use, and ``RELAY_*`` variables that
    are no setting at all (extra="ignore" would otherwise hide a typo), with the closest real name."""
    names = sorted({k.upper() for k in (os.environ if environ is None else environ)})
    current = sorted(f"RELAY_{field.upper()}" for field in Settings.model_fields)
    warnings = [
        f"{name} is deprecated: rename it {DEPRECATED_VARIABLES[name]} (until then it is read as "
        f"{DEPRECATED_VARIABLES[name]})"
        for name in names
        if name in DEPRECATED_VARIABLES
    ]
    for name in names:
        if name.startswith("RELAY_") and name not in current and name not in DEPRECATED_VARIABLES:
            # Compared without the prefix, which every name shares and which would make anything look close.
            close = [f"RELAY_{c}" for c in difflib.get_close_matches(name[6:], [c[6:] for c in current], n=1)]
            warnings.append(
                f"{name} is not a Relay setting; it is ignored" + (f" (did you mean {close[0]}?)" if close else "")
            )
    return warnings


def load_settings() -> Settings:
    """Settings from the environment; ``ConfigError`` (one line per bad variable) if any is invalid."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe(exc, Settings)) from None


def _parse_addresses(value: str) -> list[tuple[str, int]]:
    addresses = []
    for item in value.split(","):
        if not item.strip():
            continue
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected host:port, got {item.strip()!r}")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. A bad variable ends the process with one line per problem on
    stderr and exit code 78 (EX_CONFIG), instead of a traceback that names pydantic fields."""
    try:
        return load_settings()
    except ConfigError as exc:
        refuse(exc.problems)
