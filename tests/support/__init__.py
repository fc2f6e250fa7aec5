"""Helpers for tests that run Relay's real processes."""
