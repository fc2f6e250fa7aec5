"""API keys as presented: a header that is not UTF-8 matches no key (a 401), never an error."""

from __future__ import annotations

import pytest

from api.auth import digests, matching_key
from shared.apikeys import parse_api_keys

KEYS = digests(parse_api_keys("acme:acme-key,caf:café"))


# Sanic decodes header bytes that are not UTF-8 with surrogateescape: b"\xff\xfe" arrives as "\udcff\udcfe".
@pytest.mark.parametrize("presented", ["\udcff\udcfe", "caf\udce9", "\ud800"])
def test_a_key_that_is_not_utf8_matches_none(presented: str) -> None:
    assert matching_key(presented, KEYS) is None  # was UnicodeEncodeError: a 500 and a traceback per request


def test_keys_still_match() -> None:
    assert [matching_key(k, KEYS) for k in ("acme-key", "café", "cafe")] == [KEYS[0], KEYS[1], None]
