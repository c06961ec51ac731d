"""Time-to-running: instant recovery against a full restore of the same disk, with the real
services (NATS, the lab, snapshotter, mover, verifier, notifier as processes).

    .venv/bin/python -m bench.instant [--size 2G] [--reps 3]

Two lab VMs with one disk of `--size` each (the same content: the lab's "mixed" layout), one
thin and one thick, backed up once (full). Then, per round, interleaved: a restore as a new VM
with power-on of the thin one (request -> the VM registered and powered on: the disk written
through NFC as a streamOptimized stream, zero windows left out) and of the thick one (every byte
uploaded with a PUT to /folder), and an instant recovery (request -> the VM powered on from the
published restore point: only non-zero windows written, locally); each restored VM is removed
(an instant one stopped) before the next. Prints medians with ranges and the ratios. Uses the
test harness of tests/pipeline (a dev tool).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.run import parse_size


async def main(size: int, reps: int) -> int:
    from lab.launcher import DiskSpec, LabSpec, VMSpec, start_lab
    from shared.catalog.restores import RestoreRequest, instant_action, request_restore
    from shared.db.models import Restore
    from shared.runtime.bus import Bus
    from tests.pipeline.conftest import Pipeline, now
    from tests.pipeline.test_restore import settings, vcenter, wait_phase, wait_restore
    from tests.plugins.nats import NatsServer

    with tempfile.TemporaryDirectory(prefix="vbm-instant-") as tmp_name:
        tmp = Path(tmp_name)
        nats = NatsServer(tmp / "nats").start()
        lab = start_lab(
            LabSpec(vms=(VMSpec("big", (DiskSpec(size, seed=3),), cbt=True),
                         VMSpec("thick", (DiskSpec(size, seed=3, thick=True),), cbt=True))),
            tmp / "lab",
        )  # fmt: skip
        bus = await Bus.connect(nats.url, "bench-instant")
        await bus.ensure_stream()
        data = tmp / "data"
        data.mkdir()
        import json
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
        env.update(
            VBM_DATA_DIR=str(data), VBM_NATS__URL=nats.url, VBM_VERIFY__REVERIFY="false",
            VBM_VCENTERS=json.dumps([{"name": "lab", "url": lab.sdk_url, "username": lab.username,
                                      "password": lab.password, "verify_tls": False}]),
        )  # fmt: skip
        p = Pipeline(lab=lab, nats=nats, data=data, env=env, bus=bus)
        try:
            p.start("snapshotter", "mover", "verifier", "notifier")
            job = p.create_job("big", ["big", "thick"])
            t0 = time.monotonic()
            run = await p.run_job(job)
            assert (await p.wait_run(run, timeout=600)).state == "succeeded", p.dump(run)
            print(f"backup of {size >> 20} MiB: {time.monotonic() - t0:.1f} s", file=sys.stderr)
            points = {row.vm_name: row for row in p.restore_points(run)}
            times: dict[str, list[float]] = {"full": [], "thick": [], "instant": []}
            for r in range(reps):
                order = ("full", "thick", "instant")
                for kind in order if r % 2 == 0 else order[::-1]:
                    name = f"big-{kind}-{r}"
                    rp = points["thick" if kind == "thick" else "big"]
                    body = {"restore_point_id": rp.id, "name": name, "power_on": True}
                    if kind in ("full", "thick"):
                        body["datastore"] = lab.datastore
                    else:
                        body["mode"] = "instant"
                    t0 = time.monotonic()
                    with p.sessions.begin() as s:
                        rid = request_restore(s, RestoreRequest.model_validate(body), settings(p), now()).id
                    await p.relay.publish_pending()
                    done = await wait_restore(p, rid, timeout=900)
                    took = time.monotonic() - t0
                    assert done.state == "succeeded", done.error
                    vc = vcenter(p)
                    try:
                        assert vc.vm_hardware(done.vm_moref or "")["power_state"] == "poweredOn"
                        if kind != "instant":
                            vc.destroy_vm(done.vm_moref or "")
                    finally:
                        vc.close()
                    if kind == "instant":
                        with p.sessions.begin() as s:
                            instant_action(s, rid, "stop", None, now())
                        await p.relay.publish_pending()
                        await wait_phase(p, rid, "stopped", timeout=300)
                    times[kind].append(took)
                    with p.sessions() as s:
                        row = s.get(Restore, rid)
                    print(
                        f"round {r + 1}: {kind:7} {took:6.2f} s ({row.bytes_total >> 20} MiB)",
                        file=sys.stderr,
                    )
        finally:
            p.stop()
            p.engine.dispose()
            await bus.close()
            lab.stop()
            nats.stop()

    def fmt(v: list[float]) -> str:
        return f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]"

    full, thick, instant = times["full"], times["thick"], times["instant"]
    print(f"| time to a powered-on VM ({size >> 20} MiB disk, {reps} rounds) | seconds, median [range] |")
    print("|---|---|")
    print(f"| restore as a new VM, thin source (NFC streamOptimized, zero windows left out) | {fmt(full)} |")
    print(f"| restore as a new VM, thick source (every byte PUT to /folder) | {fmt(thick)} |")
    print(f"| instant recovery (sparse publish, mount, register, power on) | {fmt(instant)} |")
    print(f"| thin (NFC) / thick (/folder) | {fmt([a / b for a, b in zip(full, thick, strict=True)])} |")
    print(f"| instant / thin | {fmt([a / b for a, b in zip(instant, full, strict=True)])} |")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.instant", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("2G"))
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.size, args.reps)))
