"""The answers of the gateway's own routes: /, /healthz, /readyz, /api/v1 and /api/v1/services
(shared/runtime/status.py makes the last two, for `vbm version --json` and `vbm status --json` too)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from shared.contracts import ServiceHeartbeat


class Where(BaseModel):
    """Where things are (a browser asking for text/html gets a short page instead)."""

    name: str
    version: str
    api: str
    health: str
    docs: str
    openapi: str
    ui: str


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    """Ready: NATS is connected and the database answers (503 when not)."""

    status: Literal["ready"]


class About(BaseModel):
    name: str
    version: str
    api: Literal["v1"]


class ServiceSeen(ServiceHeartbeat):
    """The newest heartbeat of one service instance, how old it is and whether it counts as up."""

    age_s: float = Field(description="seconds since the heartbeat was sent")
    up: bool = Field(description="not stopping, and heard within three heartbeat intervals")


class Services(BaseModel):
    services: list[ServiceSeen]
    missing: list[str] = Field(description="the services of vbm none of whose instances is up")
