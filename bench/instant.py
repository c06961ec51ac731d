"""Time-to-running: instant recovery against a full restore of the same disk, with the real
services (NATS, the lab, snapshotter, mover, verifier, notifier as processes).

    .venv/bin/python -m bench.instant [--size 2G] [--reps 3]

One lab VM with one disk of `--size` (the lab's "mixed" layout: 40% zeros), backed up once
(full). Then, per round, interleaved: a restore as a new VM with power-on (request -> the VM
registered and powered on: every byte uploaded to the datastore), and an instant recovery
(request -> the VM powered on from the published restore point: only non-zero windows written,
locally); each restored VM is removed (an instant one stopped) before the next. Prints medians
with ranges and the ratio instant / full. Uses the test harness of tests/pipeline (a dev tool).
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
    from shared.bus import Bus
    from shared.db.models import Restore
    from shared.restores import RestoreRequest, instant_action, request_restore
    from tests.pipeline.conftest import Pipeline, now
    from tests.pipeline.test_restore import settings, vcenter, wait_phase, wait_restore
    from tests.plugins.nats import NatsServer

    with tempfile.TemporaryDirectory(prefix="vbm-instant-") as tmp_name:
        tmp = Path(tmp_name)
        nats = NatsServer(tmp / "nats").start()
        lab = start_lab(LabSpec(vms=(VMSpec("big", (DiskSpec(size, seed=3),), cbt=True),)), tmp / "lab")
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
            job = p.create_job("big", ["big"])
            t0 = time.monotonic()
            run = await p.run_job(job)
            assert (await p.wait_run(run, timeout=600)).state == "succeeded", p.dump(run)
            print(f"backup of {size >> 20} MiB: {time.monotonic() - t0:.1f} s", file=sys.stderr)
            (rp,) = p.restore_points(run)
            full: list[float] = []
            instant: list[float] = []
            for r in range(reps):
                for kind in ("full", "instant") if r % 2 == 0 else ("instant", "full"):
                    name = f"big-{kind}-{r}"
                    body = {"restore_point_id": rp.id, "name": name, "power_on": True}
                    if kind == "full":
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
                        if kind == "full":
                            vc.destroy_vm(done.vm_moref or "")
                    finally:
                        vc.close()
                    if kind == "instant":
                        with p.sessions.begin() as s:
                            instant_action(s, rid, "stop", None, now())
                        await p.relay.publish_pending()
                        await wait_phase(p, rid, "stopped", timeout=300)
                    (full if kind == "full" else instant).append(took)
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

    ratios = [i / f for i, f in zip(instant, full, strict=True)]
    print(f"| time to a powered-on VM ({size >> 20} MiB disk, {reps} rounds) | seconds, median [range] |")
    print("|---|---|")
    print(f"| restore as a new VM (upload every byte, register, power on) | {fmt(full)} |")
    print(f"| instant recovery (sparse publish, mount, register, power on) | {fmt(instant)} |")
    print(f"| instant / full | {fmt(ratios)} |")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.instant", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("2G"))
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.size, args.reps)))
