"""docs/examples/vbm_client.py works as documented: run as its own process against a gateway with
the services on the lab, it creates a job, runs it, follows the run over SSE to its end and prints
the manifest of the new restore point, with the SHA-256 of the disk image."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable

from tests.gateway.conftest import MakeApi, lab_vcenter, make_api
from tests.pipeline.conftest import ROOT, Pipeline, pipeline_factory

__all__ = ["make_api", "pipeline_factory"]  # the gateway in this process, on the pipeline's database

EXAMPLE = ROOT / "docs" / "examples" / "vbm_client.py"


async def test_the_python_example_backs_up_a_vm_and_prints_its_manifest(
    pipeline_factory: Callable[..., Pipeline], make_api: MakeApi
) -> None:
    p = pipeline_factory()
    p.start()
    api = await make_api(
        f"sqlite:///{p.data / 'vbm.db'}",
        vcenters=(lab_vcenter(p.lab),),
        gateway={"events_heartbeat": 0.5, "events_poll": 0.05},
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--url", str(api.client.make_url("/")), "--key", api.key,
        "--vcenter", "lab", "--vm", "db", "--name", "example", "--repository", str(p.repo_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    said = err.decode()
    assert proc.returncode == 0, f"{said}\n{p.logs()}"
    assert "job example (job-" in said and "run " in said and ": succeeded" in said, said
    manifest = json.loads(out)
    assert manifest["vm_name"] == "db" and manifest["vbm"]["kind"] == "full"
    disk = manifest["vbm"]["disks"][0]["file"]
    (image,) = [f for f in manifest["files"] if f["path"] == disk]
    assert len(image["sha256"]) == 64 and image["size_bytes"] == 9 * 1024 * 1024
