"""The blocking client's two senders (relay/client/senders.py) against local servers: which one a client gets,
and that the default (urllib3) puts the same requests on the wire and fails the same ways as httpx.

The real API and worker are in test_sync_e2e.py (streams, refusals, a stream that hangs or whose API dies).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import urllib3

from bench.harness.redis_servers import make_tls_files
from relay.client import Client, RelayConnectionError, RetryPolicy
from relay.client.errors import never_sent
from relay.client.senders import HttpxSender, Urllib3Sender, as_httpx_error

NO_RETRY = RetryPolicy(max_wait_seconds=0)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Recorder(BaseHTTPRequestHandler):
    """Records each request and answers as the API would, enough for submit, list and cancel."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the API
    seen: list[Seen]

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.seen.append(Seen(self.command, self.path, headers, body))  # type: ignore[attr-defined]
        if self.command == "POST":
            sent = json.loads(body)
            answer: dict[str, Any] = {"id": sent["id"], "task": sent["task"], "state": "queued", "created": True}
        elif self.command == "DELETE":
            answer = {"state": "aborted"}
        else:
            answer = {"tasks": [], "next_cursor": None}
        out = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[Seen]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers: a hung API."""
    sock = socket.create_server(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def closed_port() -> str:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def test_urllib3_by_default_httpx_for_a_transport_or_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with Client("http://relay.test") as client:
        assert isinstance(client._sender, Urllib3Sender)
    with Client("http://relay.test", transport=httpx.MockTransport(lambda r: httpx.Response(200))) as client:
        assert isinstance(client._sender, HttpxSender)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    with Client("http://relay.test") as client:
        assert isinstance(client._sender, Urllib3Sender)  # that proxy is for https URLs only
    with Client("https://relay.test") as client:
        assert isinstance(client._sender, HttpxSender)  # httpx honours it (and NO_PROXY), as it always did
    with Client("http://user:secret@relay.test") as client:
        assert isinstance(client._sender, HttpxSender)  # httpx sends these as basic auth


def test_both_senders_put_the_same_requests_on_the_wire(recorder: tuple[str, list[Seen]]) -> None:
    base, seen = recorder

    def calls(client: Client) -> list[Seen]:
        start = len(seen)
        client.submit_with("resize", ["a b.png", 2], {"width": 800, "note": "é"}, id="t/1?x", priority=3)
        list(client.list(state="failed", task="re size", limit=2, tenant="a&b"))
        client.cancel("t/1?x")
        return seen[start:]

    with Client(base + "/", api_key="k1") as default, Client(base, api_key="k1", transport=httpx.HTTPTransport()) as x:
        assert isinstance(default._sender, Urllib3Sender)
        assert calls(default) == calls(x)
    assert [(s.method, s.path) for s in seen[:3]] == [
        ("POST", "/tasks"),
        ("GET", "/tasks?state=failed&task=re+size&limit=2&tenant=a%26b"),
        ("DELETE", "/tasks/t%2F1%3Fx"),
    ]
    assert seen[0].headers["authorization"] == "Bearer k1"
    assert seen[0].headers["user-agent"] == "relay-client"


def test_a_base_url_with_a_path_prefixes_every_call(recorder: tuple[str, list[Seen]]) -> None:
    base, seen = recorder
    with Client(base + "/relay/") as client:
        client.cancel("t1")
    assert seen[-1].path == "/relay/tasks/t1"


def test_a_silent_api_times_out_as_over_httpx(silent: str) -> None:
    errors = []
    for transport in (None, httpx.HTTPTransport()):
        with Client(silent, timeout=0.3, retry=NO_RETRY, transport=transport) as client:
            began = time.monotonic()
            with pytest.raises(RelayConnectionError) as caught:
                client.get("t1")
            assert 0.3 <= time.monotonic() - began < 3
        errors.append(caught.value)
    default, over_httpx = errors
    assert type(default.__cause__) is type(over_httpx.__cause__) is httpx.ReadTimeout
    assert isinstance(default.__cause__.__cause__, urllib3.exceptions.ReadTimeoutError)  # urllib3's, kept
    assert str(default).startswith(f"connection_error: cannot talk to {silent}: ReadTimeout: ")


def test_a_refused_connection_is_a_connect_error_never_sent_so_any_call_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = closed_port()
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    for transport in (None, httpx.HTTPTransport()):
        slept.clear()
        with Client(url, retry=RetryPolicy(max_wait_seconds=1), transport=transport) as client:
            with pytest.raises(RelayConnectionError) as caught:
                client.cancel("t1")  # not idempotent: retried only because it cannot have been sent
            assert isinstance(caught.value.__cause__, httpx.ConnectError)
            assert slept  # retried before giving up


def test_urllib3_failures_map_to_the_httpx_exceptions_errors_judge() -> None:
    pool = urllib3.HTTPConnectionPool("relay.test")
    cases: list[tuple[Exception, type[Exception], bool]] = [
        (urllib3.exceptions.NewConnectionError(None, "refused"), httpx.ConnectError, True),  # type: ignore[arg-type]
        (urllib3.exceptions.ConnectTimeoutError("slow"), httpx.ConnectTimeout, True),
        (urllib3.exceptions.EmptyPoolError(pool, "full"), httpx.PoolTimeout, True),
        (urllib3.exceptions.ReadTimeoutError(pool, "/", "slow"), httpx.ReadTimeout, False),
        (urllib3.exceptions.ProtocolError("Connection aborted."), httpx.RemoteProtocolError, False),
        (ConnectionResetError("reset"), httpx.ReadError, False),
    ]
    for raised, expected, unsent in cases:
        mapped = as_httpx_error(raised)
        assert type(mapped) is expected, raised
        assert isinstance(mapped, httpx.TransportError)
        assert never_sent(mapped) is unsent, raised


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """The recorder over TLS, with a certificate for ``localhost`` from a throwaway CA: (url, ca, another ca)."""
    files = make_tls_files(tmp_path / "tls", ["localhost"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen = []  # type: ignore[attr-defined]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}", files.ca, files.other_ca
    server.shutdown()
    server.server_close()


def test_https_is_verified_as_httpx_verifies(tls_api: tuple[str, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, ca, other_ca = tls_api
    for over_httpx in (False, True):
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # httpx's way to trust a private CA, honoured by both
        with Client(url, retry=NO_RETRY, transport=httpx.HTTPTransport() if over_httpx else None) as client:
            assert isinstance(client._sender, HttpxSender if over_httpx else Urllib3Sender)
            assert client.cancel("t1") == "aborted"
        monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
        with Client(url, retry=NO_RETRY, transport=httpx.HTTPTransport() if over_httpx else None) as client:
            with pytest.raises(RelayConnectionError) as caught:
                client.cancel("t1")
            assert isinstance(caught.value.__cause__, httpx.ConnectError)
            assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
