"""The Sanic HTTP API: submit tasks, read their state, stream their events."""
