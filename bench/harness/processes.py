"""Start and stop real processes (redis-server, the Sanic API, arq workers), each stopped by its own PID."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


# Each test process hands out ports from its own block, in turn, below the kernel's ephemeral range
# (32768-60999 on Linux by default). With ports the kernel picks (bind to 0), two pytest-xdist processes could
# pick the same free port before either server bound it: the loser's API failed to bind, and its readiness
# probe was answered by the other process's API on that port. An outgoing connection's local port, drawn from
# the ephemeral range, can never take one of these either. Blocks repeat from a fifth process on (-n 5 and more).
PORT_BLOCK_SIZE = 3000
# Two test runs at once on one machine (say, two checkouts) each need their own range: RELAY_TEST_FIRST_PORT moves
# this one's (blocks of PORT_BLOCK_SIZE from there; keep the last block below 32768).
FIRST_PORT = int(os.environ.get("RELAY_TEST_FIRST_PORT", "20000"))
_port_turns = itertools.count()


def _port_block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...; empty without xdist
    index = int(worker[2:]) + 1 if worker[:2] == "gw" and worker[2:].isdigit() else 0
    start = FIRST_PORT + (index % 4) * PORT_BLOCK_SIZE
    return range(start, start + PORT_BLOCK_SIZE)


def free_port() -> int:
    """A TCP port nobody uses right now (on 127.0.0.1), from this test process's own block."""
    block = _port_block()
    for _ in range(len(block)):
        port = block[next(_port_turns) % len(block)]
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port in {block.start}-{block.stop - 1}")


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive ports nobody uses right now (scripts/dev numbers its workers'
    metrics ports from one); the next ``free_port`` starts after them."""
    block = _port_block()
    for _ in range(100):
        first = free_port()
        if first + count <= block.stop and all(_bindable(first + i) for i in range(1, count)):
            for _ in range(count - 1):
                next(_port_turns)
            return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class ManagedProcess:
    """A child process whose output goes to a file, stopped by PID when the test ends."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, sig: signal.Signals) -> None:
        """Deliver a real signal to this process."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        """Exit code, waiting at most ``timeout`` seconds."""
        return self.proc.wait(timeout)

    def output(self) -> str:
        """Everything the process printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.send(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send(signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def start_redis(
    log_dir: Path, port: int | None = None, appendonly: bool = False, extra_args: tuple[str, ...] = ()
) -> tuple[ManagedProcess, str]:
    """A private redis-server on a free port; with ``appendonly`` it keeps an fsync-always AOF in ``log_dir``;
    ``extra_args`` are more redis-server options (e.g. ``("--maxmemory", "8mb")``)."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed (scripts/test installs it when it can)")
    port = port or free_port()
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(log_dir)]
    argv += ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else ["--appendonly", "no"]
    argv += extra_args
    proc = ManagedProcess("redis", argv, dict(os.environ), log_dir)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, 10, "redis-server to answer")
    client.close()
    return proc, url


DEMO_TASK_MODULES = "worker.tasks.demo"


def relay_env(redis_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a Relay process under test or measurement (its workers run the demo tasks unless
    ``RELAY_TASK_MODULES`` says otherwise)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    # Workers poll at the production default (RELAY_POLL_DELAY_SECONDS, 2 s): they find work through wake-up
    # notices and the due times their claims return, as deployed (a 0.05 s poll here once hid wake-up bugs). A
    # test or benchmark that needs another poll sets it, saying why.
    env.update({"RELAY_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"})
    env["RELAY_WORKER_METRICS_PORT"] = "0"  # many workers on one host: a test that scrapes one gives it a port
    env["RELAY_TASK_MODULES"] = DEMO_TASK_MODULES
    # A test's leftover long tasks must not hold its teardown for the default 25 s: the tests of the grace
    # period set their own.
    env["RELAY_WORKER_GRACE_SECONDS"] = "3"
    env.update(overrides)
    return env


API_FACTORY = "api.app:create_app"


def offer_tasks(redis_url: str, queue_name: str, task_modules: str, cluster: bool = False) -> None:
    """Offer the tasks of ``task_modules`` (comma-separated) on ``queue_name`` as a live worker would (a presence
    record naming their catalogue, seen far ahead), so an API started alone accepts them; the tests of "no live
    worker" do without. ``cluster``: ``redis_url`` names a node of a Redis Cluster (the keys are then those of
    the cluster layout of ``queue_name``, as the API and workers use)."""
    from shared import catalogue, keys
    from shared.serialization import dumps
    from shared.settings import Settings
    from worker.tasks import load

    registry = load(task_modules.split(","))
    digest, body = catalogue.encode([spec.describe(Settings().job_timeout_seconds) for spec in registry])
    record = {"id": "tests:offers", "seen_ms": int((time.time() + 86400) * 1000), "catalogue": digest}
    client = redis.RedisCluster.from_url(redis_url) if cluster else redis.Redis.from_url(redis_url)
    try:
        with keys.layout(queue_name, cluster):
            client.set(keys.catalogue(digest), body)
            client.hset(keys.worker_presence(queue_name), "tests:offers", dumps(record))
    finally:
        client.close()


def start_api(
    log_dir: Path, env: dict[str, str], wait_ready: bool = True, factory: str = API_FACTORY, offers: bool = True
) -> tuple[ManagedProcess, str]:
    """``sanic api.app:create_app --factory`` (or another ``factory``) on a free port; returns it and its URL.
    With ``offers``, the tasks of its ``RELAY_TASK_MODULES`` are offered on its queue as if a worker ran (see
    ``offer_tasks``)."""
    if offers:
        queue_name = env.get("RELAY_QUEUE_NAME", "relay:queue")
        modules = env.get("RELAY_TASK_MODULES", DEMO_TASK_MODULES)
        offer_tasks(env["RELAY_REDIS_URL"], queue_name, modules, env.get("RELAY_REDIS_CLUSTER") == "true")
    port = free_port()
    argv = [
        str(BIN / "sanic"),
        factory,
        "--factory",
        "--single-process",
        "--no-motd",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = ManagedProcess("api", argv, env, log_dir)
    base = f"http://127.0.0.1:{port}"
    if wait_ready:
        wait_until(lambda: _ready(base, proc), 20, f"the API on {base} to be ready")
    return proc, base


def _ready(base: str, proc: ManagedProcess) -> bool:
    if proc.proc.poll() is not None:
        raise RuntimeError(f"the API exited early:\n{proc.output()}")
    try:
        return httpx.get(f"{base}/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_worker(log_dir: Path, env: dict[str, str], wait_ready: bool = True) -> ManagedProcess:
    """``arq worker.settings``; ready once it logs that it is polling."""
    proc = ManagedProcess("worker", [str(BIN / "arq"), "worker.settings"], env, log_dir)
    if wait_ready:

        def polling() -> bool:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"the worker exited early:\n{proc.output()}")
            return "relay worker ready" in proc.output()

        wait_until(polling, 20, "the worker to start")
    return proc
