"""The pieces of scripts/dev that need no processes: traceback folding and the instance directory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from devchild import TracebackFolder
from devplace import InstanceDir, Refused, next_free_port

PYTHON_TRACEBACK = """\
Starting worker
Traceback (most recent call last):
  File "/x/arq", line 6, in <module>
    sys.exit(cli())
             ^^^^^
  File "/x/client.py", line 15, in client
    raise ValueError("Connection string is either blank or malformed.")
ValueError: Connection string is either blank or malformed.
after"""

SANIC_TRACEBACK = """\
╭ ⚠️  Uncaught TypeError
│ sanic:6:                                      main()➤
│ worker/tasks/mine.py:3                        registry.task()➤
╰ TypeError: task 'mine': the first parameter must be annotated TaskContext"""


def shown(text: str) -> tuple[list[str], str | None]:
    folder = TracebackFolder()
    lines = [out for line in text.splitlines() for out in folder.feed(line)]
    return lines, folder.exception


def test_a_python_traceback_folds_to_its_exception_line() -> None:
    lines, exception = shown(PYTHON_TRACEBACK)
    assert lines == [
        "Starting worker",
        "[traceback folded: 7 lines in the log file] ValueError: Connection string is either blank or malformed.",
        "after",
    ]
    assert exception == "ValueError: Connection string is either blank or malformed."


def test_sanics_boxed_traceback_folds_too() -> None:
    lines, exception = shown(SANIC_TRACEBACK)
    assert exception == "TypeError: task 'mine': the first parameter must be annotated TaskContext"
    assert lines == [f"[traceback folded: 4 lines in the log file] {exception}"]


def test_reset_deletes_only_redis_data(tmp_path: Path) -> None:
    place = InstanceDir(tmp_path, "6380")
    place.lock()
    (place.path / "appendonlydir").mkdir()
    (place.path / "appendonlydir" / "appendonly.aof.1.incr.aof").write_text("*1\r\n")
    (place.logs / "api.log").write_text("kept")
    assert place.reset()
    assert not (place.path / "appendonlydir").exists()
    assert (place.logs / "api.log").read_text() == "kept"
    assert not place.reset()  # nothing left to clear


def test_the_aof_of_an_older_runner_moves_into_the_instance_directory_once(tmp_path: Path) -> None:
    (tmp_path / "appendonlydir").mkdir()
    place = InstanceDir(tmp_path, "6380")
    place.lock()
    assert place.adopt_legacy(tmp_path)
    assert (place.path / "appendonlydir").is_dir()
    assert not place.adopt_legacy(tmp_path)


def test_a_second_lock_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = InstanceDir(tmp_path, "6380")
    first.lock()  # held while ``first`` lives, as by a running instance
    with pytest.raises(Refused, match=r"is in use by another scripts/dev \(pid \d+\)"):
        InstanceDir(tmp_path, "6380").lock()


def test_the_next_free_port_skips_busy_ones_and_those_to_avoid() -> None:
    def free(host: str, port: int) -> bool:
        return port not in {8001, 8003}

    assert next_free_port("127.0.0.1", 8001, set(), free) == 8002
    assert next_free_port("127.0.0.1", 8001, {8002}, free) == 8004  # e.g. the dev Redis's port: taken, if not yet busy
    assert next_free_port("127.0.0.1", 65535, {65535}, free) == 0  # none left
