"""Relay's job engine inside an arq worker: claims due jobs in batches, runs them, commits their outcomes
and events in batches, holds their leases, and takes over the jobs of workers that died.

``worker.engine.patch`` is the one place that plugs it into arq's ``Worker`` (see its docstring).
"""
