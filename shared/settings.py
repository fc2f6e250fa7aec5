"""One settings object, read from the environment once (every variable is prefixed ``RELAY_``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an API or worker process can be configured with; see the README's table."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL: redis://, rediss:// (TLS) or unix://.")
    queue_name: str = Field("relay:queue", description="arq queue (a Redis sorted set).")
    max_queue_depth: int = Field(10_000, ge=1, description="Submits beyond this many queued jobs get 503.")
    worker_concurrency: int = Field(10, ge=1, description="Jobs one worker process runs at once.")
    worker_grace_seconds: int = Field(
        25, ge=0, description="On SIGTERM/SIGINT a worker lets running jobs finish for this long, then re-queues."
    )
    poll_delay_seconds: float = Field(0.1, gt=0, description="How often an idle worker polls the queue.")
    job_timeout_seconds: float = Field(300, gt=0, description="Default (and maximum) time a task may run.")
    max_tries: int = Field(5, ge=1, description="Pickups a job may take before arq fails it.")
    result_ttl_seconds: int = Field(3600, ge=1, description="How long results and event logs are kept.")
    event_log_max_len: int = Field(10_000, ge=10, description="Events kept per task for replay.")
    api_keys: SecretStr = Field(
        SecretStr(""), description="Comma-separated API keys; empty disables auth (health stays open)."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies get 413.")
    heartbeat_seconds: float = Field(15, gt=0, description="Idle streams send a heartbeat this often.")
    api_drain_seconds: float = Field(
        10, ge=0, description="On SIGTERM the API lets open streams finish for this long, then asks to reconnect."
    )
    log_level: str = Field("INFO", description="Level of Relay's own loggers (arq and Sanic log as they do).")
    redis_timeout_seconds: float = Field(
        2, gt=0, description="Connect and command timeout of every Redis connection (API, workers, bridge)."
    )
    redis_username: str = Field("", description="Redis ACL user; overrides the one in RELAY_REDIS_URL.")
    redis_password: SecretStr = Field(
        SecretStr(""), description="Redis password (or access key); overrides the one in RELAY_REDIS_URL."
    )
    redis_sentinels: str = Field(
        "", description="Sentinel addresses `host:port,host:port`; when set, the primary is found through them."
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
        2, gt=0, description="How long an API request waits for a free connection before a 503."
    )
    redis_wait_replicas: int = Field(
        0, ge=0, description="Acknowledge a submit only once this many replicas have it (Redis WAIT); 0: off."
    )
    redis_wait_timeout_ms: int = Field(
        500, ge=1, description="How long a submit waits for those replicas before a 503 `not_replicated`."
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
        300, gt=0, description="How long a message lock is renewed while its task is being enqueued."
    )
    servicebus_retry_seconds: float = Field(
        5, ge=0, description="How long a transient failure (Redis down) is retried before abandoning."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_parse(cls, value: str) -> str:
        _parse_addresses(value)  # fail at start-up, not at the first connection
        return value

    @model_validator(mode="after")
    def _wait_fits_timeout(self) -> Settings:
        if self.redis_wait_replicas and self.redis_wait_timeout_ms >= self.redis_timeout_seconds * 1000:
            raise ValueError("RELAY_REDIS_WAIT_TIMEOUT_MS must be below RELAY_REDIS_TIMEOUT_SECONDS (in ms)")
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

    def api_key_list(self) -> list[str]:
        """The configured API keys, without blanks."""
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]


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
    """The process-wide settings, read once."""
    return Settings()
