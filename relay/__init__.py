"""Relay's Python client (``relay.client``) and command line (``relay.cli``): submit tasks and follow them."""

from relay.client import AsyncClient, AsyncTaskHandle, Client, TaskHandle

__all__ = ["AsyncClient", "AsyncTaskHandle", "Client", "TaskHandle"]
