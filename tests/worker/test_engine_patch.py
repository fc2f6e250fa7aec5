"""Relay's one reach into arq: checked against the installed arq, failing loudly when arq changes shape."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from typing import Any

import arq
import pytest
from arq.connections import ArqRedis
from arq.worker import Worker, create_worker

import worker.settings
from shared import keys
from shared.enqueue import Enqueuer, prepare
from shared.settings import get_settings
from shared.status import task_view
from shared.tasks import TaskSubmission
from worker.engine import patch
from worker.tasks import registry


def test_the_installed_arq_is_the_one_relay_was_written_for() -> None:
    patch.check_arq()


def test_another_arq_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arq, "VERSION", "0.29.0")
    with pytest.raises(patch.ArqMismatch, match=r"written for arq 0\.28\.0, found 0\.29\.0"):
        patch.check_arq()


def test_a_reshaped_worker_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def reshaped(self: Worker, limit: int) -> None:
        return None

    monkeypatch.setattr(Worker, "_poll_iteration", reshaped)
    with pytest.raises(patch.ArqMismatch, match="_poll_iteration"):
        patch.check_arq()


def test_a_reshaped_poll_timer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def timer(step: float, jitter: float) -> Any:
        return None

    monkeypatch.setattr(arq.worker, "poll", timer)
    with pytest.raises(patch.ArqMismatch, match="poll"):
        patch.check_arq()


def test_importing_worker_settings_installs_the_engine_into_arqs_worker() -> None:
    assert worker.settings.functions  # the module is loaded
    installed = patch.installed_functions()
    assert installed["_poll_iteration"] is patch._poll_iteration
    assert installed["poll"] is patch._timer
    assert Worker.handle_sig.__wrapped__ is not None  # type: ignore[attr-defined]
    patch.install()  # idempotent
    assert patch.installed_functions() == installed


async def test_arqs_real_worker_runs_jobs_through_the_engine(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = f"relay:patch:{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RELAY_QUEUE_NAME", queue)  # what the worker's on_startup reads
    monkeypatch.setenv("RELAY_REDIS_URL", redis_url)
    get_settings.cache_clear()
    settings = get_settings()
    pool = ArqRedis.from_url(redis_url)
    try:
        enqueuer = Enqueuer(pool, settings)
        ids = [f"p-{i}" for i in range(5)]
        for task_id in ids:
            await enqueuer.enqueue(
                prepare(registry.get("echo"), settings, TaskSubmission(task="echo", id=task_id, args=[task_id]))
            )
        arq_worker = create_worker(
            worker.settings, redis_pool=pool, queue_name=queue, burst=True, handle_signals=False, poll_delay=0.05
        )
        await arq_worker.async_run()
        await worker.setup.on_shutdown(arq_worker.ctx)
        views = [await task_view(pool, queue, task_id) for task_id in ids]
        assert [v["state"] if v else None for v in views] == ["succeeded"] * 5
        assert [v["result"] for v in views if v] == [{"echo": i} for i in ids]
        assert await pool.zcard(queue) == 0
        assert await pool.zmscore(keys.ABORT_SET, ids) == [None] * 5  # arq's abort set is shared by every queue
    finally:
        await pool.aclose()
        get_settings.cache_clear()


async def test_a_stopped_worker_whose_job_has_ended_exits_without_sleeping_out_its_poll(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """arq's grace period lasts while its ``tasks`` hold a job, and only a poll drops finished ones: the signal
    must bring that poll on (it wakes the engine's timer), or a worker that ran any job slept out its idle poll
    (RELAY_POLL_DELAY_SECONDS) before it stopped."""
    queue = f"relay:patch:{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RELAY_QUEUE_NAME", queue)
    monkeypatch.setenv("RELAY_REDIS_URL", redis_url)
    get_settings.cache_clear()
    settings = get_settings()
    pool = ArqRedis.from_url(redis_url)
    try:
        await Enqueuer(pool, settings).enqueue(
            prepare(registry.get("echo"), settings, TaskSubmission(task="echo", id="stop-1", args=["x"]))
        )
        arq_worker = create_worker(
            worker.settings,
            redis_pool=pool,
            queue_name=queue,
            handle_signals=False,
            poll_delay=3600,
            job_completion_wait=3600,
        )
        running = asyncio.create_task(arq_worker.async_run())
        while (view := await task_view(pool, queue, "stop-1")) is None or view["state"] != "succeeded":
            assert not running.done()
            await asyncio.sleep(0.02)
        # Its outcome is stored before its run's task returns (it logs after the commit): wait for that too.
        deadline = time.monotonic() + 10
        while not all(t.done() for t in arq_worker.tasks.values()):
            assert time.monotonic() < deadline, "the job's task never ended"
            await asyncio.sleep(0.01)
        assert [t.done() for t in arq_worker.tasks.values()] == [True]  # ended, still listed until a poll
        arq_worker.handle_sig_wait_for_completion(signal.SIGTERM)  # what the SIGTERM handler calls
        engine = patch.current()
        assert engine is not None
        assert engine.wake.is_set()  # the poll that drops the ended job comes now, not at the end of its sleep
        with contextlib.suppress(asyncio.CancelledError):
            await running  # arq cancels its main loop once its tasks are gone
        assert arq_worker.tasks == {}
        await worker.setup.on_shutdown(arq_worker.ctx)
    finally:
        await pool.aclose()
        get_settings.cache_clear()
