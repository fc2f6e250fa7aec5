"""Every system the peers benchmark knows, by the name ``--systems`` takes (in the summary table's order)."""

from __future__ import annotations

from bench.peers import (
    arq_adapter,
    celery_adapter,
    dramatiq_adapter,
    relay_adapter,
    saq_adapter,
    streaq_adapter,
    taskiq_adapter,
)
from bench.peers.spec import System

SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        saq_adapter.SYSTEM,
        taskiq_adapter.SYSTEM,
        streaq_adapter.SYSTEM,
        arq_adapter.SYSTEM,
        celery_adapter.PREFORK,
        celery_adapter.THREADS,
        dramatiq_adapter.DEFAULT,
        dramatiq_adapter.TUNED,
        relay_adapter.SYSTEM,
    )
}
DEFAULT = (
    *("relay", "arq", "saq", "taskiq", "streaq"),
    *("celery-prefork", "celery-threads", "dramatiq", "dramatiq-tuned"),
)
