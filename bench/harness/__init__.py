"""Real processes for the benchmarks and the test suite alike: redis-servers, APIs and workers started and
stopped by PID, an HTTP client for Relay's API, and a local Service Bus-compatible endpoint. Benchmarks import
only this (never the test suite); the suite adds its own tasks on top (its ``support/environment.py``)."""
