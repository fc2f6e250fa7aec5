"""scripts/dev as a newcomer meets it: real runner, real children, real signals, its own data directory.

Every runner here gets ``--data-dir`` under tmp_path, so no test ever touches (or loads) the data of a
``scripts/dev`` someone is running in this checkout.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from bench.harness.client import read_events, submit_ok, types, wait_state
from bench.harness.processes import REPO, ManagedProcess, free_port, free_port_run, start_redis, wait_until
from shared import keys, lanes
from tests.support.metrics import scrape, total

DEVELOPMENT_DOC = REPO / "docs" / "development.md"


class DevRunner:
    """``scripts/devrun.py`` (what scripts/dev execs) with its output in a file; killed by PID at the end."""

    def __init__(
        self,
        tmp_path: Path,
        *args: str,
        port: int | None = None,
        redis_port: int | None = None,
        tee: bool = False,
        **env: str,
    ) -> None:
        """``tee``: as ``scripts/dev | tee log`` in a terminal: its output through a ``tee`` in its process group
        (which Ctrl-C reaches too), its stderr apart (in ``stderr_path``), as on the terminal."""
        self.port, self.redis_port = port or free_port(), redis_port or free_port()
        self.data_dir = tmp_path / "dev-data"
        self.log_path = tmp_path / f"dev-{self.port}.log"
        self.stderr_path = tmp_path / f"dev-{self.port}.stderr"
        self._log = self.log_path.open("wb")
        self.tee: subprocess.Popen[bytes] | None = None
        # Its workers' metrics on free ports, not the default one (another run or a real scripts/dev may hold it).
        self.metrics_port = int(env.setdefault("RELAY_WORKER_METRICS_PORT", str(free_port_run(4))))
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")} | env
        argv = [sys.executable, "scripts/devrun.py", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if "RELAY_REDIS_URL" not in env:
            argv += ["--redis-port", str(self.redis_port)]
        if tee:
            with self.stderr_path.open("wb") as stderr:
                self.proc = subprocess.Popen(
                    [*argv, *args], cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=stderr, process_group=0
                )
            assert self.proc.stdout is not None
            self.tee = subprocess.Popen(
                ["tee"],
                stdin=self.proc.stdout,
                stdout=self._log,
                process_group=self.proc.pid,
                # A terminal's tee dies of Ctrl-C; this one would ignore it when the suite runs in the background
                # (a shell starts background jobs with SIGINT ignored, and children inherit that).
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
            self.proc.stdout.close()  # the tee is its only reader
        else:
            self.proc = subprocess.Popen(
                [*argv, *args], cwd=REPO, env=environment, stdout=self._log, stderr=subprocess.STDOUT
            )
        self.base = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[str]:
        """The runner's own lines (``dev | ...``), without the prefix."""
        return [line.split(" | ", 1)[1] for line in self.output().splitlines() if line.strip().startswith("dev |")]

    def wait_for(self, text: str, timeout: float = 60) -> None:
        def seen() -> bool:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"the runner exited before saying {text!r}:\n{self.output()}")
            return False

        wait_until(seen, timeout, f"the dev runner to say {text!r}")

    def wait_until_up(self, timeout: float = 60) -> None:
        """Until the runner has said everything it says once Relay is up: "Relay is up" comes first and the guide's
        lines after it, so a test that read its lines at "Relay is up" could miss them (seen on a slow host)."""
        self.wait_for("Relay is up", timeout)
        self.wait_for("added a task?", timeout)

    def interrupt(self) -> None:
        """What Ctrl-C does: SIGINT to the runner (its children live in their own sessions)."""
        self.proc.send_signal(signal.SIGINT)

    def ctrl_c(self) -> None:
        """What Ctrl-C in a terminal does: SIGINT to the foreground process group (the runner and, with ``tee``,
        the tee); the children live in sessions of their own."""
        if self.tee is None:
            self.interrupt()
        else:
            os.killpg(self.proc.pid, signal.SIGINT)

    def child_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"started \S+ \(pid (\d+)\)", self.output())]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.tee is not None and self.tee.poll() is None:
            self.tee.kill()
            self.tee.wait()
        for pid in self.child_pids():  # children in their own sessions outlive a killed runner
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._log.close()


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text()
    except FileNotFoundError:
        return False


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[list[DevRunner]]:
    """Start runners with ``dev.append(DevRunner(...))``; each is stopped by PID when the test ends."""
    runners: list[DevRunner] = []
    yield runners
    for runner in runners:
        runner.close()


def kept(client: redis.Redis, task_id: str) -> bool:
    """The dev queue still holds the (demo ``sleep``) job: waiting in its lane, or running (see shared/keys.py)."""
    waiting = client.zscore(keys.lane("relay:queue", lanes.lane_id("sleep", "default", 0, None)), task_id) is not None
    return waiting or client.zscore("relay:queue", task_id) is not None


def test_dev_runner_starts_everything_and_stops_in_order(tmp_path: Path, dev: list[DevRunner]) -> None:
    runner = DevRunner(tmp_path, RELAY_HEARTBEAT_SECONDS="5")
    dev.append(runner)
    runner.wait_until_up()
    assert "                 (and the other RELAY_* variables you set here: RELAY_HEARTBEAT_SECONDS)" in runner.lines()
    task_id = submit_ok(runner.base, {"task": "echo", "args": ["dev"]})
    assert types(read_events(runner.base, task_id)) == ["started", "result", "end"]
    runner.interrupt()
    assert runner.proc.wait(60) == 0
    output = runner.output()
    assert "Traceback" not in output
    stops = re.findall(r"stopping (api|worker-1|redis)", output)
    assert stops == ["api", "worker-1", "redis"]
    assert not [pid for pid in runner.child_pids() if _alive(pid)]
    # its Redis kept its AOF in a directory of its own, named after its port, under the given data dir
    assert (runner.data_dir / str(runner.redis_port) / "appendonlydir").is_dir()
    assert not (REPO / ".relay-dev" / str(runner.redis_port)).exists()


def test_ctrl_c_stops_everything_when_its_output_went_to_a_tee_that_ctrl_c_killed(
    tmp_path: Path, dev: list[DevRunner]
) -> None:
    # `scripts/dev | tee log`, then Ctrl-C: the tee dies at once, the runner's next line ("stopping api") met a pipe
    # with no reader, BrokenPipeError ended the runner (exit 1) and left Redis, the API and the worker running.
    runner = DevRunner(tmp_path, tee=True)
    dev.append(runner)
    runner.wait_until_up()
    children = runner.child_pids()
    assert len(children) == 3  # redis, worker-1, api
    runner.ctrl_c()
    assert runner.tee is not None
    assert runner.tee.wait(10) == -signal.SIGINT  # the reader is gone: every line from here on meets a broken pipe
    code = runner.proc.wait(60)
    assert not [pid for pid in children if _alive(pid)], (
        f"orphaned children; the runner said:\n{runner.stderr_path.read_text()}"
    )
    assert code == 0
    redis_log = (runner.data_dir / str(runner.redis_port) / "logs" / "redis.log").read_text()
    assert "Redis is now ready to exit, bye bye..." in redis_log  # stopped by SIGTERM (its AOF flushed), not killed
    assert runner.stderr_path.read_text() == ""  # no traceback, not even Python's "Exception ignored ... BrokenPipe"


def test_the_printed_command_attaches_another_worker_to_the_dev_redis(tmp_path: Path, dev: list[DevRunner]) -> None:
    runner = DevRunner(tmp_path, "--workers", "0")
    dev.append(runner)
    runner.wait_until_up()
    line = next(line for line in runner.lines() if line.startswith("another worker:"))
    url, modules, metrics, *argv = shlex.split(line.removeprefix("another worker:"))
    assert url == f"RELAY_REDIS_URL=redis://127.0.0.1:{runner.redis_port}/0"
    assert modules == "RELAY_TASK_MODULES=worker.tasks.demo"  # the runner's default tasks, named for the new one
    assert metrics == f"RELAY_WORKER_METRICS_PORT={runner.metrics_port}"  # it runs no worker: the first port is free
    assert Path(argv[0]).name == "arq"
    assert argv[1:] == ["worker.settings"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env |= dict(assignment.split("=", 1) for assignment in (url, modules, metrics))
    worker = ManagedProcess("attached-worker", argv, env, tmp_path)  # as printed, from the repo root
    try:
        # The API takes a task once a live worker offers it: this one is the dev stack's only worker.
        wait_until(lambda: "relay worker ready" in worker.output(), 20, "the attached worker to start")
        task_id = submit_ok(runner.base, {"task": "echo", "args": ["attached"]})
        assert read_events(runner.base, task_id)[-2]["data"] == {"echo": "attached"}
        assert f"using Redis at redis://127.0.0.1:{runner.redis_port}/0" in worker.output()
    finally:
        worker.stop()


def test_the_printed_commands_take_none_of_the_runners_own_ports(tmp_path: Path, dev: list[DevRunner]) -> None:
    # `another API:` said --port {port + 1} and `another worker:` the port after the last worker's metrics, free
    # or not: with the dev Redis (or a worker's metrics) on the next port, the commands named the runner's own ports.
    api, metrics, redis_port = (base := free_port_run(3)), base + 1, base + 2
    runner = DevRunner(tmp_path, "--metrics-port", str(metrics), port=api, redis_port=redis_port)
    dev.append(runner)
    runner.wait_until_up()
    own = {api, metrics, redis_port}
    worker_line = next(line for line in runner.lines() if line.startswith("another worker:"))
    [next_metrics] = re.findall(r"RELAY_WORKER_METRICS_PORT=(\d+)", worker_line)
    api_line = next(line for line in runner.lines() if line.startswith("another API:"))
    *env, port_option, port = shlex.split(api_line.removeprefix("another API:"))
    assert port_option == "--port"
    assert int(next_metrics) not in own, worker_line
    assert int(port) not in own | {int(next_metrics)}, api_line
    # and the API command, as printed, starts an API beside the runner's
    variables = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    variables |= dict(assignment.split("=", 1) for assignment in env[:2])
    other = ManagedProcess("another-api", [*env[2:], port_option, port], variables, tmp_path)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health/ready"), 30, "the printed API command to serve")
    finally:
        other.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_guide_says_who_loads_task_code() -> None:
    # It said "workers and the API load tasks when they start": the API never imports task code (it learns
    # the tasks from the workers' catalogue), so only the workers need a restart for a new task.
    sys.path.insert(0, str(REPO / "scripts"))
    import devsupervise

    lines = devsupervise.guide("http://127.0.0.1:8000", 8001, "redis://127.0.0.1:6380/0", 6380, [], "m", [9191], 9192)
    assert lines[-1] == "added a task?   stop and start again: workers import task modules only when they start"


def test_the_docs_show_what_the_runner_prints_for_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import devsupervise

    doc = DEVELOPMENT_DOC.read_text()
    for line in devsupervise.guide(
        "http://127.0.0.1:8000", 8001, "redis://127.0.0.1:6380/0", 6380, [], "worker.tasks.demo", [9191], 9192
    ):
        if line.startswith(("another worker:", "another API:")):
            assert line.split(":", 1)[1].strip() in doc
    assert "scripts/dev --reset" in doc
    assert "redis-cli -p 6380 FLUSHDB" in doc


def test_help_names_the_command_people_type() -> None:
    done = subprocess.run([sys.executable, "scripts/devrun.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: scripts/dev ")
    assert "--tasks MODULES" in done.stdout  # your own tasks instead of the demo ones
    assert "--metrics-port" in done.stdout  # every port has a flag (the metrics port had only a variable)


MY_TASKS = """\
from worker.context import TaskContext
from worker.tasks import registry


@registry.task()
async def greet(task: TaskContext, name: str = "world") -> str:
    return f"hello {name}"
"""


def test_tasks_runs_your_own_task_modules(tmp_path: Path, dev: list[DevRunner]) -> None:
    (tmp_path / "mytasks.py").write_text(MY_TASKS)
    runner = DevRunner(tmp_path, "--tasks", "mytasks", PYTHONPATH=str(tmp_path))
    dev.append(runner)
    runner.wait_until_up()
    task_id = submit_ok(runner.base, {"task": "greet", "kwargs": {"name": "dev"}})
    assert read_events(runner.base, task_id)[-2]["data"] == "hello dev"
    line = next(line for line in runner.lines() if line.startswith("another worker:"))
    assert " RELAY_TASK_MODULES=mytasks " in line
    offered = httpx.get(f"{runner.base}/openapi.json", timeout=10).json()["x-relay-tasks"]
    assert sorted(offered) == ["greet"]  # instead of the demo tasks, not beside them


def test_a_worker_start_up_mistake_stops_the_runner_in_one_line(tmp_path: Path, dev: list[DevRunner]) -> None:
    runner = DevRunner(tmp_path, RELAY_TASK_MODULES="worker.tasks.dmeo")
    dev.append(runner)
    assert runner.proc.wait(60) == 78  # what the worker exits with: a configuration to fix
    log = runner.data_dir / str(runner.redis_port) / "logs" / "worker-1.log"
    said = (
        "RELAY_TASK_MODULES names 'worker.tasks.dmeo', which cannot be imported: No module named "
        "'worker.tasks.dmeo' (did you mean 'worker.tasks.demo'?)"
    )
    assert log.read_text().splitlines() == [said]  # no traceback, even in the log file
    assert runner.lines()[-3:] == [
        "stopped because worker-1 exited with code 78:",
        f"    {said}",
        f"(its full output: {log.relative_to(REPO) if log.is_relative_to(REPO) else log})",
    ]


def test_a_child_dying_at_start_up_stops_everything_and_says_why_last(tmp_path: Path, dev: list[DevRunner]) -> None:
    # A malformed connection string makes the worker's Service Bus bridge fail in its start-up hook.
    env = {"RELAY_SERVICEBUS_QUEUE": "tasks", "RELAY_SERVICEBUS_CONNECTION_STRING": "not-a-connection-string"}
    runner = DevRunner(tmp_path, **env)
    dev.append(runner)
    assert runner.proc.wait(60) == 1  # well before the old 30 s start-up timeout would even have fired
    output = runner.output()
    assert "Relay is up" not in output
    assert "Traceback" not in output  # folded on screen ...
    log = runner.data_dir / str(runner.redis_port) / "logs" / "worker-1.log"
    assert "Traceback (most recent call last):" in log.read_text()  # ... and kept whole in the log file
    assert runner.lines()[-3:] == [
        "stopped because worker-1 exited with code 1:",
        "    ValueError: Connection string is either blank or malformed.",
        f"(its full output: {log.relative_to(REPO) if log.is_relative_to(REPO) else log})",
    ]
    assert not [pid for pid in runner.child_pids() if _alive(pid)]


def test_a_bad_variable_stops_the_runner_before_it_starts_anything(tmp_path: Path, dev: list[DevRunner]) -> None:
    runner = DevRunner(tmp_path, RELAY_MAX_QUEUE_DEPTH="lots")
    dev.append(runner)
    assert runner.proc.wait(30) == 78
    assert runner.lines() == ["RELAY_MAX_QUEUE_DEPTH='lots' is invalid: expected an integer >= 1"]


def test_ctrl_c_is_obeyed_while_waiting_for_redis(tmp_path: Path, dev: list[DevRunner]) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    runner = DevRunner(tmp_path, RELAY_REDIS_URL=nobody)
    dev.append(runner)
    runner.wait_for(f"using your Redis at {nobody} (RELAY_REDIS_URL); not starting one")
    runner.interrupt()
    assert runner.proc.wait(20) == 0
    assert "started" not in runner.output()  # no Redis of its own, no worker or API without a Redis


def test_relay_redis_url_is_respected(tmp_path: Path, dev: list[DevRunner], redis_url: str) -> None:
    runner = DevRunner(tmp_path, RELAY_REDIS_URL=redis_url)
    dev.append(runner)
    # The guide's lines follow "Relay is up": wait for the one asserted on, not only the first (CI read between them).
    runner.wait_for(f"another worker:  RELAY_REDIS_URL={redis_url} RELAY_TASK_MODULES=worker.tasks.demo ")
    assert "started redis" not in runner.output()
    task_id = submit_ok(runner.base, {"task": "echo"})
    wait_state(runner.base, task_id, {"succeeded"})
    assert redis.Redis.from_url(redis_url).exists(f"arq:result:{task_id}")  # it ran on the user's Redis
    runner.interrupt()
    assert runner.proc.wait(60) == 0


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A private redis-server that wants a password; yields its URL (without it) and the password."""
    port, password = free_port(), "dev-s3cret"
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is not installed (scripts/test installs it when it can)"
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(tmp_path), "--requirepass", password]
    proc = ManagedProcess("locked-redis", argv, dict(os.environ), tmp_path)
    client = redis.Redis(port=port, password=password)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, 10, "the password-protected redis-server to answer")
        yield f"redis://127.0.0.1:{port}/0", password
    finally:
        client.close()
        proc.stop()


def test_the_redis_password_variable_is_used_to_reach_the_users_redis(
    tmp_path: Path, locked_redis: tuple[str, str], dev: list[DevRunner]
) -> None:
    url, password = locked_redis
    runner = DevRunner(tmp_path, RELAY_REDIS_URL=url, RELAY_REDIS_PASSWORD=password, RELAY_WORKER_GRACE_SECONDS="300")
    dev.append(runner)
    task_id = _start_sleeping_task(runner)  # "Relay is up": the runner's own ping got through
    _first_then_second_ctrl_c(runner)  # which waits for "1 job in progress": the runner read the workers' jobs
    assert "your Redis keeps 1 job in relay:queue" in runner.lines()
    assert "Authentication required" not in runner.output()
    client = redis.Redis.from_url(url, password=password)
    try:
        assert kept(client, task_id)
    finally:
        client.close()


def test_a_wrong_redis_password_stops_the_runner_at_once_saying_so(
    tmp_path: Path, locked_redis: tuple[str, str], dev: list[DevRunner]
) -> None:
    url, _ = locked_redis
    runner = DevRunner(tmp_path, RELAY_REDIS_URL=url, RELAY_REDIS_PASSWORD="not-the-s3cret")
    dev.append(runner)
    assert runner.proc.wait(20) == 1  # not after the 30 s it gives a Redis that is still starting
    assert runner.lines()[-1] == (
        f"stopped: Redis at {url} refused the connection: invalid username-password pair or user is disabled."
    )
    assert "started" not in runner.output()  # no worker or API for a Redis they cannot use
    assert "not-the-s3cret" not in runner.output()


@pytest.mark.parametrize("which", ["api", "redis"])
def test_busy_ports_are_refused_before_anything_starts(tmp_path: Path, dev: list[DevRunner], which: str) -> None:
    busy = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", busy))
        sock.listen()
        runner = DevRunner(tmp_path, port=busy) if which == "api" else DevRunner(tmp_path, redis_port=busy)
        dev.append(runner)
        assert runner.proc.wait(30) == 1
    what, option = ("the API", "--port") if which == "api" else ("the dev Redis", "--redis-port")
    [line] = runner.lines()
    instead = re.escape(f"scripts/dev {option} ") + r"(\d+)$"
    assert re.match(
        re.escape(
            f"not starting: port already in use: 127.0.0.1:{busy} ({what}). Is another scripts/dev running? "
            "Stop it, or choose free ports, e.g. "
        )
        + instead,
        line,
    ), line


def test_every_busy_port_is_named_in_one_refusal(tmp_path: Path, dev: list[DevRunner]) -> None:
    # A second scripts/dev met its conflicts one at a time (the API's port, then the metrics port, which had no
    # flag, then Redis's): now one message names them all and a command line that avoids them.
    base = free_port_run(4)  # side by side: the ports suggested instead must not take each other's either
    api, metrics, redis_port = base, base + 1, base + 3
    held = []
    for port in (api, metrics + 1, redis_port):
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen()
        held.append(sock)
    try:
        runner = DevRunner(tmp_path, "--workers", "2", "--metrics-port", str(metrics), port=api, redis_port=redis_port)
        dev.append(runner)
        assert runner.proc.wait(30) == 1
    finally:
        for sock in held:
            sock.close()
    [line] = runner.lines()
    head = (
        f"not starting: ports already in use: 127.0.0.1:{api} (the API), 127.0.0.1:{metrics + 1} (worker-2's "
        f"metrics), 127.0.0.1:{redis_port} (the dev Redis). Is another scripts/dev running? Stop it, or choose "
        "free ports, e.g. scripts/dev "
    )
    assert line.startswith(head), line
    options = dict(re.findall(r"(--[a-z-]+) (\d+)", line.removeprefix(head)))
    assert list(options) == ["--port", "--metrics-port", "--redis-port"]
    port, first_metrics, dev_redis = (int(options[o]) for o in ("--port", "--metrics-port", "--redis-port"))
    suggested = [port, first_metrics, first_metrics + 1, dev_redis]  # two workers: two metrics ports
    assert len(set(suggested)) == 4
    assert not set(suggested) & {api, metrics, metrics + 1, redis_port}


def test_a_data_directory_in_use_is_refused(tmp_path: Path, dev: list[DevRunner]) -> None:
    redis_port = free_port()
    held = tmp_path / "dev-data" / str(redis_port)
    (held / "logs").mkdir(parents=True)
    with (held / "lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running instance holds
        lock.write("4242\n")
        lock.flush()
        runner = DevRunner(tmp_path, redis_port=redis_port)
        dev.append(runner)
        assert runner.proc.wait(30) == 1
    assert runner.lines() == [
        f"not starting: {held} is in use by another scripts/dev (pid 4242): stop it, or give this one another "
        "--redis-port (or --data-dir)"
    ]


def _start_sleeping_task(runner: DevRunner) -> str:
    runner.wait_until_up()
    task_id = submit_ok(runner.base, {"task": "sleep", "kwargs": {"seconds": 600, "steps": 600}})
    wait_state(runner.base, task_id, {"running"})
    return task_id


def _first_then_second_ctrl_c(runner: DevRunner) -> None:
    runner.interrupt()
    runner.wait_for("waiting for the workers (1 job in progress): they may finish for ")
    runner.wait_for("(Ctrl-C again: re-queue them now)")
    runner.interrupt()
    # The workers' grace is 300 s here: only the second Ctrl-C can make this exit within the minute.
    assert runner.proc.wait(60) == 0


def _reload(runner: DevRunner) -> tuple[ManagedProcess, redis.Redis]:
    """The stopped instance's Redis data, loaded from its AOF by a fresh redis-server."""
    proc, url = start_redis(runner.data_dir / str(runner.redis_port), appendonly=True)
    return proc, redis.Redis.from_url(url)


GRACE = {"RELAY_WORKER_GRACE_SECONDS": "300"}


def test_ctrl_c_waits_seconds_in_dev_not_the_deployed_half_minute(tmp_path: Path, dev: list[DevRunner]) -> None:
    # Ctrl-C with a task running took ~36 s (10 s API drain + 25 s worker grace): scripts/dev has its own.
    runner = DevRunner(tmp_path)
    dev.append(runner)
    task_id = _start_sleeping_task(runner)
    assert (
        "on Ctrl-C:      open streams get 3 s to end, running tasks 5 s, then are re-queued (RELAY_API_DRAIN_SECONDS, "
        "RELAY_WORKER_GRACE_SECONDS; deployed: 10 s and 25 s)"
    ) in runner.lines()
    runner.interrupt()
    runner.wait_for("waiting for the workers (1 job in progress): they may finish for ")
    grace_left = re.search(r"they may finish for (\d+) s more", runner.output())
    assert grace_left is not None
    assert int(grace_left.group(1)) <= 5
    assert runner.proc.wait(60) == 0
    assert "did not stop within" not in runner.output()  # the worker re-queued its job itself, after 5 s
    proc, client = _reload(runner)
    try:
        assert kept(client, task_id)  # re-queued, not lost
    finally:
        client.close()
        proc.stop()


def test_second_ctrl_c_stops_promptly_and_loses_no_job(tmp_path: Path, dev: list[DevRunner]) -> None:
    runner = DevRunner(tmp_path, **GRACE)
    dev.append(runner)
    task_id = _start_sleeping_task(runner)
    stop_line = next(line for line in runner.lines() if line.startswith("on Ctrl-C:"))
    assert "running tasks 300 s" in stop_line  # a variable you set wins over scripts/dev's 5 s
    _first_then_second_ctrl_c(runner)
    assert "second signal to the workers: they re-queue their running jobs now" in runner.output()
    assert (
        "the dev queue keeps 1 job for the next scripts/dev (scripts/dev --reset starts without them)" in runner.lines()
    )
    assert not [pid for pid in runner.child_pids() if _alive(pid)]
    proc, client = _reload(runner)
    try:
        assert kept(client, task_id)  # still queued (or re-queued): not lost
        assert client.exists(f"arq:job:{task_id}")
    finally:
        client.close()
        proc.stop()
    # and the way out, as the runner said: --reset starts without it
    reset = DevRunner(tmp_path, "--reset", redis_port=runner.redis_port)
    dev.append(reset)
    reset.wait_until_up()
    assert "reset: the dev queue, tasks and events are gone" in reset.output()
    assert httpx.get(f"{reset.base}/tasks/{task_id}", timeout=10).status_code == 404
    reset.interrupt()
    assert reset.proc.wait(60) == 0


def test_a_third_ctrl_c_kills_workers_at_once_and_redis_still_keeps_the_job(
    tmp_path: Path, dev: list[DevRunner]
) -> None:
    runner = DevRunner(tmp_path, **GRACE)
    dev.append(runner)
    task_id = _start_sleeping_task(runner)
    runner.interrupt()
    runner.wait_for("(Ctrl-C again: re-queue them now)")
    runner.interrupt()
    runner.wait_for("stopping at once (Ctrl-C a third time kills the workers and the API)")
    runner.interrupt()
    runner.wait_for("killing the workers and the API; Redis still stops cleanly")
    assert runner.proc.wait(30) == 0
    assert "did not stop within" not in runner.output()  # it did not wait out the 10 s of the second signal
    proc, client = _reload(runner)
    try:
        assert kept(client, task_id)
    finally:
        client.close()
        proc.stop()


def test_second_ctrl_c_makes_the_workers_requeue_their_jobs_themselves(tmp_path: Path, dev: list[DevRunner]) -> None:
    runner = DevRunner(tmp_path, **GRACE)
    dev.append(runner)
    task_id = _start_sleeping_task(runner)
    _first_then_second_ctrl_c(runner)
    assert "did not stop within" not in runner.output()  # the worker exited by itself, nobody killed it
    proc, client = _reload(runner)
    try:
        assert client.zscore("relay:queue", task_id) is None  # not in the running band: not left to its lease
        lane = keys.lane("relay:queue", lanes.lane_id("sleep", "default", 0, None))
        assert client.zscore(lane, task_id) is not None  # re-queued by its worker
        assert not client.exists(f"arq:in-progress:{task_id}")  # released: the next worker takes it at once
    finally:
        client.close()
        proc.stop()


def test_each_dev_worker_serves_its_own_metrics(tmp_path: Path, dev: list[DevRunner]) -> None:
    runner = DevRunner(tmp_path, "--workers", "2")
    dev.append(runner)
    runner.wait_until_up()
    first, second = runner.metrics_port, runner.metrics_port + 1
    urls = [f"http://127.0.0.1:{port}/metrics" for port in (first, second)]
    assert f"worker metrics:  {urls[0]}  {urls[1]}" in runner.lines()
    assert f"dashboard:       {runner.base}/dashboard/" in runner.lines()
    assert httpx.get(f"{runner.base}/dashboard/", timeout=10).headers["content-type"].startswith("text/html")
    ids = [submit_ok(runner.base, {"task": "echo", "args": [f"m{i}"]}) for i in range(6)]
    for task_id in ids:
        wait_state(runner.base, task_id, {"succeeded"})
    scraped = [scrape(url) for url in urls]
    # Two servers, one per worker: together they ran every task, once.
    assert sum(total(s, "relay_worker_task_outcomes_total", task="echo", outcome="succeeded") for s in scraped) == 6
    line = next(line for line in runner.lines() if line.startswith("another worker:"))
    assert f"RELAY_WORKER_METRICS_PORT={second + 1} " in line  # the next port, for a worker started by hand


def test_a_busy_metrics_port_is_refused_before_anything_starts(tmp_path: Path, dev: list[DevRunner]) -> None:
    first = free_port_run(2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", first + 1))
        sock.listen()
        runner = DevRunner(tmp_path, "--workers", "2", RELAY_WORKER_METRICS_PORT=str(first))
        dev.append(runner)
        assert runner.proc.wait(30) == 1
    [line] = runner.lines()
    assert line.startswith(
        f"not starting: port already in use: 127.0.0.1:{first + 1} (worker-2's metrics). Is another scripts/dev "
        "running? Stop it, or choose free ports, e.g. scripts/dev --metrics-port "
    ), line
    suggested = int(line.rsplit(" ", 1)[1])
    assert first + 1 not in (suggested, suggested + 1)  # two workers: two free ports from there
