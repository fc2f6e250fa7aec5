"""Logging for Relay's own loggers: arq and Sanic configure only theirs, so ours would be silent."""

from __future__ import annotations

import logging

from shared.settings import environment_warnings, get_settings


def configure() -> None:
    """One stderr handler on the ``relay`` logger, at ``RELAY_LOG_LEVEL``; then the environment's warnings
    (deprecated or unknown ``RELAY_*`` variables)."""
    logger = logging.getLogger("relay")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(get_settings().log_level)
    logger.propagate = False
    for warning in environment_warnings():
        logging.getLogger("relay.settings").warning(warning)
