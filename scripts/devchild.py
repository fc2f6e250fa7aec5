"""One process supervised by scripts/dev: its output on screen (prefixed with its name) and in a log file.

While Relay starts, a traceback is folded to its last line on screen (the log file keeps all of it): a
child that cannot start says why in one line instead of 50-100, and the runner repeats it last.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import deque
from pathlib import Path

COLORS = {"redis": "\033[31m", "worker": "\033[33m", "api": "\033[36m", "dev": "\033[35m"}
LAST_WORDS = 4  # lines of a child's output repeated when it exits on its own
FOLDED = "[traceback folded: "


_stdout_gone = False  # set once stdout cannot be written: the lines from then on go nowhere


def say(name: str, line: str) -> None:
    """One line on stdout, prefixed with who says it; never an exception.

    ``scripts/dev | tee log`` and Ctrl-C kill the tee too: the runner's next line meets a pipe with no reader.
    A failed line must not stop the shutdown it reports on (the children, in sessions of their own, would
    outlive the runner), so from then on nothing more is printed (the children's full logs are still written)."""
    global _stdout_gone
    if _stdout_gone:
        return
    try:
        color = COLORS.get(name.split("-")[0], "") if sys.stdout.isatty() else ""
        reset = "\033[0m" if color else ""
        print(f"{color}{name:>9} |{reset} {line}", flush=True)
    except (OSError, ValueError):  # BrokenPipeError, EIO from a closed terminal, a closed sys.stdout
        _stdout_gone = True
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, as the Python docs advise on SIGPIPE: what is still buffered, and the flush at
    exit, then succeed (Python would otherwise say "Exception ignored ... BrokenPipeError" and exit 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no stdout file descriptor at all: nothing left to silence
        pass


class TracebackFolder:
    """Turns a stream of lines into the lines worth showing: a traceback becomes its exception line.

    Understands Python's own format and the boxed one Sanic prints (``╭`` ... ``╰ Error: message``).
    """

    def __init__(self) -> None:
        self._folded = 0  # lines of the traceback being folded; 0 when not in one
        self.exception: str | None = None  # the last exception line seen

    def feed(self, line: str) -> list[str]:
        """The lines to show for ``line`` (none while inside a traceback)."""
        if line.startswith("Traceback (most recent call last):") or line.startswith("╭"):
            self._folded = 1
            return []
        if not self._folded:
            return [line]
        self._folded += 1
        if line.startswith("╰"):
            return self._close(line.lstrip("╰ "))
        if line.startswith(("│", " ", "\t")) or not line.strip():
            return []
        return self._close(line)

    def _close(self, exception: str) -> list[str]:
        folded, self._folded = self._folded, 0
        self.exception = exception
        return [f"{FOLDED}{folded} lines in the log file] {exception}"]


class Child:
    """A process in its own session (Ctrl-C reaches only the runner, which decides what each child gets)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path, ready_marker: str | None) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self.folding = True  # only while starting: later tracebacks (a failed task) are worth reading in full
        self.ready = asyncio.Event()
        self._ready_marker = ready_marker
        self._folder = TracebackFolder()
        self._recent: deque[str] = deque(maxlen=LAST_WORDS)
        self.pump = asyncio.create_task(self._pump())

    @classmethod
    async def start(
        cls, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_dir: Path, ready_marker: str | None = None
    ) -> Child:
        """Start ``argv``; ``ready`` is set when a line contains ``ready_marker`` (at once if there is none)."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        say("dev", f"started {name} (pid {proc.pid})")
        child = cls(name, proc, log_dir / f"{name}.log", ready_marker)
        if ready_marker is None:
            child.ready.set()
        return child

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.log_path.open("w", encoding="utf-8") as log:
            async for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                log.write(line + "\n")
                log.flush()
                shown = self._folder.feed(line) if self.folding else [line]
                for text in shown:
                    say(self.name, text)
                    self._recent.append(text)
                if self._ready_marker and self._ready_marker in line:
                    self.ready.set()

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def last_words(self) -> list[str]:
        """Why it exited, as it said it: the exception if its last words were a folded traceback, else its
        last few lines."""
        if self._recent and self._recent[-1].startswith(FOLDED) and self._folder.exception is not None:
            return [self._folder.exception]
        return list(self._recent)

    def send(self, sig: signal.Signals) -> None:
        if self.running:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.running:
            self.proc.kill()

    async def finished(self) -> int | None:
        """Its exit code once its output is drained."""
        await self.proc.wait()
        await self.pump
        return self.proc.returncode
