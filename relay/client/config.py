"""Where the API is, how to authenticate, and how long to keep retrying: from arguments or the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "RELAY_URL"
API_KEY_ENV = "RELAY_API_KEY"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How refusals the server calls temporary (429/503 with ``Retry-After``) and lost connections are retried.

    The server's ``Retry-After`` is honoured; without one, waits grow exponentially from ``backoff_base``
    up to ``backoff_max`` with full jitter (so many clients do not come back in step). ``max_wait_seconds``
    bounds the total time slept across consecutive failures; progress (a response; on a stream, any line the
    API sends, heartbeats included) resets it.
    ``max_wait_seconds=0`` turns retrying off. ``first_contact_wait_seconds``, when set, bounds the retrying of
    connection failures before the API has answered this client at all: a command line that cannot reach the API
    on its first try is better told so within seconds (an API restarting mid-session still gets the full budget).
    Every retry is logged (``relay.client``, WARNING), so a wait is never silent.
    """

    max_wait_seconds: float = 30.0
    backoff_base: float = 0.25
    backoff_max: float = 5.0
    first_contact_wait_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything a client needs to reach the API."""

    base_url: str
    api_key: str | None
    timeout: float
    stream_read_timeout: float
    retry: RetryPolicy

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        stream_read_timeout: float,
        retry: RetryPolicy | None,
    ) -> ClientConfig:
        """Arguments win; then ``RELAY_URL`` / ``RELAY_API_KEY``; then a local API on port 8000 without a key."""
        url = checked_url(base_url or os.environ.get(URL_ENV) or DEFAULT_URL)
        key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
        return cls(url.rstrip("/"), key, timeout, stream_read_timeout, retry or RetryPolicy())

    def headers(self) -> dict[str, str]:
        """Headers every request carries (the key as a bearer token: the API also accepts ``X-API-Key``)."""
        headers = {"User-Agent": "relay-client"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


def checked_url(url: str) -> str:
    """``url`` if it can reach an API (http or https, with a host); ValueError otherwise, at once: no retry
    makes ``localhost:8000`` work, so it must not be retried for 30 s like a refused connection."""
    parts = urlsplit(url.strip())
    if parts.scheme in ("http", "https") and parts.hostname:
        return url.strip()
    hint = f" (did you mean 'http://{url.strip()}'?)" if "://" not in url else ""
    raise ValueError(f"the API's URL {url!r} must start with http:// or https:// and name a host{hint}")
