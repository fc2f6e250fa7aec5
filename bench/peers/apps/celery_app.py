"""Celery at its defaults with Redis as broker and result backend: ``celery -A bench.peers.apps.celery_app
worker --pool prefork -c 2`` (or ``--pool threads -c 10``)."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from bench.peers.apps import READY, redis_url


def make_app() -> Celery:
    """One Celery app. Clients make one per thread: the Redis result backend's pub/sub consumer is not
    thread-safe (celery/celery#3761, #6335), and concurrent ``get`` calls on one app can hang."""
    app = Celery("bench_peers", broker=redis_url(), backend=redis_url())
    app.conf.broker_connection_retry_on_startup = True  # silences a deprecation warning; the default's behaviour
    return app


app = make_app()


@app.task(name="echo")
def echo(message: str) -> dict[str, str]:
    return {"echo": message}


@app.task(name="echo_await")
def echo_await(message: str) -> dict[str, str]:
    """Celery tasks cannot await: ``time.sleep(0)`` is the nearest thing, one yield of the CPU (and the GIL)."""
    time.sleep(0)
    return {"echo": message}


@app.task(name="step")
def step(value: int) -> int:
    """One step of a chain: ``chain(step.s(0), step.s(), ...)`` passes each result into the next."""
    return value + 1


@worker_ready.connect
def announce(**_: Any) -> None:
    print(READY, flush=True)
