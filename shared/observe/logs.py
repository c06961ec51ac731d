"""Logs: one structured format for every vbm process (docs/design.md, "Logs").

`json`: one JSON object a line: ts (UTC, ISO 8601), level, service, logger, msg, and when the line
belongs to a run's work run_id, job, vm, trace_id and span_id; exc with the traceback. `text`:
the same, readable, for a terminal. The run fields are context variables: the bus runner sets
them from the event it handles (`bound`), the trace ids come from the current span; both end
with the handler. Messages are never carriers of secrets: vbm logs names, ids and reasons only
(tests/test_canary.py searches every log line for the secrets it stored).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from shared.observe import tracing

FORMATS = ("json", "text")
_fields: ContextVar[Mapping[str, str] | None] = ContextVar("vbm_log_fields", default=None)


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Lines logged in the block (and in tasks and threads it starts) carry these fields too."""
    merged = {**(_fields.get() or {}), **{k: v for k, v in fields.items() if v}}
    token = _fields.set(merged)
    try:
        yield
    finally:
        _fields.reset(token)


def current() -> dict[str, str]:
    """The run fields and trace ids a line logged now carries."""
    out = dict(_fields.get() or {})
    ids = tracing.ids()
    if ids is not None:
        out["trace_id"], out["span_id"] = ids
    return out


def default_format(stream: TextIO | None = None) -> str:
    """text on a terminal, json otherwise (a pipe, a file, `vbm up`'s supervisor)."""
    stream = stream or sys.stderr
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


class _Fields(logging.Filter):
    """Puts the context's fields on each record when it is made (in its thread or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "vbm"):
            record.vbm = current()
        return True


def record_dict(record: logging.LogRecord, service: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "service": service,
        "logger": record.name,
        "msg": record.getMessage(),
    }
    out.update(getattr(record, "vbm", None) or {})
    if record.exc_info and record.exc_info[0] is not None:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:
        out["exc"] = record.exc_text
    return out


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_dict(record, self.service), ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        return render(record_dict(record, self.service))


def render(line: Mapping[str, Any], *, with_service: bool = True) -> str:
    """A readable line of a log object: time, service, level, logger, message, then the run's
    fields (`run=... job=... vm=... trace=...`) and the traceback on the lines after it."""
    ts = str(line.get("ts", ""))
    when = ts[11:23] if len(ts) >= 23 else ts
    head = [when]
    if with_service and line.get("service"):
        head.append(str(line["service"]))
    head += [str(line.get("level", "")), f"{line.get('logger', '')}:", str(line.get("msg", ""))]
    extra = [f"{short}={line[k]}" for k, short in _SHOWN if line.get(k)]
    text = " ".join(h for h in head if h)
    if extra:
        text += "  [" + " ".join(extra) + "]"
    if line.get("exc"):
        text += "\n" + str(line["exc"])
    return text


_SHOWN = (("run_id", "run"), ("job", "job"), ("vm", "vm"), ("trace_id", "trace"))


def configure(level: str, service: str, fmt: str | None = None, stream: TextIO | None = None) -> str:
    """Set up the root logger of a process: `fmt` json or text (default: `VBM_LOG_FORMAT`, then
    by whether `stream` is a terminal). Returns the format chosen."""
    stream = stream or sys.stderr
    chosen = fmt or os.environ.get("VBM_LOG_FORMAT") or default_format(stream)
    if chosen not in FORMATS:
        chosen = default_format(stream)
    handler = logging.StreamHandler(stream)
    handler.addFilter(_Fields())
    handler.setFormatter(JsonFormatter(service) if chosen == "json" else TextFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return chosen
