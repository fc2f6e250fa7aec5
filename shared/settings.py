"""One settings object, read from the environment once (every variable is prefixed ``RELAY_``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
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
    redis_timeout_seconds: float = Field(2, gt=0, description="Socket timeout for the API's Redis commands.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    def api_key_list(self) -> list[str]:
        """The configured API keys, without blanks."""
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
