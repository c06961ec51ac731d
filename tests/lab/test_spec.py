"""Spec files: load_spec, default_spec, every shipped spec starts, python -m lab --spec,
disk-sha256 from the command line, and a non-ASCII VM name end to end."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.launcher import DiskSpec, Lab, LabSpec, VMSpec
from lab.spec import SpecError, default_spec, load_spec
from tests.plugins.lab import RestClient, connect, disconnect, disks_of, folder_url, wait_task

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "lab" / "specs").glob("*"))


def test_default_spec_is_what_vbm_up_builds() -> None:
    size = 64 * 1024 * 1024
    expected = LabSpec(
        vms=tuple(
            VMSpec(
                name=f"lab-vm-{i + 1:02d}",
                disks=tuple(DiskSpec(size=size + d * 3 * 1024, seed=i * 16 + d) for d in range(2)),
                cbt=True,
            )
            for i in range(3)
        )
    )
    assert default_spec(3, 2, 64) == expected
    assert default_spec(3, 2, 64).vms[2].disks[1] == DiskSpec(size=size + 3072, seed=33)


def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"vms": [{"name": "a", "disks": ["64Q"]}]}, r"vms\[0\]\.disks\[0\]\.size: bad size '64Q'"),
        (
            {"vms": [{"name": "a", "disks": [{"size": 1000}]}]},
            r"vms\[0\]\.disks\[0\]\.size: .*multiple of 1 KiB",
        ),
        ({"vms": [{"name": "a", "dsks": []}]}, r"vms\[0\]\.dsks: unknown field"),
        ({"vms": [{"name": "a", "cbt": "yes"}]}, r"vms\[0\]\.cbt: expected bool"),
        ({"vms": [{"name": "a/b"}]}, r"vms\[0\]\.name: invalid VM name"),
        (
            {"vms": [{"name": "a", "tags": ["env:prod"]}]},
            r"vms\[a\]\.tags\[0\]: tag env:prod is not declared",
        ),
        ({"vms": [{"name": "a", "tags": ["prod"]}]}, r'vms\[0\]\.tags\[0\]: a tag is "category:tag"'),
        ({"vms": [{"name": "a", "datastore": "nope"}]}, r"vms\[a\]\.datastore: no datastore 'nope'"),
        (
            {"vms": [{"name": "a", "disks": [{"size": "1M", "mode": "odd"}]}]},
            r"disks\[0\]: unknown disk mode",
        ),
        ({"vms": [{"name": "a", "count": 2}]}, r'vms\[0\]\.name: with "count", the name needs \{n\}'),
        ({"vms": [{"name": "a"}, {"name": "a"}]}, r"VM name 'a' twice"),
        ({"datastores": [{"name": "x", "latency_ms": -1}]}, r"datastores\[0\]\.latency_ms: must be >= 0"),
        ({"tag_categories": [{"name": "c", "cardinality": "ONE"}]}, r"cardinality: 'ONE' is not SINGLE"),
        ({"vm": []}, r"spec\.vm: unknown field"),
    ],
)
def test_bad_specs_name_the_file_and_field(tmp_path: Path, doc: object, message: str) -> None:
    path = write(tmp_path, "lab.json", doc)
    with pytest.raises(SpecError, match=message) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}: ")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the spec file"):
        load_spec(tmp_path / "missing.json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(write(tmp_path, "bad.json", "{"))
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(write(tmp_path, "bad.toml", "vms = ["))


def test_json_and_toml_say_the_same(tmp_path: Path) -> None:
    toml = write(
        tmp_path,
        "lab.toml",
        'cbt_max_areas = 3\n[[vms]]\nname = "vm-{n}"\ncount = 2\ncbt = true\n'
        'disks = ["1M", {size = "512K", seed = 5, thick = true}]\n',
    )
    doc = {
        "cbt_max_areas": 3,
        "vms": [
            {
                "name": "vm-{n}",
                "count": 2,
                "cbt": True,
                "disks": ["1M", {"size": 524288, "seed": 5, "thick": True}],
            }
        ],
    }
    spec = load_spec(toml)
    assert spec == load_spec(write(tmp_path, "lab.json", doc))
    assert [vm.name for vm in spec.vms] == ["vm-1", "vm-2"]
    # default seeds as vbm up's (VM index * 16 + disk), an explicit one shifted per copy
    assert [[d.seed for d in vm.disks] for vm in spec.vms] == [[0, 5], [16, 21]]
    assert spec.vms[0].disks[1] == DiskSpec(size=512 * 1024, seed=5, thick=True)


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_shipped_spec_starts(path: Path, lab_factory: Callable[[LabSpec], Lab]) -> None:
    spec = load_spec(path)
    lab = lab_factory(spec)
    assert [vm["name"] for vm in lab.inventory["vms"]] == [vm.name for vm in spec.vms]
    assert [d["name"] for d in lab.datastores] == ([d.name for d in spec.datastores] or ["LocalDS_0"])
    si = connect(lab)
    try:
        for vm_spec in spec.vms:
            entry = lab.vm(vm_spec.name)
            vm = si.content.searchIndex.FindByInventoryPath(
                "/".join(["DC0", "vm", *filter(None, vm_spec.folder.split("/")), vm_spec.name])
            )
            assert vm is not None, vm_spec.name
            assert vm.runtime.host.name == (vm_spec.host or "DC0_H0")
            assert vm.runtime.powerState == ("poweredOn" if vm_spec.power_on else "poweredOff")
            assert vm.config.changeTrackingEnabled is vm_spec.cbt
            assert vm.datastore[0].name == entry["datastore"]
            devices = disks_of(vm.config)
            for d in entry["disks"]:
                assert devices[d["key"]].capacityInBytes == d["capacity"]
                assert devices[d["key"]].backing.diskMode == d["mode"]
    finally:
        disconnect(si)
    if spec.tag_categories:
        rest = RestClient(lab)
        tags = rest.value("GET", "/com/vmware/cis/tagging/tag")
        assert len(tags) == sum(len(c.tags) for c in spec.tag_categories)


def test_non_ascii_vm_name_end_to_end(lab_factory: Callable[[LabSpec], Lab]) -> None:
    name = "Prüf VM 東京"
    lab = lab_factory(LabSpec(vms=(VMSpec(name=name, disks=(DiskSpec(256 * 1024, seed=3),) * 2, cbt=True),)))
    entry = lab.vm(name)
    d1 = entry["disks"][1]
    assert d1["flat"] == f"[LocalDS_0] {name}/{name}_1-flat.vmdk"
    assert (lab.datastore_dir / name / f"{name}_1-flat.vmdk").is_file()
    assert Path(d1["flat_path"]).read_bytes() == lab.guest_read(name, d1["key"], 0, d1["capacity"])
    url = folder_url(lab, d1["datastore_path"])
    assert urllib.parse.quote(name) in url  # percent-encoded UTF-8
    si = connect(lab)
    try:
        vm = si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{name}")
        assert vm.name == name
        snap = wait_task(vm.CreateSnapshot_Task("s1", "", False, False))
        lab.guest_write(name, d1["key"], 0, b"x" * 10)
        backing = disks_of(snap.config)[d1["key"]].backing.fileName
        assert backing == f"[LocalDS_0] {name}/{name}_1.vmdk"
        current = disks_of(vm.config)[d1["key"]].backing.fileName
        assert current == f"[LocalDS_0] {name}/{name}_1-000001.vmdk"
        delta_flat = current.split("] ", 1)[1].removesuffix(".vmdk") + "-flat.vmdk"
        with urllib.request.urlopen(folder_url(lab, d1["datastore_path"]), timeout=30) as resp:
            assert resp.read() == Path(d1["flat_path"]).read_bytes()
        with urllib.request.urlopen(folder_url(lab, delta_flat), timeout=30) as resp:
            assert resp.read()[:10] == b"x" * 10
        assert (
            lab.disk_sha256(name, 1)
            == hashlib.sha256(lab.guest_read(name, d1["key"], 0, d1["capacity"])).hexdigest()
        )
        wait_task(snap.RemoveSnapshot_Task(removeChildren=False))
        assert Path(d1["flat_path"]).read_bytes()[:10] == b"x" * 10
    finally:
        disconnect(si)


def run_lab_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_python_m_lab_with_a_spec_file(tmp_path: Path, lab_binary: Path) -> None:
    spec = write(
        tmp_path,
        "lab.json",
        {
            "datastores": ["A", "B"],
            "vms": [{"name": "x", "datastore": "B", "folder": "f/g", "disks": ["1M"]}],
        },
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", "--spec", str(spec), "--json", "--data-dir", str(tmp_path / "d")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        inventory = json.loads(proc.stdout.readline())
        assert [d["name"] for d in inventory["datastores"]] == ["A", "B"]
        vm = inventory["vms"][0]
        assert (vm["name"], vm["datastore"], vm["folder"]) == ("x", "B", "f/g")
        assert (tmp_path / "d" / "B" / "x" / "x-flat.vmdk").stat().st_size == 1024 * 1024
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
        for s in (proc.stdout, proc.stderr):
            if s:
                s.close()
    bad = run_lab_cli("--spec", str(spec), "--vms", "3")
    assert bad.returncode == 2 and "--vms: not with --spec" in bad.stderr
    typo = run_lab_cli("--spec", str(write(tmp_path, "typo.json", {"vms": [{"nme": "x"}]})))
    assert typo.returncode == 2 and "typo.json: vms[0].nme: unknown field" in typo.stderr


def test_disk_sha256_from_the_command_line(tmp_path: Path, lab: Lab) -> None:
    data = lab.guest_read("vm1", 2001, 0, lab.vm("vm1")["disks"][1]["capacity"])
    want = hashlib.sha256(data).hexdigest()
    assert lab.disk_sha256("vm1", 2001) == want
    # no running lab: says what to do
    env = {"VBM_DATA_DIR": str(tmp_path / "data")}
    none = run_lab_cli("disk-sha256", "vm1", "1", env=env)
    assert none.returncode == 2
    assert "no running lab found" in none.stderr and "vbm up" in none.stderr and "--url" in none.stderr
    # the lab vbm up leaves in <data dir>/lab/vcenter.json (url is the SDK URL)
    (tmp_path / "data" / "lab").mkdir(parents=True)
    (tmp_path / "data" / "lab" / "vcenter.json").write_text(json.dumps({"name": "lab", "url": lab.sdk_url}))
    by_index = run_lab_cli("disk-sha256", "vm1", "1", env=env)
    assert (by_index.returncode, by_index.stdout.strip()) == (0, want), by_index.stderr
    by_key = run_lab_cli("disk-sha256", lab.vm("vm1")["moref"], "2001", "--url", lab.url)
    assert (by_key.returncode, by_key.stdout.strip()) == (0, want), by_key.stderr
    missing = run_lab_cli("disk-sha256", "vm1", "2009", "--url", lab.url)
    assert missing.returncode == 1 and "no disk 2009" in missing.stderr
    # a snapshot's frozen content, before and after a guest write
    si = connect(lab)
    try:
        snap = wait_task(
            si.content.searchIndex.FindByInventoryPath("DC0/vm/vm1").CreateSnapshot_Task(
                "s", "", False, False
            )
        )
    finally:
        disconnect(si)
    lab.guest_write("vm1", 2001, 4096, b"changed")
    frozen = run_lab_cli("disk-sha256", "vm1", "1", "--snapshot", snap._moId, "--url", lab.sdk_url)
    assert frozen.stdout.strip() == want
    assert lab.disk_sha256("vm1", 2001) != want
    # `vbm lab ...` is the same entry point
    from shared.cli.app import main as vbm_main

    assert vbm_main(["lab", "disk-sha256", "vm1", "1", "--url", lab.url, "--snapshot", snap._moId]) == 0
