"""Logging for Relay's own loggers: arq and Sanic configure only theirs, so ours would be silent."""

from __future__ import annotations

import logging

from shared.settings import get_settings


def configure() -> None:
    """One stderr handler on the ``relay`` logger, at ``RELAY_LOG_LEVEL``."""
    logger = logging.getLogger("relay")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(get_settings().log_level.upper())
    logger.propagate = False
