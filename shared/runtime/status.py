"""What vbm says about itself, the same to the API and the command line: its name and version
(GET /api/v1, `vbm version --json`) and the services seen on the bus by their heartbeats
(GET /api/v1/services from the gateway's subscription, `vbm status` from a ping and the beats
that answer it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared import __version__
from shared.contracts import ServiceHeartbeat
from shared.runtime.supervisor import SERVICES

NAME = "vSphere Backup Manager"


def about() -> dict[str, str]:
    return {"name": NAME, "version": __version__, "api": "v1"}


@dataclass
class Presence:
    """The newest heartbeat of every service instance seen on the bus."""

    interval: float
    beats: dict[str, ServiceHeartbeat] = field(default_factory=dict)

    def see(self, beat: ServiceHeartbeat) -> None:
        self.beats[beat.instance] = beat

    def view(self, now: datetime) -> list[dict[str, Any]]:
        rows = []
        for beat in sorted(self.beats.values(), key=lambda b: (b.service, b.instance)):
            age = (now - beat.sent_at).total_seconds()
            up = beat.state != "stopping" and age <= 3 * self.interval
            rows.append({**beat.model_dump(mode="json"), "age_s": round(age, 1), "up": up})
        return rows

    def answer(self, now: datetime) -> dict[str, Any]:
        """Every instance seen, and the services of vbm none of whose instances is up."""
        rows = self.view(now)
        seen = {r["service"] for r in rows if r["up"]}
        return {"services": rows, "missing": [s for s in SERVICES if s not in seen]}
