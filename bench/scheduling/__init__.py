"""Scheduling benchmarks for issue #21: priorities, concurrency and rate limits, tenant fairness, and what named
queues and priorities cost a drain (each part: its module here; the tasks its workers run: ``tasks``).

    .venv/bin/python -m bench.scheduling [--only priority,concurrency,rate,fairness,mixed] [--baseline DIR]

Every part starts its own redis-server, workers (and API, where it submits over HTTP) and stops them by PID;
``--help`` lists the flags that shrink each part. Numbers are reported, never asserted.
"""
