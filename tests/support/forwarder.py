"""A local TCP forwarder whose target a test switches: one base URL for the client, a changing API behind it.

It stands in for a load balancer: when the API it points at dies, the connections piped to it are cut
(as the dead process's sockets would be), and new connections go wherever ``target`` points now. ``freeze``
makes the connections open at that moment hang, as a network that drops every packet would.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from urllib.parse import urlsplit


def address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


RECORDED_BYTES = 65536  # what ``Forwarder.delivered`` keeps of each connection's answer


class Forwarder:
    """``url`` forwards to ``target`` (host, port); ``connections`` lists where each accepted one went."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.connections: list[tuple[str, int]] = []
        # Per connection, the first bytes sent back to its client (up to RECORDED_BYTES), recorded once sent.
        self.delivered: list[bytearray] = []
        self._sockets: list[socket.socket] = []
        self._frozen: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)  # accept() wakes up to notice close()
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, name="forwarder", daemon=True)
        self._thread.start()

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                downstream, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            downstream.settimeout(None)
            target = self.target
            try:
                upstream = socket.create_connection(target, timeout=5)
            except OSError:
                downstream.close()  # like a balancer with no healthy backend
                continue
            upstream.settimeout(None)
            delivered = bytearray()
            with self._lock:
                self.connections.append(target)
                self.delivered.append(delivered)
                self._sockets += [downstream, upstream]
            for src, dst, record in ((downstream, upstream, None), (upstream, downstream, delivered)):
                threading.Thread(target=self._pipe, args=(src, dst, record), daemon=True).start()

    def freeze(self) -> None:
        """The connections open now carry nothing more, either way, yet stay open: a peer that hung. New
        connections are piped as usual."""
        with self._lock:
            self._frozen.update(self._sockets)

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if src in self._frozen:
                    self._closed.wait()  # held until the forwarder closes, never delivered
                    return
                dst.sendall(data)
                if record is not None and len(record) < RECORDED_BYTES:
                    record += data
        except OSError:
            pass
        finally:
            # One side is gone: take the other down too, as a dead peer's kernel would.
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the pipe threads blocked in recv()
                sock.close()
