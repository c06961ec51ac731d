"""`vbm status` against a NATS server with heartbeats answering its ping (a real `vbm up` is
checked in tests/test_services.py), and without NATS."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import nats

from shared.contracts import PING_SUBJECT, ServiceHeartbeat, heartbeat_subject
from shared.runtime.supervisor import SERVICES
from tests.plugins.nats import NatsServer
from tests.plugins.procs import free_port

ROOT = Path(__file__).resolve().parent.parent


async def _vbm_status(tmp_path: Path, url: str) -> tuple[str, str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env |= {"VBM_DATA_DIR": str(tmp_path), "VBM_NATS__URL": url, "VBM_HEARTBEAT_INTERVAL": "0.5"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "status", "--json",
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode(), err.decode(), proc.returncode or 0


async def test_vbm_status_lists_the_heartbeats_and_says_what_is_missing(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nc = await nats.connect(nats_server.url)
    up: list[str] = ["mover"]

    async def beat(_msg: object) -> None:  # as every service does when pinged
        now = datetime.now(UTC)
        for service in up:
            beat = ServiceHeartbeat(
                service=service, instance=f"{service}-1", pid=42, host="h", version="0.1.0",
                started_at=now, sent_at=now, state="ready",
            )  # fmt: skip
            await nc.publish(heartbeat_subject(service), beat.model_dump_json().encode())

    await nc.subscribe(PING_SUBJECT, cb=beat)
    await nc.flush()
    try:
        (out, err, code), unreachable = await asyncio.gather(
            _vbm_status(tmp_path, nats_server.url), _vbm_status(tmp_path, f"nats://127.0.0.1:{free_port()}")
        )
        answer = json.loads(out)
        assert code == 1, err
        assert [(r["service"], r["instance"], r["up"]) for r in answer["services"]] == [
            ("mover", "mover-1", True)
        ]
        assert answer["missing"] == [s for s in SERVICES if s != "mover"]
        up[:] = SERVICES
        out, err, code = await _vbm_status(tmp_path, nats_server.url)
        assert code == 0 and json.loads(out)["missing"] == [], out + err
    finally:
        await nc.close()
    out, err, code = unreachable
    assert (out, code) == ("", 2)
    assert err.startswith("vbm status: cannot reach NATS at nats://127.0.0.1:") and err.count("\n") == 1
