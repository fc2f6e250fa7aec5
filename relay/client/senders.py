"""How the blocking client puts a ``Call`` on the wire: a thin ``Sender`` with two implementations.

``Client`` decides what to send, what an answer means and when to retry (protocol.py, stream.py, retry.py);
a sender only sends. ``Urllib3Sender`` is the default: on a round trip it costs about half of what httpx does
(issue #25: ~0.5 ms at random arrival, a large share of a task's round trip). ``HttpxSender`` serves a caller's
``transport=`` (tests drive the client through ``httpx.MockTransport``), an environment naming a proxy, which
httpx honours (``HTTP(S)_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) and urllib3 does not, and a URL with credentials.

Both report a failed send with httpx's exception classes (``httpx.ConnectError``, ``httpx.ReadTimeout``, ...):
the one vocabulary errors.py classifies (retry or not, sent or not) and the async client raises natively,
so a caller sees the same ``RelayConnectionError`` whichever sender is in use; urllib3's own exception is
kept as the cause.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import httpx
import urllib3
import urllib3.exceptions as u3

from relay.client.config import ClientConfig
from relay.client.errors import Answer
from relay.client.protocol import Call

READ_SIZE = 64 * 1024
MAX_CONNECTIONS = 100  # httpx's default limit: more concurrent requests wait for a connection (the pool timeout)
# What httpx sends unasked, so the API (or a proxy in front) sees the same requests from either sender.
HTTPX_DEFAULT_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive"}


@dataclass(frozen=True, slots=True)
class Timeouts:
    """``read``: how long one read may wait (a stream's silence); ``connect``: connecting, writing, and waiting
    for a free connection in the pool."""

    connect: float
    read: float

    @classmethod
    def of(cls, seconds: float) -> Timeouts:
        return cls(seconds, seconds)


class Reply(Answer, Protocol):
    """A response whose body has been read: an ``httpx.Response``, or ``Urllib3Reply``."""

    @property
    def is_error(self) -> bool: ...
    def json(self) -> Any: ...


class Streamed(Reply, Protocol):
    """A response whose body is still on the connection: read it whole (``read``, for an error's body) or line
    by line (``iter_lines``); ``close`` in every case."""

    def read(self) -> bytes: ...
    def iter_lines(self) -> Iterator[str]: ...
    def close(self) -> None: ...


class Sender(Protocol):
    """Sends a ``Call``, with the base URL and the headers every request carries, and nothing more: no retries,
    no redirects. A failed send raises an ``httpx.TransportError`` (``httpx.DecodingError`` for a body that
    cannot be decoded)."""

    def send(self, call: Call, timeouts: Timeouts) -> Reply: ...
    def open(self, call: Call, timeouts: Timeouts) -> Streamed: ...
    def close(self) -> None: ...


def for_client(config: ClientConfig, transport: httpx.BaseTransport | None) -> Sender:
    """urllib3 unless the caller gave an httpx transport, the environment names a proxy for the API's URL, or the
    URL carries credentials (``https://user:pass@host``: httpx sends them as basic auth, urllib3 would drop them)."""
    if transport is not None or proxied(config.base_url) or urlsplit(config.base_url).username is not None:
        return HttpxSender(config, transport)
    return Urllib3Sender(config)


def proxied(url: str) -> bool:
    """Whether the environment names a proxy httpx would consider for ``url`` (its own ``NO_PROXY`` check then
    decides, as it always has); proxies are read as httpx reads them, with ``urllib.request.getproxies``."""
    proxies = urllib.request.getproxies()
    return bool(proxies.get(urlsplit(url).scheme) or proxies.get("all"))


def json_body(value: Any) -> bytes:
    """A body as httpx's ``json=`` encodes it (NaN refused with a ValueError before anything is sent)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class HttpxSender:
    """Through an ``httpx.Client``: what every request went through before urllib3 became the default."""

    def __init__(self, config: ClientConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.http = httpx.Client(
            base_url=config.base_url, headers=config.headers(), timeout=config.timeout, transport=transport
        )

    def send(self, call: Call, timeouts: Timeouts) -> httpx.Response:
        return self.http.request(**httpx_arguments(call, timeouts))

    def open(self, call: Call, timeouts: Timeouts) -> httpx.Response:
        return self.http.send(self.http.build_request(**httpx_arguments(call, timeouts)), stream=True)

    def close(self) -> None:
        self.http.close()


def httpx_arguments(call: Call, timeouts: Timeouts) -> dict[str, Any]:
    """``call`` as arguments of httpx's ``request``/``build_request`` (sync or async: one translation for both)."""
    return {
        "method": call.method,
        "url": call.path,
        "json": call.json,
        "params": call.params,
        "headers": call.headers or None,
        "timeout": httpx.Timeout(timeouts.connect, read=timeouts.read),
    }


class Urllib3Sender:
    """Through one urllib3 connection pool to the API's host (TLS for an https URL, verified as httpx verifies:
    ``httpx.create_ssl_context``, so certifi's roots, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``). Thread-safe."""

    def __init__(self, config: ClientConfig) -> None:
        parts = urlsplit(config.base_url)
        self._prefix = parts.path.rstrip("/")  # a base URL's path (https://host/relay) prefixes every call's
        self._headers = HTTPX_DEFAULT_HEADERS | config.headers()
        options: dict[str, Any] = {"maxsize": MAX_CONNECTIONS, "block": True, "retries": False}
        if parts.scheme == "https":
            options["ssl_context"] = httpx.create_ssl_context()
        self.pool = urllib3.connection_from_url(config.base_url, **options)

    def send(self, call: Call, timeouts: Timeouts) -> Urllib3Reply:
        response = self._urlopen(call, timeouts, preload=True)
        return Urllib3Reply(response.status, response.headers, response.data, response.reason or "")

    def open(self, call: Call, timeouts: Timeouts) -> Urllib3Stream:
        return Urllib3Stream(self._urlopen(call, timeouts, preload=False))

    def close(self) -> None:
        self.pool.close()

    def _urlopen(self, call: Call, timeouts: Timeouts, preload: bool) -> urllib3.BaseHTTPResponse:
        headers = self._headers | call.headers
        body = None
        if call.json is not None:
            body = json_body(call.json)
            headers["Content-Type"] = "application/json"
        url = self._prefix + call.path
        if call.params:
            url += "?" + urlencode({k: _query_value(v) for k, v in call.params.items()})  # "+" for a space, as httpx
        try:
            return self.pool.urlopen(
                call.method,
                url,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=urllib3.Timeout(connect=timeouts.connect, read=timeouts.read),
                pool_timeout=timeouts.connect,  # type: ignore[arg-type]  # a Queue.get timeout: float works
                preload_content=preload,
            )
        except SEND_FAILURES as exc:
            raise as_httpx_error(exc) from exc


def _query_value(value: Any) -> str:
    """A query value as httpx writes it (``true``/``false`` for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Urllib3Reply:
    """A whole response, as ``Reply`` reads it."""

    status_code: int
    headers: Mapping[str, str]  # urllib3's HTTPHeaderDict: case-insensitive, like httpx's
    content: bytes
    reason_phrase: str

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Urllib3Stream:
    """A streamed urllib3 response. Read to its end, its connection goes back to the pool for the next request;
    left unfinished (an ``end`` reached with ``until_final=False``, a reconnect frame, a caller who stopped
    iterating), the connection is closed: what is left on it would be read as the next response."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers
        self.reason_phrase = response.reason or ""
        self._content: bytes | None = None
        self._finished = False

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the stream's body has not been read (call read() first)")
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def read(self) -> bytes:
        if self._content is None:
            try:
                self._content = self._response.read()
            except SEND_FAILURES as exc:
                raise as_httpx_error(exc) from exc
            self._finished = True
        return self._content

    def iter_lines(self) -> Iterator[str]:
        """Each line as it arrives (a chunked body is yielded chunk by chunk: events are live), decoded as UTF-8."""
        pending = b""
        try:
            for chunk in self._chunks():
                pending += chunk
                if b"\n" in pending:
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.rstrip(b"\r").decode("utf-8", "replace")
        except SEND_FAILURES as exc:
            raise as_httpx_error(exc) from exc
        self._finished = True
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", "replace")

    def _chunks(self) -> Iterator[bytes]:
        response = self._response
        if response.chunked:
            yield from response.read_chunked()
            return
        while chunk := response.read1(READ_SIZE):  # whatever has arrived, not READ_SIZE bytes or the end
            yield chunk

    def close(self) -> None:
        response = self._response
        if self._finished or response.length_remaining == 0:
            response.drain_conn()  # nothing left to read: this only ends the body, so its connection is reusable
        else:
            response.close()
        response.release_conn()


# What urllib3 raises (retries=False re-raises the first failure as it is) and what the standard library may
# raise beneath it while a body is read.
SEND_FAILURES = (u3.HTTPError, OSError, http.client.HTTPException)


def as_httpx_error(exc: BaseException) -> httpx.TransportError | httpx.DecodingError:
    """urllib3's failure as the httpx exception httpx raises in the same case, so that ``never_sent`` (a refused
    connect, a connect timeout, a full pool: nothing reached the server) and ``connection_error`` (a bad URL is
    not retried) judge it the same way."""
    message = str(exc) or type(exc).__name__
    error: httpx.TransportError | httpx.DecodingError
    if isinstance(exc, u3.EmptyPoolError):
        error = httpx.PoolTimeout(message)
    elif isinstance(exc, u3.NewConnectionError | u3.SSLError):  # NewConnectionError before ConnectTimeoutError,
        error = httpx.ConnectError(message)  # which it subclasses; a failed TLS handshake is a failed connect
    elif isinstance(exc, u3.ConnectTimeoutError):
        error = httpx.ConnectTimeout(message)
    elif isinstance(exc, u3.ReadTimeoutError | socket.timeout):
        error = httpx.ReadTimeout(message)
    elif isinstance(exc, u3.DecodeError):
        error = httpx.DecodingError(message)
    elif isinstance(exc, u3.LocationValueError):
        error = httpx.UnsupportedProtocol(message)
    elif isinstance(exc, u3.ProtocolError | http.client.HTTPException):
        error = httpx.RemoteProtocolError(message)  # the connection was cut, or the answer was not HTTP
    elif isinstance(exc, OSError):
        error = httpx.ReadError(message)
    else:
        error = httpx.TransportError(message)
    return error
