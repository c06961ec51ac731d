"""Schemathesis against the live gateway and its own OpenAPI document (GET /api/v1/openapi.json):
every declared operation gets generated requests, valid and invalid, with an admin API key, then
stateful sequences follow the links between operations. No answer may be a server error (5xx),
carry a status, content type or body the document does not declare, or take over 10 s.

The gateway is the real app (services/gateway/app.py) on a real NATS JetStream, a real PostgreSQL
database (stricter than SQLite: column sizes, 32-bit integers, no NUL in text) and the lab's
vCenter simulator, served from an event loop of its own in a thread, so the fuzzer's blocking HTTP
calls reach it over a real socket; it is made once for the module (the fuzzing is the cost, not
the servers). It holds a job of the lab's vm1, a restore point in a real repository and an
alert, so the routes of one object answer something besides 404.

Schemathesis runs through its engine (what its CLI runs: coverage, fuzzing and stateful phases,
links inferred from the answers), not `@schema.parametrize()`: a schema from a fixture
(`schemathesis.pytest.from_fixture`) reads `request.node._nodeid`, which pytest 9.2 no longer has.

What the fuzzer may not touch, and why:
- GET /api/v1/events is an endless Server-Sent Events stream: every call would wait for the
  timeout (tests/gateway/test_events.py covers it).
- the fuzzer's own identity: its user (`admin`) and its key are kept out of path parameters
  (no revoking its key, disabling or demoting its user halfway; test_people.py does those).
Work the routes start (job runs, restores, verification, gc, prune) is only requested: no
snapshotter, mover or verifier consumes the bus here, so nothing touches the lab's VMs."""

from __future__ import annotations

import asyncio
import contextlib
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
from shared.catalog import alerts, apikeys
from tests.gateway.conftest import Api, lab_vcenter, open_api
from tests.gateway.test_runs import _one_point as one_point
from tests.plugins.lab import DEFAULT_SPEC
from tests.plugins.nats import NatsServer
from tests.plugins.postgres import private_database

T = TypeVar("T")

# Per operation and phase: the suite's time budget, not the fuzzer's appetite. The seed makes the
# same cases every run, so a failure repeats; VBM_FUZZ_SEED / VBM_FUZZ_EXAMPLES look elsewhere or
# deeper by hand, VBM_FUZZ_CHECKS=all adds Schemathesis's other checks, VBM_FUZZ_DB=sqlite
# puts the gateway on SQLite instead of PostgreSQL.
MAX_EXAMPLES = int(os.environ.get("VBM_FUZZ_EXAMPLES", "8"))
STATEFUL_STEPS = 50
SEED = int(os.environ.get("VBM_FUZZ_SEED", "19"))
DATABASE = os.environ.get("VBM_FUZZ_DB", "postgresql")  # stricter than sqlite: sizes, int4 ranges
TIMEOUT = 10.0  # seconds: an answer slower than this is a hang
# Seconds of fuzzing: after the coverage phase the engine repeats fuzzing and stateful rounds until
# this is spent (a loaded machine gets fewer rounds, never a timeout): about a minute in all.
MAX_TIME = 50
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
    data: Path  # the module's own directory
    rp_id: str  # the seeded restore point
    job_id: str  # the seeded job
    lab: Lab


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


JOB = {"name": "nightly", "vcenter": "lab", "vms": [{"name": "vm1"}]}


async def seed(api: Api, where: Path) -> tuple[str, str]:
    """Something for the routes of one object to find: a restore point of the lab's vm1 in a real
    repository, an open alert and a job of vm1; the ids of the restore point and the job."""
    rp_id, _ = await one_point(api, where, bytes(range(256)) * 512)
    with api.ctx.sessions.begin() as s:
        alerts.raise_alert(
            s, key="fuzz", kind="verify_failed", severity="error", message="seeded", now=api.ctx.clock()
        )
    status, answer = await api.call("POST", "/jobs", json=JOB)
    assert status == 201, answer
    return rp_id, answer["id"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, lab_binary: Path) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("fuzz")
    with contextlib.ExitStack() as stack:  # undone in reverse: the app, its loop, db, lab, NATS
        nats = NatsServer(base / "nats")
        nats.start()
        stack.callback(nats.stop)
        lab = start_lab(DEFAULT_SPEC, base / "lab", binary=lab_binary)
        stack.callback(lab.stop)
        db_url = f"sqlite:///{base / 'vbm.db'}"
        if DATABASE == "postgresql":
            db_url = stack.enter_context(private_database())
        gateway = GatewayThread()
        stack.callback(gateway.close)
        # shares the fuzzer adds are never mounted for real (`false` fails at once), nor tested for long
        mounts = {
            "mount_command": "false",
            "umount_command": "false",
            "remount_on_start": False,
            "connect_timeout": 2,
        }
        api, close = gateway.run(
            open_api(nats.url, base / "data", db_url, (lab_vcenter(lab),), mounts=mounts)
        )
        stack.callback(lambda: gateway.run(close()))
        rp_id, job_id = gateway.run(seed(api, base))
        with api.ctx.sessions() as s:
            (info,) = apikeys.list_keys(s)
        url = str(api.client.make_url("")).rstrip("/")
        yield Live(url, api.key, info.id, info.owner, base, rp_id, job_id, lab)


def load_schema(live: Live) -> Any:
    """The live document, with the run's settings and what the fuzzer must not touch left out."""
    config = schemathesis.Config.from_dict(
        {
            "headers": {apikeys.HEADER: live.key},
            "request-timeout": TIMEOUT,
            "max-time": MAX_TIME,
            "seed": SEED,
            "continue-on-failure": True,
            # a path parameter whose pattern most generated strings miss (/users/{name}) makes
            # Hypothesis give up on generating, not the API fail: that is no finding
            "suppress-health-check": ["filter_too_much"],
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
    answered: set[str] = field(default_factory=set)  # operations that answered 2xx at least once
    stop: str = ""  # why the engine stopped: completed, or max_time

    def see(self, event: events.EngineEvent) -> None:
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            if event.phase != PhaseName.STATEFUL_TESTING:  # its scenario is labelled "Stateful tests"
                self.operations.add(recorder.label)
            self.cases += len(recorder.cases)
            for case_id, interaction in recorder.interactions.items():
                if interaction.response is not None and interaction.response.status_code < 300:
                    self.answered.add(recorder.cases[case_id].value.operation.label)
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
        elif isinstance(event, events.PhaseFinished):  # a phase may run in rounds: the last that ran
            if event.status.value != "skip" or event.phase.name.value not in self.phases:
                self.phases[event.phase.name.value] = event.status.value
        elif isinstance(event, events.EngineFinished):
            self.stop = event.stop_reason.value
        elif isinstance(event, events.NonFatalError):
            self.failures.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception


def test_the_seeded_objects_answer_as_documented(live: Live) -> None:
    """The fuzzer seldom guesses a real id or a job the catalog takes, so the answers of one
    object's routes would go unchecked: here each of them succeeds on the seeded objects or ones
    made on the way, and its answer is checked against the document. It runs before the fuzzer,
    which may delete the seeded job."""
    schema = load_schema(live)
    rp = {"rp_id": live.rp_id}
    spare = {"name": "spare", "url": str(live.data / "spare")}
    hook = {"name": "ops", "type": "slack", "url": "https://hooks.example/1"}
    calls: list[tuple[str, str, dict[str, str], Any]] = [
        ("GET", "/api/v1/backups/{rp_id}", rp, None),
        ("GET", "/api/v1/backups/{rp_id}/manifest.json", rp, None),
        ("GET", "/api/v1/backups/{rp_id}/disks/{disk}", {**rp, "disk": "2000"}, None),
        ("POST", "/api/v1/backups/{rp_id}/pin", rp, None),
        ("POST", "/api/v1/backups/{rp_id}/unpin", rp, None),
        ("POST", "/api/v1/backups/{rp_id}/verify", rp, None),
        ("GET", "/api/v1/jobs/{job_id}", {"job_id": live.job_id}, None),
        ("PUT", "/api/v1/jobs/{job_id}", {"job_id": live.job_id}, {**JOB, "enabled": False}),
        ("POST", "/api/v1/jobs/preview", {}, JOB),
        ("GET", "/api/v1/jobs/{job_id}/preview", {"job_id": live.job_id}, None),
        ("POST", "/api/v1/jobs/{job_id}/run", {"job_id": live.job_id}, None),
        ("GET", "/api/v1/runs", {}, None),
        ("GET", "/api/v1/alerts", {}, None),
        ("POST", "/api/v1/jobs", {}, {**JOB, "name": "weekly"}),
        ("GET", "/api/v1/vcenters/{name}", {"name": "lab"}, None),
        ("POST", "/api/v1/locations", {}, spare),
        ("GET", "/api/v1/locations/{name}", {"name": "spare"}, None),
        ("PUT", "/api/v1/locations/{name}", {"name": "spare"}, {"url": spare["url"]}),
        ("DELETE", "/api/v1/locations/{name}", {"name": "spare"}, None),
        ("POST", "/api/v1/channels", {}, hook),
        ("GET", "/api/v1/channels/{name}", {"name": "ops"}, None),
        ("PUT", "/api/v1/channels/{name}", {"name": "ops"}, {"type": "slack", "url": hook["url"]}),
        ("DELETE", "/api/v1/channels/{name}", {"name": "ops"}, None),
        (
            "POST",
            "/api/v1/restores",
            {},
            {"restore_point_id": live.rp_id, "name": "vm1-restored", "datastore": "ds1"},
        ),
    ]
    calls += people_and_vcenters(live)
    problems: list[str] = []
    answers = {(m, p): check(schema, live, problems, m, p, params, body) for m, p, params, body in calls}
    restore = answers.get(("POST", "/api/v1/restores")) or {}
    if "id" in restore:  # requested only: no restorer runs here
        for method, path in (
            ("GET", "/api/v1/restores/{restore_id}"),
            ("POST", "/api/v1/restores/{restore_id}/cancel"),
        ):
            check(schema, live, problems, method, path, {"restore_id": restore["id"]}, None)
    run = answers.get(("POST", "/api/v1/jobs/{job_id}/run")) or {}
    if "run_id" in run:  # requested only: no snapshotter runs here
        for method, path in (
            ("GET", "/api/v1/runs/{run_id}"),
            ("GET", "/api/v1/runs/{run_id}/log"),
            ("POST", "/api/v1/runs/{run_id}/cancel"),
        ):
            check(schema, live, problems, method, path, {"run_id": run["run_id"]}, None)
    for alert in (answers.get(("GET", "/api/v1/alerts")) or {}).get("alerts", [])[:1]:
        check(
            schema, live, problems, "POST", "/api/v1/alerts/{alert_id}/ack", {"alert_id": alert["id"]}, None
        )
    key = answers.get(("POST", "/api/v1/keys")) or {}
    if "id" in key:
        check(schema, live, problems, "DELETE", "/api/v1/keys/{key}", {"key": key["id"]}, None)
    assert not problems, "\n".join(problems)


def people_and_vcenters(live: Live) -> list[tuple[str, str, dict[str, str], Any]]:
    """A user made, changed, logged in as and given a key; a second vCenter (the lab again)."""
    olga = {"name": "olga"}
    lab2 = {"name": "lab2"}
    secret = "a-long-enough-passphrase-19"
    vcenter = {"url": live.lab.sdk_url, "username": live.lab.username, "password": live.lab.password}
    return [
        ("POST", "/api/v1/users", {}, {**olga, "role": "viewer", "password": secret}),
        ("GET", "/api/v1/users/{name}", olga, None),
        ("PUT", "/api/v1/users/{name}", olga, {"display_name": "Olga"}),
        ("POST", "/api/v1/session", {}, {**olga, "password": secret}),
        ("GET", "/api/v1/users/{name}/keys", olga, None),
        ("POST", "/api/v1/keys", {}, {"name": "spare", "expires_in_days": 1}),
        ("POST", "/api/v1/vcenters", {}, {**lab2, **vcenter, "verify_tls": False}),
        ("GET", "/api/v1/vcenters/{name}", lab2, None),
        ("PUT", "/api/v1/vcenters/{name}", lab2, {**vcenter, "verify_tls": False}),
        ("POST", "/api/v1/vcenters/{name}/test", lab2, None),
        ("DELETE", "/api/v1/vcenters/{name}", lab2, None),
    ]


def check(
    schema: Any, live: Live, problems: list[str], method: str, path: str, params: dict[str, str], body: Any
) -> Any:
    """Call one operation with these values: its JSON answer when it succeeded and conforms, else
    None with what was wrong added to `problems`."""
    try:
        operation = schema[path][method]
    except KeyError:
        return None  # not in this version of the document
    case = operation.Case(path_parameters=params, body=body) if body is not None else None
    case = case or operation.Case(path_parameters=params)
    response = case.call(headers={apikeys.HEADER: live.key}, timeout=TIMEOUT)
    if response.status_code >= 300:
        problems.append(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return None
    try:
        case.validate_response(response)
    except Exception as exc:  # a failed check: every one of them is reported
        problems.append(f"{method} {path}: {exc}")
        return None
    return response.json() if "json" in response.headers.get("content-type", [""])[0] else None


def test_every_operation_answers_as_documented(live: Live) -> None:
    schema = load_schema(live)
    outcome = Outcome()
    for event in engine.from_schema(schema).execute():
        outcome.see(event)
    print(
        f"schemathesis: {len(outcome.operations)} operations, {outcome.cases} cases,"
        f" {outcome.links} links, phases {outcome.phases}, stopped: {outcome.stop};"
        f" never a success: {sorted(outcome.operations - outcome.answered)}"
    )
    assert not outcome.failures, "\n\n".join(sorted(set(outcome.failures)))
