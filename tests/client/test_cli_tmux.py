"""``relay ... --follow`` in a real terminal (a tmux pane): the live progress bar, and Ctrl-C."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from bench.harness.processes import BIN, wait_until
from relay.client import Client

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (scripts/bootstrap.sh installs it when run as root)"
)

# The bar's "done/total" column, followed by the elapsed-time column: "━━━━━━━━━╺━━━━━━━ 2/6 0:00:01".
BAR = re.compile(r"━.* (\d+)/(\d+) +\d+:\d\d:\d\d")
EXIT = re.compile(r"^EXIT=(\d+)$", re.MULTILINE)  # the echo's output, not the typed command line


class Pane:
    """A shell in a detached tmux session on a private server (its own socket), killed by the test."""

    def __init__(self, env: dict[str, str], width: int = 120) -> None:
        self.socket = f"relay-test-{uuid.uuid4().hex[:12]}"
        self._tmux("new-session", "-d", "-x", str(width), "-y", "30", "-s", "t", "bash --norc --noprofile", env=env)

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True, env=env, timeout=10
        )
        return done.stdout

    def type(self, command: str) -> None:
        self._tmux("send-keys", "-t", "t", "-l", command)
        self._tmux("send-keys", "-t", "t", "Enter")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        """What the pane shows now, wrapped lines joined."""
        return self._tmux("capture-pane", "-p", "-J", "-t", "t")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10, check=False)


def pane_env(relay: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return env | {"RELAY_URL": relay, "PATH": f"{BIN}:{env.get('PATH', '')}", "PS1": "$ ", "TERM": "xterm-256color"}


@pytest.fixture
def pane(relay: str) -> Iterator[Pane]:
    shell = Pane(pane_env(relay))
    try:
        yield shell
    finally:
        shell.kill()


@pytest.fixture
def narrow_pane(relay: str) -> Iterator[Pane]:
    """80 columns: what a terminal opens with, and where ``relay ls`` used to cut its cells short."""
    shell = Pane(pane_env(relay), width=80)
    try:
        yield shell
    finally:
        shell.kill()


def test_follow_shows_a_live_progress_bar_then_the_result(pane: Pane) -> None:
    pane.type("relay submit sleep --arg seconds=3 --arg steps=6 --follow; echo EXIT=$?")
    counts: list[int] = []
    deadline = time.monotonic() + 30
    screen = ""
    while not EXIT.search(screen) and time.monotonic() < deadline:
        screen = pane.screen()
        for done, total in BAR.findall(screen):
            assert total == "6"
            if not counts or counts[-1] != int(done):
                counts.append(int(done))
    assert EXIT.findall(screen) == ["0"], screen
    assert len(set(counts)) >= 2, f"the bar's count never changed: {counts}"  # it is live, not drawn once
    assert counts == sorted(counts)
    assert re.search(r'"slept": 3', screen), screen


def test_ctrl_c_stops_following_not_the_task(pane: Pane, relay: str) -> None:
    pane.type("relay submit sleep --arg seconds=4 --arg steps=8 --follow; echo EXIT=$?")
    wait_until(lambda: BAR.search(pane.screen()) is not None, 30, "the progress bar")
    pane.keys("C-c")
    wait_until(lambda: EXIT.search(pane.screen()) is not None, 30, "relay to exit")
    screen = pane.screen()
    assert EXIT.findall(screen) == ["130"], screen
    stopped = re.search(r"Stopped following task (\w+); it keeps running\. Cancel it with: relay cancel (\w+)", screen)
    assert stopped is not None, screen
    assert stopped.group(1) == stopped.group(2)
    assert "Traceback" not in screen
    with Client(relay) as client:
        assert client.result(stopped.group(1), timeout=30) == {"slept": 4}


def test_ls_in_80_columns_cuts_no_state_id_or_date(narrow_pane: Pane, relay: str) -> None:
    with Client(relay) as client:
        handle = client.submit("echo", message="ls at 80 columns")
        handle.result(timeout=30)
    narrow_pane.type("relay ls --task echo --limit 1; echo EXIT=$?")
    screen = ""
    deadline = time.monotonic() + 30
    while not EXIT.search(screen) and time.monotonic() < deadline:
        screen = narrow_pane.screen()
    assert EXIT.findall(screen) == ["0"], screen
    assert "…" not in screen, screen
    assert "succeeded" in screen, screen
    assert handle.id in screen, screen  # cells too long for 80 columns wrap in their cell; none is cut short
