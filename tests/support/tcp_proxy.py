"""TCP proxies on 127.0.0.1 in front of a Redis server. ``StallingProxy``: replication traffic can be stalled,
replication lag on demand. ``SilencingProxy``: open connections can be silenced, a flow dropped half-open.

Everything (clients, sentinels, replicas) may reach the primary through it; a connection that speaks
the replication protocol (its client sent REPLCONF or PSYNC) is the only kind ``stall`` affects: the
replica receives nothing more while its acknowledgements still flow upstream. A primary killed
meanwhile takes its last writes with it, as one whose replicas lagged would. ``close`` drops every
connection and whatever was held back.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from bench.harness.processes import free_port

# What a replica sends (RESP bulk strings, exactly as Redis writes them); nothing a client sends matches.
_REPLICATION_COMMANDS = (b"$8\r\nREPLCONF\r\n", b"$5\r\nPSYNC\r\n", b"$4\r\nSYNC\r\n")


class _Forwarder:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``upstream``, each accepted connection handed to ``_pipe``."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Drop every connection."""
        self._closed.set()
        with self._lock:
            for sock in [self._listener, *self._sockets]:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()  # the server is gone: refuse, as it would
                continue
            with self._lock:
                self._sockets += [client, upstream]
            self._pipe(client, upstream)

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        raise NotImplementedError


class StallingProxy(_Forwarder):
    """``stall()`` holds back what replicas receive."""

    def __init__(self, upstream: int) -> None:
        self._flowing = threading.Event()
        self._flowing.set()
        super().__init__(upstream)

    def stall(self) -> None:
        """Stop delivering the replication stream (it stays unread in the proxy)."""
        self._flowing.clear()

    def resume(self) -> None:
        """Deliver the replication stream again, what was held back first."""
        self._flowing.set()

    def close(self) -> None:
        """Drop every connection, and with them anything held back."""
        self._closed.set()  # first: a pump released by the next line must see it and send nothing
        self._flowing.set()
        super().close()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        replication = threading.Event()
        threading.Thread(target=self._pump, args=(client, upstream, replication, False), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, replication, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, replication: threading.Event, down: bool) -> None:
        try:
            while not self._closed.is_set():
                data = source.recv(65536)
                if not data:
                    return
                if not down and any(command in data for command in _REPLICATION_COMMANDS):
                    replication.set()
                if down and replication.is_set() and not self._flowing.is_set():
                    self._flowing.wait()  # held back; dropped if the proxy closes meanwhile
                    if self._closed.is_set():
                        return
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class SilencingProxy(_Forwarder):
    """``silence()`` makes every connection open now stop passing bytes either way without closing it (no FIN, no
    RST: a NAT or load balancer that dropped the flow), while new connections pass as before."""

    def __init__(self, upstream: int) -> None:
        self._silenced: list[threading.Event] = []
        super().__init__(upstream)

    def silence(self) -> int:
        """Silence every connection open now; how many there were."""
        with self._lock:
            for silenced in self._silenced:
                silenced.set()
            return len(self._silenced)

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        silenced = threading.Event()
        with self._lock:
            self._silenced.append(silenced)
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._silenceable, args=(source, target, silenced), daemon=True).start()

    @staticmethod
    def _silenceable(source: socket.socket, target: socket.socket, silenced: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not silenced.is_set():
                    target.sendall(data)
