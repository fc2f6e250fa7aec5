"""Benchmarks: run as modules (``python -m bench.latency``); they start their own processes."""
