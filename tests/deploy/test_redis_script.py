"""k8s/base/redis.sh, the Redis start script compose and Kubernetes share, run for real with a local redis-server.

It runs under both shells it meets: dash (Debian) and busybox ash (the official redis image is Alpine).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis

from bench.harness.processes import ManagedProcess, free_port, wait_until
from tests.deploy import tools

SCRIPT = tools.K8S / "base" / "redis.sh"
SHELLS = {"dash": ["sh"], "busybox": ["busybox", "sh"]}
EX_CONFIG = 64


@pytest.fixture(params=list(SHELLS))
def shell(request: pytest.FixtureRequest) -> list[str]:
    argv = SHELLS[request.param]
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is not installed (apt-get install {argv[0]}; .ci/run installs it)")
    return argv


def script_env(url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "REDIS"))}
    if url is not None:
        env["RELAY_REDIS_URL"] = url
    return {**env, **extra}


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        (None, "must carry credentials"),
        ("redis://redis:6379/0", "must carry credentials"),
        ("redis://relay:@redis:6379/0", "RELAY_REDIS_PASSWORD"),
        ("redis://relay@redis:6379/0", "has no password"),
        ("redis://relay:short@redis:6379/0", "shorter than 16"),
        ("redis://relay:with%40percent-encoding-0123@redis:6379/0", "only letters, digits"),
        ("redis://relay:with$dollar-0123456789@redis:6379/0", "only letters, digits"),
        ("redis://:0123456789abcdef0123@redis:6379/0", "must be a name"),
        ("redis://default:0123456789abcdef0123@redis:6379/0", "must be a name"),
    ],
)
def test_no_usable_password_means_no_redis(shell: list[str], url: str | None, complaint: str) -> None:
    for mode in (["serve"], ["check", "PONG"]):
        result = subprocess.run(
            [*shell, str(SCRIPT), *mode], env=script_env(url), capture_output=True, text=True, timeout=10, check=False
        )
        assert result.returncode == EX_CONFIG, result
        assert complaint in result.stderr


@pytest.fixture
def server(shell: list[str], tmp_path: Path) -> Iterator[tuple[ManagedProcess, dict[str, str], list[str]]]:
    """redis.sh serve on a free port with AOF in tmp_path; yields the process, its env and its argv."""
    port = free_port()
    password = secrets.token_hex(16)
    env = script_env(f"redis://relay:{password}@127.0.0.1:{port}/0", REDIS_PORT=str(port))
    argv = [*shell, str(SCRIPT), "serve", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    proc = start(argv, env, tmp_path)
    try:
        yield proc, env, argv
    finally:
        proc.stop()


def start(argv: list[str], env: dict[str, str], log_dir: Path) -> ManagedProcess:
    proc = ManagedProcess("redis-script", argv, env, log_dir)
    wait_until(lambda: healthy(env), 10, "redis.sh check PONG to pass")
    return proc


def healthy(env: dict[str, str]) -> bool:
    check = subprocess.run(["sh", str(SCRIPT), "check", "PONG"], env=env, capture_output=True, timeout=10)
    return check.returncode == 0


def password_of(env: dict[str, str]) -> str:
    return str(urlparse(env["RELAY_REDIS_URL"]).password)


def client(env: dict[str, str], username: str | None = None, password: str | None = None) -> redis.Redis:
    port = int(env["REDIS_PORT"])
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, username=username, password=password)


def relay_client(env: dict[str, str]) -> redis.Redis:
    return client(env, username="relay", password=password_of(env))


def test_only_relays_user_gets_in_and_dangerous_commands_stay_out(
    server: tuple[ManagedProcess, dict[str, str], list[str]],
) -> None:
    proc, env, _ = server
    password = password_of(env)
    with client(env) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with client(env, password=password) as default, pytest.raises(redis.AuthenticationError):
        default.ping()  # the password alone means the default user, which nobody can log in as
    with relay_client(env) as relay:
        assert relay.ping() is True
        assert relay.info("server")["redis_version"]  # arq's worker logs it at start
        for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("SHUTDOWN",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                relay.execute_command(*command)
    # The password went to redis-server on stdin, never on a command line anyone can read.
    assert password not in Path(f"/proc/{proc.pid}/cmdline").read_text()
    assert "redis-server" in Path(f"/proc/{proc.pid}/cmdline").read_text(), "the script must exec redis-server"


def test_the_health_check_needs_the_right_password(server: tuple[ManagedProcess, dict[str, str], list[str]]) -> None:
    _, env, _ = server
    assert healthy(env)
    wrong = {**env, "RELAY_REDIS_URL": env["RELAY_REDIS_URL"].replace("relay:", "relay:0000000000000000x")}
    assert not healthy(wrong)


def test_transactions_survive_a_restart_through_the_aof(
    server: tuple[ManagedProcess, dict[str, str], list[str]], tmp_path: Path
) -> None:
    """Redis replays the AOF as the default user and re-checks ACLs at EXEC: a default user stripped of its
    commands would drop every MULTI/EXEC (arq's enqueue and pickup), and queued jobs with them, silently."""
    proc, env, argv = server
    with relay_client(env) as relay, relay.pipeline(transaction=True) as multi:
        multi.set("job:1", "payload").zadd("queue", {"job:1": 1})
        multi.execute()
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0
    restarted = start(argv, env, tmp_path)
    try:
        with relay_client(env) as relay:
            assert relay.get("job:1") == b"payload"
            assert relay.zrange("queue", 0, -1) == [b"job:1"]
    finally:
        restarted.stop()
