"""Random task ids (a uuid4's 32 hex digits, as ``uuid.uuid4().hex``), drawn from the OS a batch at a time.

``os.urandom`` is a system call per id, and on a busy two-core host a system call is where the kernel hands the
core to the process the API just woke (the load generator, Redis): per submit it cost as much as all of the
argument checks. One call here serves ``IDS_PER_READ`` ids, each as random as its own call would be. A forked
child starts with an empty batch (it must not hand out its parent's ids); threads take ids under a lock.
"""

from __future__ import annotations

import os
import threading
from typing import Final

IDS_PER_READ: Final = 64
_VERSION_4: Final = (0x4000 << 64) | (0x8000 << 48)  # uuid4's version and variant bits
_KEEP: Final = ~((0xF000 << 64) | (0xC000 << 48))

_lock = threading.Lock()
_batch = b""
_taken = 0


def _forget() -> None:
    global _batch, _taken
    _batch, _taken = b"", 0


os.register_at_fork(after_in_child=_forget)


def new_id() -> str:
    """A new random id: 32 lowercase hex digits, a valid uuid4."""
    global _batch, _taken
    with _lock:
        if _taken >= len(_batch):
            _batch, _taken = os.urandom(16 * IDS_PER_READ), 0
        raw = _batch[_taken : _taken + 16]
        _taken += 16
    return f"{int.from_bytes(raw) & _KEEP | _VERSION_4:032x}"
