"""What each route of the REST API says about itself, for the OpenAPI document
(services/gateway/openapi.py): `@op` beside `@needs` on every handler, declaring its summary,
its query parameters, its body and answer models, the errors it gives beyond the common ones,
and the `vbm` command that does the same. A route without `@op` fails
tests/gateway/test_openapi.py, as one without `@needs` fails test_access.py."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, Field, create_model

from shared.catalog.listing import MAX_LIMIT

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__vbm_operation__"

Schema = dict[str, Any]


@dataclass(frozen=True)
class Param:
    """A query (or header) parameter: its name, JSON Schema and what it means."""

    name: str
    description: str
    schema: Schema = field(default_factory=lambda: {"type": "string"})
    where: str = "query"
    required: bool = False


def text(name: str, description: str, **schema: Any) -> Param:
    return Param(name, description, {"type": "string", **schema})


def number(name: str, description: str, low: int = 0, high: int | None = None) -> Param:
    schema: Schema = {"type": "integer", "minimum": low}
    if high is not None:
        schema["maximum"] = high
    return Param(name, description, schema)


def boolean(name: str, description: str) -> Param:
    return Param(name, description, {"type": "boolean"})


def choice(name: str, description: str, values: Iterable[str]) -> Param:
    return Param(name, description, {"type": "string", "enum": list(values)})


# The window of every list (shared/catalog/listing.py: Window.parse).
WINDOW = (
    number("limit", "rows in a page (default 50)", 1, MAX_LIMIT),
    number("offset", "rows to skip (not with cursor)", 0, 10**9),
    text("cursor", "the next_cursor of the page before: the next page, nothing seen twice"),
    text("since", "only rows at or after this time (ISO 8601)", format="date-time"),
    text("until", "only rows before this time (ISO 8601, later than since)", format="date-time"),
    choice("order", "newest first (desc, the default) or oldest first", ("asc", "desc")),
)

IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "a retry with the same key (from the same caller, within a day) answers as the first request"
    " did and starts nothing twice",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[ -~]+$",
    },  # shared/catalog/idempotency.py
    where="header",
)
IF_MATCH = Param(
    "If-Match",
    "the ETag of the object as read: refused with 412 when someone changed it since",
    where="header",
)


@dataclass(frozen=True)
class Operation:
    summary: str
    description: str = ""
    query: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = True  # False: the body may be left out (the handler's default then)
    answer: type[BaseModel] | None = None  # the JSON answer of `status`
    status: int = 200
    media: str = "application/json"  # of the answer: e.g. octet-stream, event-stream, html
    # other forms of the same answer a query parameter asks for (an export: text/csv), schema-less
    other_media: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()  # beyond 400/401/403/404/422/500 (409, 412, 413, 502, 503...)
    cli: str | None = None  # the `vbm` command that does the same: "vbm job run"
    no_cli: str | None = None  # why there is none (a browser's session, a probe): said in the doc
    tags: tuple[str, ...] = ()


def op(
    summary: str,
    *,
    description: str = "",
    query: Iterable[Param] = (),
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    answer: type[BaseModel] | None = None,
    status: int = 200,
    media: str = "application/json",
    other_media: Iterable[str] = (),
    errors: Iterable[int] = (),
    cli: str | None = None,
    no_cli: str | None = None,
    tags: Iterable[str] = (),
) -> Callable[[F], F]:
    """Declare what a handler does for the OpenAPI document (see the module's docstring)."""
    if (cli is None) == (no_cli is None):
        raise TypeError(f"@op({summary!r}): give the vbm command (cli=) or why there is none (no_cli=)")
    if cli is not None and not cli.startswith("vbm "):
        raise TypeError(f"@op({summary!r}): cli= is a command line starting with 'vbm '")
    declared_op = Operation(
        summary=summary,
        description=description,
        query=tuple(query),
        body=body,
        body_required=body_required,
        answer=answer,
        status=status,
        media=media,
        other_media=tuple(other_media),
        errors=tuple(errors),
        cli=cli,
        no_cli=no_cli,
        tags=tuple(tags),
    )

    def mark(handler: F) -> F:
        setattr(handler, _ATTRIBUTE, declared_op)
        return handler

    return mark


def operation(handler: object) -> Operation | None:
    """What a handler declared with `@op`, or None."""
    return getattr(handler, _ATTRIBUTE, None)


def page_of(name: str, key: str, item: type[BaseModel], description: str = "") -> type[BaseModel]:
    """The answer of a paged list: `key` holds the rows, with total, limit, offset, next_cursor
    (shared/catalog/listing.py: Paged.answer)."""
    fields: dict[str, Any] = {
        key: (list[item], ...),  # type: ignore[valid-type]
        "total": (int, Field(description="rows that match the filters and the time bounds")),
        "limit": (int, ...),
        "offset": (int, ...),
        "next_cursor": (
            str | None,
            Field(description="give it as cursor= for the next page; null at the end"),
        ),
    }
    return create_model(name, __doc__=description or f"A page of {key}.", **fields)
