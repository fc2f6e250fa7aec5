"""Pages of ``GET /tasks`` and ``GET /workflows`` (``shared/lua/list.lua``) among ids of one score, on a Redis
started under a locale whose collation is not byte order. Redis orders a score's members byte by byte, and takes
its collation (for Lua's string ``<``) from the environment it starts in: under en_US.UTF-8 ``'B1' >= 'a1'``, so a
page that stopped at ``a1`` counted ``B1`` as already shown, and it was never listed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from bench.harness.redis_servers import start_server
from shared import keys
from shared.scripts import Scripts
from shared.tasklist import WORKFLOWS, Walk, decode_cursor, page_ids

LOCALE = "en_US.UTF-8"


def built_locale(into: Path) -> Path:
    """en_US.UTF-8 compiled into ``into`` (``LOCPATH``), from Debian's locale sources (package ``locales``)."""
    into.mkdir(parents=True, exist_ok=True)
    localedef = shutil.which("localedef")
    assert localedef, "localedef (libc-bin) is needed"
    done = subprocess.run([localedef, "-i", "en_US", "-f", "UTF-8", str(into / LOCALE)], capture_output=True)
    assert (into / LOCALE).exists(), f"could not build {LOCALE} (Debian package 'locales'): {done.stderr[-500:]!r}"
    return into


async def test_a_page_boundary_among_ids_of_one_score_skips_none_whatever_the_servers_locale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCPATH", str(built_locale(tmp_path / "locales")))
    monkeypatch.setenv("LC_ALL", LOCALE)
    server = start_server(tmp_path)
    pool = ArqRedis.from_url(server.url)
    try:
        queue = "relay:collation"
        ids = ["B1", "a1", "C2", "b2", "a-3", "A3"]
        await pool.zadd(keys.flow_index(queue), dict.fromkeys(ids, 1796686102028855))
        in_redis_order = [m.decode() for m in await pool.zrevrange(keys.flow_index(queue), 0, -1)]
        assert await pool.eval("return tostring('B1' >= 'a1')", 0) == b"true"  # the server's collation is not bytes
        shown: list[str] = []
        start = ("+inf", "")
        for _ in range(len(ids) + 2):
            page, cursor = await page_ids(pool, Scripts(pool), Walk(WORKFLOWS, queue, start, (None, None, ""), 1), None)
            shown += page
            if cursor is None:
                break
            start = decode_cursor(cursor)
        assert shown == in_redis_order
    finally:
        await pool.aclose()
        server.proc.stop()
