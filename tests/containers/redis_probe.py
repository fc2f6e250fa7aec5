"""Run INSIDE the API container (``python -``): how the stack's Redis answers clients with various credentials.

It reads the real credentials from the container's own RELAY_REDIS_URL (so no secret crosses a command line)
and prints, as JSON, what each client got: ``ok`` or the exception's class and message.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import urlparse

import redis

DANGEROUS = [["FLUSHALL"], ["KEYS", "*"], ["CONFIG", "GET", "requirepass"], ["ACL", "LIST"], ["SHUTDOWN"]]


def outcome(client: redis.Redis, *command: str) -> str:
    try:
        client.execute_command(*command)  # type: ignore[no-untyped-call]
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def main() -> None:
    url = urlparse(os.environ["RELAY_REDIS_URL"])
    server: dict[str, Any] = {"host": url.hostname, "port": url.port or 6379, "socket_timeout": 5}
    report: dict[str, Any] = {"user": url.username}
    clients: dict[str, dict[str, Any]] = {
        "anonymous": {},
        "default user with the password": {"password": url.password},
        "relay user, wrong password": {"username": url.username, "password": "x" * 32},
    }
    for name, credentials in clients.items():
        with redis.Redis(**server, **credentials) as client:
            report[name] = outcome(client, "PING")
    with redis.Redis(**server, username=url.username, password=url.password) as relay:
        report["relay user"] = outcome(relay, "PING")
        report["relay user, INFO"] = outcome(relay, "INFO", "server")
        report["relay user, dangerous"] = {" ".join(c): outcome(relay, *c) for c in DANGEROUS}
        report["relay user, SET"] = outcome(relay, "SET", "container-test:probe", "1", "EX", "60")
    json.dump(report, sys.stdout)


main()
