"""Task ids drawn a batch at a time (``shared.ids``) are still uuid4s, never repeat, and a forked child never
hands out its parent's."""

from __future__ import annotations

import os
import uuid

from shared import ids


def test_ids_are_uuid4_hex_and_do_not_repeat() -> None:
    drawn = [ids.new_id() for _ in range(10 * ids.IDS_PER_READ)]
    assert len(set(drawn)) == len(drawn)
    for value in drawn:
        parsed = uuid.UUID(hex=value)
        assert (parsed.hex, parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)


def test_a_forked_child_draws_its_own_ids() -> None:
    ids.new_id()  # the parent holds a batch with ids still to hand out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reports its next id, then leaves at once
        os.write(write, ids.new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != ids.new_id()
    assert len(child) == 32
