"""``GET /tasks`` cursors (``shared.tasklist``): sealed when API keys are configured, so a tenant can neither read
the position its walk stopped at (another tenant's entry, maybe) nor write one; every API process with the same
keys reads the others' cursors, and one with other keys refuses them."""

from __future__ import annotations

import pytest

from shared.tasklist import BadCursor, cursor_seal, decode_cursor, encode_cursor


def test_without_api_keys_cursors_are_plain_and_read_back() -> None:
    assert cursor_seal([]) is None
    assert decode_cursor(encode_cursor(b"1796686102028855", b"task-1")) == ("1796686102028855", "task-1")


def test_a_sealed_cursor_reads_back_on_any_process_with_the_same_keys() -> None:
    cursor = encode_cursor(b"1796686102028855", b"ci~invoice-7", cursor_seal(["key-a", "key-b"]))
    assert b"invoice" not in cursor.encode()
    assert decode_cursor(cursor, cursor_seal(["key-b", "key-a"])) == ("1796686102028855", "ci~invoice-7")


def test_a_cursor_not_sealed_with_these_keys_is_refused() -> None:
    seal = cursor_seal(["key-a", "key-b"])
    with pytest.raises(BadCursor):
        decode_cursor(encode_cursor(b"1796686102028855", b"ci~invoice-7"), seal)  # written by a client
    with pytest.raises(BadCursor):
        decode_cursor(encode_cursor(b"1796686102028855", b"ci~invoice-7", cursor_seal(["key-c"])), seal)
