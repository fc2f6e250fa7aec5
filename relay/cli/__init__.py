"""The ``relay`` command: submit, follow, inspect, cancel, retry and list tasks from a shell."""

from relay.cli.app import cli, main

__all__ = ["cli", "main"]
