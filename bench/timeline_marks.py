"""Timestamps at the steps of a round trip, written by the processes ``bench.timeline`` starts (and by its client).

Nothing in Relay's own code is changed: ``install()`` wraps a few functions once their modules are imported (an
import hook), and each wrapper appends ``<CLOCK_MONOTONIC ns> <mark>`` to a file of its process in
``RELAY_BENCH_TIMELINE_DIR``. ``bench/timeline_site/sitecustomize.py`` calls it in every process started with
that directory on its ``PYTHONPATH``. The wrappers cost a few microseconds each, on every process alike.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TextIO

_out: TextIO | None = None


def mark(name: str) -> None:
    """Record ``name`` now (monotonic ns: one clock for every process on the host)."""
    if _out is not None:
        _out.write(f"{time.monotonic_ns()} {name}\n")


def _marked(before: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def plain(*args: Any, **kwargs: Any) -> Any:
            mark(before)
            return function(*args, **kwargs)

        return plain

    return wrap


def _marked_async(before: str, after: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        async def awaited(*args: Any, **kwargs: Any) -> Any:
            mark(before)
            try:
                return await function(*args, **kwargs)
            finally:
                if after is not None:
                    mark(after)

        return awaited

    return wrap


def _patch_api_routes(module: ModuleType) -> None:
    module.parse_submission = _marked("api: route runs")(module.parse_submission)


def _patch_protocol(module: ModuleType) -> None:
    protocol = module.HttpProtocol
    protocol.data_received = _marked("api: request bytes in")(protocol.data_received)


def _patch_response(module: ModuleType) -> None:
    response = module.BaseHTTPResponse
    send = response.send

    started: set[int] = set()  # the responses (by id) that wrote their headers and are still open

    @functools.wraps(send)
    async def marked_send(self: Any, data: Any = None, end_stream: Any = None) -> None:
        await send(self, data, end_stream)
        ended = bool(end_stream) or (data is None and end_stream is None)
        if id(self) not in started and not ended and not data:
            started.add(id(self))
            mark("api: headers written")
        elif ended:
            started.discard(id(self))
            mark("api: response ended")
        else:
            mark("api: first event written")

    response.send = marked_send


def _patch_scripts(module: ModuleType) -> None:
    descriptor = module._Script
    get = descriptor.__get__

    def marked_get(self: Any, scripts: Any, owner: Any = None) -> Any:
        script = get(self, scripts, owner)
        return _marked_async(f"{self.name} sent", f"{self.name} answered")(script)

    descriptor.__get__ = marked_get


def _patch_hub(module: ModuleType) -> None:
    hub = module.PubSubHub
    hub._dispatch = _marked("api: event message in")(hub._dispatch)


def _patch_wakeup(module: ModuleType) -> None:
    listener = module.WakeupListener
    listener.handle = _marked("worker: notice in")(listener.handle)


def _patch_run(module: ModuleType) -> None:
    run = module.JobRun
    run.run = _marked_async("worker: task starts")(run.run)
    run._commit_now = _marked("worker: task ended")(run._commit_now)


def _patch_client(module: ModuleType) -> None:
    sender = module.Urllib3Sender
    sender._urlopen = _marked("client: request sent")(sender._urlopen)


PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "api.routes.tasks": _patch_api_routes,
    "sanic.server.protocols.http_protocol": _patch_protocol,
    "sanic.response.types": _patch_response,
    "shared.scripts": _patch_scripts,
    "api.hub": _patch_hub,
    "worker.wakeup": _patch_wakeup,
    "worker.engine.run": _patch_run,
    "relay.client.senders": _patch_client,
}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Finds the modules of ``PATCHES`` as usual and patches each once it has run."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target)  # type: ignore[attr-defined]
            if spec is not None and spec.loader is not None:
                exec_module = spec.loader.exec_module

                def patched_exec(module: ModuleType, run: Callable[[ModuleType], None] = exec_module) -> None:
                    run(module)
                    PATCHES[name](module)

                spec.loader.exec_module = patched_exec
                return spec
        return None


def install(directory: str | None = None) -> None:
    """Start recording this process's marks in ``directory`` (default: ``RELAY_BENCH_TIMELINE_DIR``)."""
    global _out
    directory = directory or os.environ.get("RELAY_BENCH_TIMELINE_DIR")
    if not directory or _out is not None:
        return
    _out = open(os.path.join(directory, f"{os.getpid()}.marks"), "a", buffering=1)  # noqa: SIM115 (process-long)
    for name, patch in PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _PatchAfterImport())
