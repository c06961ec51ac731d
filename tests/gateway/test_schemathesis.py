"""Schemathesis against the live gateway and its own OpenAPI document (GET /api/v1/openapi.json):
every declared operation gets generated requests, valid and invalid, with an admin API key, then
stateful sequences follow the links between operations. No answer may be a server error (5xx),
carry a status, content type or body the document does not declare, or take over 10 s.

The gateway is the real app (services/gateway/app.py) on a real NATS JetStream, a real SQLite
database and the lab's vCenter simulator, served from an event loop of its own in a thread, so the
fuzzer's blocking HTTP calls reach it over a real socket; it is made once for the module (the
fuzzing is the cost, not the servers).

What the fuzzer may not touch, and why:
- GET /api/v1/events is an endless Server-Sent Events stream: every call would wait for the
  timeout (tests/gateway/test_events.py covers it).
- the fuzzer's own identity: its user (`admin`) and its key are kept out of path parameters
  (no revoking its key, disabling or demoting its user halfway; test_people.py does those).
Work the routes start (job runs, restores, verification, gc, prune) is only requested: no
snapshotter, mover or verifier consumes the bus here, so nothing touches the lab's VMs."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import schemathesis
from schemathesis import engine
from schemathesis.engine import events
from schemathesis.engine.run import PhaseName

from lab.launcher import Lab, start_lab
from shared.catalog import apikeys
from tests.gateway.conftest import lab_vcenter, open_api
from tests.plugins.lab import DEFAULT_SPEC
from tests.plugins.nats import NatsServer

T = TypeVar("T")

# Per operation and phase: the suite's time budget, not the fuzzer's appetite. The seed makes the
# same cases every run, so a failure repeats; VBM_FUZZ_SEED / VBM_FUZZ_EXAMPLES look elsewhere or
# deeper by hand, and VBM_FUZZ_CHECKS=all adds Schemathesis's other checks.
MAX_EXAMPLES = int(os.environ.get("VBM_FUZZ_EXAMPLES", "8"))
STATEFUL_STEPS = 50
SEED = int(os.environ.get("VBM_FUZZ_SEED", "19"))
TIMEOUT = 10.0  # seconds: an answer slower than this is a hang
EXCLUDED = {"GET": ["/api/v1/events"]}  # see the module's docstring

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
CHECKS_CONFIG: dict[str, Any] = (
    {}
    if os.environ.get("VBM_FUZZ_CHECKS") == "all"
    else {"enabled": False, **{name: {"enabled": True} for name in CHECKS}}
)


@dataclass
class Live:
    """The running gateway: its base URL, the admin key the fuzzer sends, and whose it is."""

    url: str
    key: str
    key_id: str
    user: str


class GatewayThread:
    """An event loop in a thread of its own, so the gateway serves while the test blocks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway", daemon=True)
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, lab_binary: Path) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("fuzz")
    nats = NatsServer(base / "nats")
    nats.start()
    lab: Lab | None = None
    gateway = GatewayThread()
    try:
        lab = start_lab(DEFAULT_SPEC, base / "lab", binary=lab_binary)
        api, close = gateway.run(
            open_api(nats.url, base / "data", f"sqlite:///{base / 'vbm.db'}", (lab_vcenter(lab),))
        )
        try:
            with api.ctx.sessions() as s:
                (info,) = apikeys.list_keys(s)
            yield Live(str(api.client.make_url("")).rstrip("/"), api.key, info.id, info.owner)
        finally:
            gateway.run(close())
    finally:
        gateway.close()
        if lab is not None:
            lab.stop()
        nats.stop()


def load_schema(live: Live) -> Any:
    """The live document, with the run's settings and what the fuzzer must not touch left out."""
    config = schemathesis.Config.from_dict(
        {
            "headers": {apikeys.HEADER: live.key},
            "request-timeout": TIMEOUT,
            "seed": SEED,
            "continue-on-failure": True,
            "generation": {"max-examples": MAX_EXAMPLES},
            "checks": CHECKS_CONFIG,
            "phases": {"stateful": {"max-steps": STATEFUL_STEPS}},
        }
    )
    schema = schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json", config=config)
    for method, paths in EXCLUDED.items():
        schema = schema.exclude(method=method, path=paths)
    own = {live.key_id, live.user}

    @schema.hook
    def filter_path_parameters(_context: Any, path_parameters: dict[str, Any] | None) -> bool:
        return not own & {str(v) for v in (path_parameters or {}).values()}

    return schema


@dataclass
class Outcome:
    """What one run found: failures (check, operation, what, how to repeat it) and counts."""

    failures: list[str] = field(default_factory=list)
    operations: set[str] = field(default_factory=set)
    cases: int = 0
    phases: dict[str, str] = field(default_factory=dict)
    links: int = 0  # transitions between operations the stateful phase followed

    def see(self, event: events.EngineEvent) -> None:
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            if event.phase != PhaseName.STATEFUL_TESTING:  # its scenario is labelled "Stateful tests"
                self.operations.add(recorder.label)
            self.cases += len(recorder.cases)
            for checks in recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        self.failures.append(
                            f"{recorder.label}: {check.name}: {failure.title}: {failure.message}\n"
                            f"{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.PhaseStarted) and event.payload is not None:
            self.links = event.payload.transitions_selected
        elif isinstance(event, events.PhaseFinished):
            self.phases[event.phase.name.value] = event.status.value
        elif isinstance(event, events.NonFatalError):
            self.failures.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception


def test_every_operation_answers_as_documented(live: Live) -> None:
    schema = load_schema(live)
    outcome = Outcome()
    for event in engine.from_schema(schema).execute():
        outcome.see(event)
    print(
        f"schemathesis: {len(outcome.operations)} operations, {outcome.cases} cases,"
        f" {outcome.links} links, phases {outcome.phases}"
    )
    assert not outcome.failures, "\n\n".join(sorted(set(outcome.failures)))
