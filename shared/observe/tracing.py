"""Traces: one OpenTelemetry trace per run, carried across the bus (docs/design.md, "Traces").

A run's trace starts where the run is asked for (the gateway's request, the scheduler's slot).
Its W3C trace context (`traceparent`, `tracestate`) is stored with every outbox row and with the
run, travels on the NATS message headers, and the bus runner opens each handler's span as its
child: the snapshotter's, mover's, verifier's and notifier's spans are one trace.

Off unless `VBM_OTEL__ENDPOINT` is set: then `setup` installs an SDK tracer provider exporting
over OTLP/HTTP (protobuf) in batches. Without it nothing is installed and the API's no-op tracer
makes every call here nearly free (no span is recorded, `carrier()` is empty).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from shared import __version__

TRACER = "vbm"
EXPORT_DELAY_MS = 2000  # how long finished spans wait to be sent in a batch
Attr = str | int | float | bool


def setup(service: str, endpoint: str | None, sample_ratio: float = 1.0) -> Callable[[], None] | None:
    """Install the exporting tracer provider when an endpoint is set; returns its shutdown (which
    sends what is still queued), or None when traces are off."""
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": f"vbm-{service}", "service.version": __version__}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces", timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_DELAY_MS))
    trace.set_tracer_provider(provider)
    return provider.shutdown


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER, __version__)


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers (`traceparent`, `tracestate`); empty when off."""
    out: dict[str, str] = {}
    propagate.inject(out)
    return out


def context_of(headers: Mapping[str, str] | None) -> Context | None:
    """The context a carrier (message headers, a stored outbox row) names, or None without one."""
    if not headers or "traceparent" not in headers:
        return None
    return propagate.extract({k.lower(): v for k, v in headers.items()})


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: Mapping[str, str] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    within: bool = False,
    attrs: Mapping[str, Attr | None] | None = None,
    **attributes: Attr | None,
) -> Iterator[Span]:
    """A span, current while the block runs: a child of `parent` (a carrier) when given, else of
    the current span. An exception leaving the block is recorded on it (status ERROR).
    `within`: only inside a trace, never the root of one (a vCenter call of a GET, of planning).
    Attributes: `attrs` (names as given, e.g. OpenTelemetry's) and keywords (`vm` -> `vbm.vm`)."""
    if within and parent is None and not trace.get_current_span().get_span_context().is_valid:
        yield trace.INVALID_SPAN
        return
    given = {**(attrs or {}), **{_key(k): v for k, v in attributes.items()}}
    kept = {k: v for k, v in given.items() if v is not None}
    with tracer().start_as_current_span(name, context=context_of(parent), kind=kind, attributes=kept) as s:
        yield s


def annotate(**attributes: Attr | None) -> None:
    """Add attributes to the current span (e.g. bytes once they are known)."""
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes({_key(k): v for k, v in attributes.items() if v is not None})


def failed(exc: BaseException, span_: Span | None = None) -> None:
    """Mark a span (the current one by default) as failed by `exc` that was handled, not raised."""
    target = span_ or trace.get_current_span()
    if target.is_recording():
        target.record_exception(exc)
        target.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))


def ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in hex, or None outside a trace."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def _key(name: str) -> str:
    """`vm` -> `vbm.vm`: vbm's attributes in their own namespace; dotted names are kept."""
    return name if "." in name else f"vbm.{name}"


def carrier_json(value: Any) -> dict[str, str] | None:
    """A stored carrier (a JSON object of strings) back as a dict; None for anything else."""
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    return None
