"""Relay against its peers (SAQ, taskiq, streaq, bare arq, Celery, Dramatiq) on one machine and one Redis:
``python -m bench.peers``.

Modules: one adapter per system (``*_adapter``: how to start its worker, tell a job finished, and its client
half), the worker-side apps of the peers and the task Relay's worker adds for the drain that awaits once
(``apps/``), the client process every system's clients run in
(``client``), the measurements (``measure``), the round-robin ``runner``, the ``report`` writer, and the
peers' own virtualenv (``venv``). Modules the peers' virtualenv imports use only the standard library and
redis-py at import time.
"""
