"""The base of every payload (frozen, strict, versioned) and of every durable event."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events.subjects import Subject

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class Payload(BaseModel):
    """Base of every payload: frozen, strict about unknown fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1


class Event(Payload):
    """A durable event: one subject, one deterministic message id."""

    SUBJECT: ClassVar[Subject]
    occurred_at: datetime

    def msg_id(self) -> str:
        raise NotImplementedError
