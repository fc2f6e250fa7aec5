"""Trace context across a task's life, with OpenTelemetry when it is installed (the ``otel`` extra).

A submit's W3C ``traceparent`` (HTTP header, or Service Bus application property) goes into the job record
(``JobRecord.extra["tc"]``, kept across retries and re-queues), the worker's span of each try is its child,
and every event of the run carries the trace's id (``trace_id``). With OpenTelemetry installed, the API's span
of the request sits in between (API span -> worker span), and spans are exported where the tracer provider
sends them (``RELAY_TRACE_EXPORTER`` sets one up; ``none`` leaves that to you). Without it, Relay still
carries a valid ``traceparent`` through untouched, so events name the caller's trace.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.jobs import JobRecord
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.enqueue import Prepared

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.propagate import extract, inject
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the otel extra is optional: Relay works without it
    trace = None  # type: ignore[assignment]

logger = logging.getLogger("relay.tracing")

CARRIER_FIELD = "tc"  # the job record's extra field holding the trace context (a dict of W3C headers)
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# version-trace_id-parent_id-flags; a later version may append fields (W3C Trace Context, section 3.2.4).
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\s]*)?$")
_MAX_TRACESTATE = 512
INSTRUMENTATION = "relay"


def available() -> bool:
    """True when the OpenTelemetry API is installed."""
    return trace is not None


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a valid ``traceparent``, or None."""
    match = _TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
    if match is None or match.group(1) == "ff" or match.group(2) == "0" * 32 or match.group(3) == "0" * 16:
        return None
    if match.group(1) == "00" and match.group(5):
        return None  # version 00 has exactly four fields
    return match.group(2)


def incoming(get: Any) -> dict[str, str]:
    """The trace context a caller sent (``get(name)`` reads a header or property), if its traceparent is valid."""
    parent = get(TRACEPARENT)
    if not isinstance(parent, str) or trace_id_of(parent) is None:
        return {}
    carrier = {TRACEPARENT: parent.strip().lower()}
    state = get(TRACESTATE)
    if isinstance(state, str) and state and len(state) <= _MAX_TRACESTATE:
        carrier[TRACESTATE] = state
    return carrier


def carrier_of(record: JobRecord | None) -> dict[str, str]:
    """The trace context stored with a job."""
    value = record.extra.get(CARRIER_FIELD) if record is not None else None
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def with_carrier(prepared: Prepared, carrier: Mapping[str, str]) -> Prepared:
    """``prepared`` with the trace context in its job record (not part of the fingerprint: the same submit
    under another trace is still the same task)."""
    if not carrier:
        return prepared
    record = JobRecord.decode(prepared.record)
    record.extra[CARRIER_FIELD] = dict(carrier)
    return dataclasses.replace(prepared, record=record.encode())


class SpanHandle:
    """One span (or, without OpenTelemetry, the caller's context passed through): its trace id, the context
    to hand on, and its end."""

    def __init__(self, span: Any, passed: dict[str, str]) -> None:
        self._span = span
        self._passed = passed
        self._token: Any = None
        self.trace_id: str | None = None
        if span is not None and span.get_span_context().is_valid:
            self.trace_id = format(span.get_span_context().trace_id, "032x")
        elif span is None:
            self.trace_id = trace_id_of(passed.get(TRACEPARENT))

    def carrier(self) -> dict[str, str]:
        """The context a child (the job) continues from."""
        if self._span is None:
            return dict(self._passed)
        if not self._span.get_span_context().is_valid:
            return {}
        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier

    def activate(self) -> None:
        """Make the span current in this task's context (so a task's own spans are its children)."""
        if self._span is not None and self._token is None:
            self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def set(self, name: str, value: str | int | float | bool) -> None:
        if self._span is not None:
            self._span.set_attribute(name, value)

    def end(self, error: str | None = None) -> None:
        """End the span; ``error`` marks it failed with that description."""
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None
        if self._span is None:
            return
        if error is not None:
            self._span.set_status(Status(StatusCode.ERROR, error))
        self._span.end()
        self._span = None


def request_span(method: str, route: str, headers: Mapping[str, str]) -> SpanHandle | None:
    """The API's span of one HTTP request (``route`` is the pattern, never the raw path); None when there is
    nothing to record or pass on (no tracer provider, no trace context sent)."""
    passed = incoming(headers.get)
    if trace is None or not (passed or _provider_set()):
        return SpanHandle(None, passed) if passed else None
    name = f"{method} {route}"
    attributes = {"http.request.method": method, "http.route": route}
    span = _tracer().start_span(name, context=extract(passed), kind=SpanKind.SERVER, attributes=attributes)
    return SpanHandle(span, passed)


def run_span(task: str, task_id: str, try_number: int, carrier: Mapping[str, str]) -> SpanHandle:
    """A worker's span of one try of a task, the child of the context its job carries."""
    passed = dict(carrier) if trace_id_of(carrier.get(TRACEPARENT)) else {}
    if trace is None or not (passed or _provider_set()):
        return SpanHandle(None, passed)
    attributes = {"relay.task.name": task, "relay.task.id": task_id, "relay.task.try": try_number}
    span = _tracer().start_span(f"run {task}", context=extract(passed), kind=SpanKind.CONSUMER, attributes=attributes)
    return SpanHandle(span, passed)


def context_span(carrier: Mapping[str, str]) -> SpanHandle:
    """No span of its own: just the trace a stored context names (for events written on a task's behalf)."""
    return SpanHandle(None, dict(carrier) if trace_id_of(carrier.get(TRACEPARENT)) else {})


_provider_seen = False  # a global tracer provider, once set, stays (OpenTelemetry sets it once)
_UNKNOWN = object()
# get_tracer_provider() looks this variable up in os.environ on every call until a provider is set.
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def _provider_set() -> bool:
    """False while no tracer provider is set: a span without a parent would then be a no-op (skip its cost).
    Asked on every request, so the usual answers are cheap: yes once seen, no while OpenTelemetry holds none."""
    global _provider_seen
    if _provider_seen:
        return True
    if getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _PROVIDER_FROM_ENV:
        return False
    _provider_seen = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return _provider_seen


def _tracer() -> Any:
    return trace.get_tracer(INSTRUMENTATION)


class Exporting:
    """The tracer provider Relay set up (``RELAY_TRACE_EXPORTER``), flushed and closed at shutdown."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    def shutdown(self) -> None:
        self._provider.shutdown()  # exports what is still batched


def configure(settings: Settings, default_service: str) -> Exporting | None:
    """Set up a tracer provider when ``RELAY_TRACE_EXPORTER`` asks for one (the settings already checked that
    OpenTelemetry is installed). The service name is ``OTEL_SERVICE_NAME``, else ``default_service``."""
    if settings.trace_exporter == "none":
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if settings.trace_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout: the standard OTEL_EXPORTER_OTLP_* variables
    else:
        exporter = ConsoleSpanExporter()
    service = os.environ.get("OTEL_SERVICE_NAME") or default_service
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    logger.info("tracing: spans of %s go to %s", service, settings.trace_exporter)
    return Exporting(provider)
