"""The benchmark driver: `python -m bench [--size 2G] [--reps 3] [--profile]`.

It builds a deterministic image, serves it as the disk of a lab VM (written into the lab's flat
file before the first snapshot), takes three snapshots (base; after guest writes to 5% of the
windows; with nothing changed), then runs, interleaved, `--reps` rounds of:

- raw: the disk downloaded from the datastore endpoint, bytes discarded (the limit);
- vbm: full backup (CBT '*'), CBT incremental, a run with nothing changed, an incremental without
  CBT (full re-read, dedup only, into a copy of the repository after the full), and a restore of
  the CBT incremental's restore point uploaded to the datastore with HTTP PUT;
- restic and borg (Debian's packages): full and incremental of the same images as a local
  file, and a restore of the incremental.

Every measured step is a child process: wall time, CPU seconds (user+sys) and peak RSS come from
`wait4(2)` of that process. Every restore is compared with the image it should reproduce; a
difference fails the run. The report prints ratios (per round, then median and range).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import image

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
GiB = 1024 * MiB

TARGETS: list[tuple[str, str, float]] = [
    # (label, key in the ratios table, upper bound)
    ("full / raw", "full/raw", 2.0),
    ("full / restic full", "full/restic full", 0.4),
    ("full / borg full", "full/borg full", 0.6),
    ("CBT incr (5%) / raw full", "cbt incr/raw", 0.15),
    ("CBT incr / restic incr", "cbt incr/restic incr", 0.1),
    ("restore / raw", "restore/raw", 2.5),
]
CPU_TARGET = 2.3  # CPU-s per GiB of disk, full backup
RSS_TARGET = 200.0  # MB, peak RSS of the mover


class BenchError(Exception):
    pass


@dataclass
class Sample:
    wall: float
    cpu: float
    rss: int  # bytes
    read: int | None = None
    stored: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 512M, 2G)")
    size = int(m.group(1)) * {"": 1, "K": 1024, "M": MiB, "G": GiB}[m.group(2)]
    if size < 4 * MiB or size % (64 * 1024):
        raise argparse.ArgumentTypeError("the size must be at least 4M and a multiple of 64K")
    return size


def measure(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Sample:
    """Run one child to its end; its wall time, user+sys CPU and peak RSS (from wait4)."""
    from shared.runtime.process import die_with_parent

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, preexec_fn=die_with_parent())
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(
            f"{' '.join(cmd[:4])}... exited {proc.returncode}:\n{stderr[-3000:]}{stdout[-1000:]}"
        )
    sample = Sample(wall=wall, cpu=ru.ru_utime + ru.ru_stime, rss=ru.ru_maxrss * 1024)
    sample.info["stdout"] = stdout
    return sample


def tree_size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _last_json(text: str, want: Callable[[dict[str, Any]], bool] = lambda _d: True) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and want(data):
                    return data
    raise BenchError(f"no JSON result in the output: {text[-500:]!r}")


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "not installed"


def machine() -> dict[str, str]:
    import zstandard

    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "zstandard": f"{zstandard.__version__} (libzstd {'.'.join(map(str, zstandard.ZSTD_VERSION))})",
        "blake3": importlib.metadata.version("blake3"),
        "isal": importlib.metadata.version("isal"),
        "restic": _version(["restic", "version"]),
        "borg": _version(["borg", "--version"]),
        "kernel": platform.release(),
    }


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.size: int = args.size
        self.samples: dict[str, list[Sample]] = {}
        self.rounds: list[dict[str, Sample]] = []
        self.lab: Any = None
        self.tls_proxy: subprocess.Popen[bytes] | None = None
        self.https_url: str | None = None
        self.argv: list[str] = []

    # ------------------------------------------------------------------ setup

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def setup(self) -> None:
        from lab.launcher import DiskSpec, LabSpec, VMSpec, build_lab, start_lab
        from shared.vsphere import VCenter

        args, tmp = self.args, self.tmp
        self.log(f"image: {self.size / MiB:.0f} MiB, seed {args.seed}")
        self.base_img = tmp / "images" / "base.img"
        self.base_img.parent.mkdir(parents=True)
        self.base_sha, self.composition = image.write_image(self.base_img, self.size, args.seed)
        self.changes = image.changes(self.size, args.seed)
        self.s2_img = tmp / "images" / "changed.img"
        subprocess.run(["cp", "--sparse=always", str(self.base_img), str(self.s2_img)], check=True)
        image.apply_changes(self.s2_img, self.changes)
        self.s2_sha = image.sha256_file(self.s2_img)

        self.log("lab: building/starting the simulator")
        spec = LabSpec(vms=(VMSpec("vm1", (DiskSpec(self.size, seed=args.seed, layout="zero"),), cbt=True),))
        self.lab = start_lab(spec, tmp / "lab", binary=build_lab())
        disk0 = self.lab.vm("vm1")["disks"][0]
        self.key = int(disk0["key"])
        # The bench's image replaces the lab's generated content before any snapshot exists.
        subprocess.run(["cp", "--sparse=always", str(self.base_img), disk0["flat_path"]], check=True)

        from shared.settings import VCenterSettings

        settings = VCenterSettings(
            name="lab", url=self.lab.sdk_url, username=self.lab.username, password=self.lab.password
        )
        vc = VCenter(settings)
        try:
            vm = vc.find_vm("vm1")
            self.common = {
                "sdk_url": self.lab.sdk_url,
                "username": self.lab.username,
                "password": self.lab.password,
                "datacenter": vm.datacenter,
                "vm_moref": vm.moref,
                "vm_name": vm.name,
                "vmx_path": vm.vmx_path,
            }
            self.snaps: dict[str, dict[str, Any]] = {}
            self.snaps["base"] = self._snapshot(vc, vm.moref, "bench-base")
            # The lab computes '*' by scanning the content once per snapshot (vSphere reads a
            # bitmap): do it here, unmeasured, so the first round's full does not pay for it.
            base = self.snaps["base"]
            vc.changed_areas(vm.moref, base["snapshot_moref"], self.key, self.size, "*")
            self.log(f"lab: {len(self.changes)} guest writes of 1 MiB (5% of the 4 MiB windows)")
            for change in self.changes:
                self.lab.guest_write("vm1", self.key, change.offset, change.data)
            self.snaps["changed"] = self._snapshot(vc, vm.moref, "bench-changed")
            self.snaps["same"] = self._snapshot(vc, vm.moref, "bench-same")
        finally:
            vc.close()
        self.src = tmp / "src"
        self.src.mkdir()
        self.src_file = self.src / "disk.img"

    def _snapshot(self, vc: Any, moref: str, name: str) -> dict[str, Any]:
        snap = vc.create_snapshot(moref, name)
        disk = next(d for d in vc.snapshot_disks(snap.moref) if d.key == self.key)
        if not disk.change_id:
            raise BenchError(f"snapshot {name} has no change id: CBT is off")
        return {
            "snapshot_moref": snap.moref,
            "snapshot_name": name,
            "disk": {
                "key": disk.key,
                "capacity": disk.capacity,
                "datastore_path": disk.file,
                "change_id": disk.change_id,
            },
        }

    # ------------------------------------------------------------------ steps

    def record(self, round_: dict[str, Sample], name: str, sample: Sample) -> None:
        sample.info.pop("stdout", None)
        self.samples.setdefault(name, []).append(sample)
        round_[name] = sample
        extra = ""
        if sample.read is not None:
            extra += f" read {sample.read / MiB:.0f} MiB"
        if sample.stored is not None:
            extra += f" stored {sample.stored / MiB:.1f} MiB"
        rss = sample.rss / 1e6
        self.log(f"  {name:22} {sample.wall:7.2f} s  cpu {sample.cpu:6.2f} s  rss {rss:5.0f} MB{extra}")

    def step(self, spec: dict[str, Any]) -> tuple[Sample, dict[str, Any]]:
        cmd = [sys.executable, "-m", "bench.step", json.dumps(spec)]
        sample = measure(cmd, cwd=REPO_ROOT)
        result = _last_json(sample.info["stdout"])
        sample.info.update({k: v for k, v in result.items() if k in ("work_wall", "work_cpu", "marks")})
        return sample, result

    def ours_backup(self, repo: Path, snap: str, parent: str | None, *, use_cbt: bool = True) -> Sample:
        before = tree_size(repo) if repo.exists() else 0
        spec = {
            "kind": "backup",
            **self.common,
            **self.snaps[snap],
            "repo": str(repo),
            "parent": parent,
            "use_cbt": use_cbt,
        }
        sample, result = self.step(spec)
        sample.read = result["bytes_read"]
        sample.stored = tree_size(repo) - before
        sample.info["rp"] = result["rp"]
        sample.info["kind"] = result["kind"]
        sample.info["stats"] = {k: result[k] for k in ("windows_read", "zero_windows", "chunks_written")}
        return sample

    def round_raw(self, r: int, round_: dict[str, Sample]) -> None:
        from shared.repo.writer import _default_workers

        spec = {"kind": "raw", **self.common, **self.snaps["base"], "workers": _default_workers()}
        sample, result = self.step(spec)
        sample.read = result["bytes_read"]
        self.record(round_, "raw download", sample)
        if not self.args.restore_to_file:  # the limit of a restore: the datastore's write path
            target = f"bench-restore/raw-r{r}.bin"
            spec = {"kind": "raw_put", **self.common, "datastore": self.lab.datastore, "target_path": target}
            spec["size"] = self.size
            try:
                sample, result = self.step(spec)
            finally:
                (self.lab.datastore_dir / target).unlink(missing_ok=True)
            sample.read = result["bytes_written"]
            self.record(round_, "raw upload", sample)

    def round_ours(self, r: int, round_: dict[str, Sample]) -> None:
        repo = self.tmp / f"r{r}" / "vbm"
        repo_nocbt = self.tmp / f"r{r}" / "vbm-nocbt"
        repo.parent.mkdir(exist_ok=True)
        try:
            full = self.ours_backup(repo, "base", None)
            if full.info["kind"] != "full":
                raise BenchError("the first backup was not a full")
            self.record(round_, "vbm full", full)
            # A copy of the repository as the full left it (objects are write-once: hard links).
            subprocess.run(["cp", "-al", str(repo), str(repo_nocbt)], check=True)
            incr = self.ours_backup(repo, "changed", full.info["rp"])
            if incr.info["kind"] != "incremental":
                raise BenchError("the CBT incremental was not an incremental")
            self.record(round_, "vbm incr CBT", incr)
            same = self.ours_backup(repo, "same", incr.info["rp"])
            self.record(round_, "vbm nothing changed", same)
            nocbt = self.ours_backup(repo_nocbt, "changed", full.info["rp"], use_cbt=False)
            self.record(round_, "vbm incr no CBT", nocbt)
            self.record(round_, "vbm restore", self.ours_restore(repo, incr.info["rp"], r))
        finally:
            shutil.rmtree(repo, ignore_errors=True)
            shutil.rmtree(repo_nocbt, ignore_errors=True)

    def ours_restore(self, repo: Path, rp: str, r: int) -> Sample:
        target_rel = f"bench-restore/r{r}/vm1-flat.vmdk"
        spec: dict[str, Any] = {
            "kind": "restore",
            **self.common,
            "repo": str(repo),
            "rp": rp,
            "key": self.key,
        }
        local_target: Path
        if self.args.restore_to_file:
            local_target = self.tmp / f"r{r}" / "vbm-restore" / "restore.img"
            local_target.parent.mkdir(parents=True, exist_ok=True)
            spec["target_file"] = str(local_target)
        else:
            local_target = self.lab.datastore_dir / target_rel
            spec.update({"datastore": self.lab.datastore, "target_path": target_rel})
        try:
            sample, result = self.step(spec)
            sample.read = result["bytes_written"]
            sample.info["to"] = result["to"]
            self.verify(local_target, self.s2_sha, "vbm restore")
        finally:
            shutil.rmtree(local_target.parent, ignore_errors=True)
        return sample

    def verify(self, path: Path, sha: str, what: str) -> None:
        if not path.is_file():
            raise BenchError(f"{what}: {path} was not written")
        got = image.sha256_file(path)
        if got != sha or path.stat().st_size != self.size:
            raise BenchError(f"{what}: the restored image differs from the original ({got} != {sha})")

    def _use_source(self, img: Path) -> None:
        tmp_link = self.src / ".next"
        tmp_link.unlink(missing_ok=True)
        os.link(img, tmp_link)
        os.replace(tmp_link, self.src_file)

    def round_restic(self, r: int, round_: dict[str, Sample]) -> None:
        base = self.tmp / f"r{r}" / "restic"
        repo = base / "repo"
        env = {
            **os.environ,
            "RESTIC_REPOSITORY": str(repo),
            "RESTIC_PASSWORD": "bench",
            "RESTIC_CACHE_DIR": str(base / "cache"),
            "XDG_CACHE_HOME": str(base / "cache"),
        }
        base.mkdir(parents=True)
        try:
            subprocess.run(["restic", "init"], env=env, check=True, capture_output=True)
            for name, img in (("restic full", self.base_img), ("restic incr", self.s2_img)):
                self._use_source(img)
                before = tree_size(repo)
                cmd = ["restic", "backup", "--json", "--host", "bench", str(self.src_file)]
                sample = measure(cmd, env=env)
                summary = _last_json(sample.info["stdout"], lambda d: d.get("message_type") == "summary")
                sample.read = int(summary.get("total_bytes_processed", 0))
                sample.stored = tree_size(repo) - before
                self.record(round_, name, sample)
            target = base / "restore"
            sample = measure(
                ["restic", "restore", "latest", "--host", "bench", "--target", str(target)], env=env
            )
            self.verify(target / str(self.src_file).lstrip("/"), self.s2_sha, "restic restore")
            sample.read = self.size
            self.record(round_, "restic restore", sample)
        finally:
            shutil.rmtree(base, ignore_errors=True)

    def round_borg(self, r: int, round_: dict[str, Sample]) -> None:
        base = self.tmp / f"r{r}" / "borg"
        repo = base / "repo"
        env = {
            **os.environ,
            "BORG_REPO": str(repo),
            "BORG_BASE_DIR": str(base / "home"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }
        base.mkdir(parents=True)
        try:
            subprocess.run(["borg", "init", "-e", "none"], env=env, check=True, capture_output=True)
            for name, img, archive in (
                ("borg full", self.base_img, "full"),
                ("borg incr", self.s2_img, "incr"),
            ):
                self._use_source(img)
                before = tree_size(repo)
                cmd = [
                    "borg",
                    "create",
                    "--json",
                    "--chunker-params",
                    "fixed,4194304",
                    "--compression",
                    "zstd,3",
                    f"::{archive}",
                    str(self.src_file),
                ]
                sample = measure(cmd, env=env)
                stats = json.loads(sample.info["stdout"]).get("archive", {}).get("stats", {})
                sample.read = int(stats.get("original_size", 0))
                sample.stored = tree_size(repo) - before
                self.record(round_, name, sample)
            target = base / "restore"
            target.mkdir()
            sample = measure(["borg", "extract", "::incr"], env=env, cwd=target)
            self.verify(target / str(self.src_file).lstrip("/"), self.s2_sha, "borg restore")
            sample.read = self.size
            self.record(round_, "borg restore", sample)
        finally:
            shutil.rmtree(base, ignore_errors=True)

    def run_rounds(self) -> None:
        groups: list[tuple[str, Callable[[int, dict[str, Sample]], None]]] = [("raw", self.round_raw)]
        groups.append(("vbm", self.round_ours))
        if not self.args.no_peers:
            groups += [("restic", self.round_restic), ("borg", self.round_borg)]
        if self.args.https:
            self.start_tls_proxy()
            groups.append(("https", self.round_https))
        for r in range(self.args.reps):
            k = r % len(groups)
            order = groups[k:] + groups[:k]  # rotate, so no tool always runs first
            self.log(f"round {r + 1}/{self.args.reps}: {', '.join(g[0] for g in order)}")
            round_: dict[str, Sample] = {}
            for _name, fn in order:
                fn(r, round_)
            self.rounds.append(round_)

    def start_tls_proxy(self) -> None:
        """socat terminating TLS in front of the lab (the optional HTTPS source variant)."""
        import socket

        from shared.runtime.process import die_with_parent

        if shutil.which("socat") is None or shutil.which("openssl") is None:
            raise BenchError("--https needs socat and openssl")
        tls = self.tmp / "tls"
        tls.mkdir()
        req = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        req += ["-subj", "/CN=127.0.0.1", "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem")]
        subprocess.run(
            req,
            check=True,
            capture_output=True,
        )
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        listen = (
            f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,"
            f"cert={tls / 'cert.pem'},key={tls / 'key.pem'}"
        )
        self.tls_proxy = subprocess.Popen(
            ["socat", "-b", "262144", listen, f"TCP:127.0.0.1:{self.lab.port}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
            start_new_session=True,  # its per-connection children share its process group
        )
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or self.tls_proxy.poll() is not None:
                raise BenchError("the TLS proxy (socat) did not start")
            time.sleep(0.05)
        self.https_url = f"https://127.0.0.1:{port}/sdk"
        self.log(f"https: socat TLS proxy on port {port} in front of the lab")

    def stop_tls_proxy(self) -> None:
        if self.tls_proxy is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.tls_proxy.pid, signal.SIGTERM)  # socat and its per-connection children
        try:
            self.tls_proxy.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.tls_proxy.pid, signal.SIGKILL)
            self.tls_proxy.wait()
        self.tls_proxy = None

    def round_https(self, r: int, round_: dict[str, Sample]) -> None:
        """Raw download and vbm full through TLS (socat's CPU, like the lab's, is not counted)."""
        from shared.repo.writer import _default_workers

        common = {**self.common, "sdk_url": self.https_url}
        spec = {"kind": "raw", **common, **self.snaps["base"], "workers": _default_workers()}
        sample, result = self.step(spec)
        sample.read = result["bytes_read"]
        self.record(round_, "raw download https", sample)
        repo = self.tmp / f"r{r}" / "vbm-https"
        repo.parent.mkdir(exist_ok=True)
        try:
            spec = {"kind": "backup", **common, **self.snaps["base"], "repo": str(repo), "use_cbt": True}
            sample, result = self.step(spec)
            sample.read = result["bytes_read"]
            sample.stored = tree_size(repo)
            self.record(round_, "vbm full https", sample)
        finally:
            shutil.rmtree(repo, ignore_errors=True)

    def run_profile(self) -> dict[str, Any]:
        repo = self.tmp / "profile" / "vbm"
        repo.parent.mkdir(exist_ok=True)
        try:
            spec = {
                "kind": "profile",
                **self.common,
                **self.snaps["base"],
                "repo": str(repo),
                "use_cbt": True,
            }
            sample, result = self.step(spec)
        finally:
            shutil.rmtree(repo.parent, ignore_errors=True)
        result["process_wall"], result["process_cpu"], result["process_rss"] = (
            sample.wall,
            sample.cpu,
            sample.rss,
        )
        return result


# ---------------------------------------------------------------------- report


def _med(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "n/a"
    m, lo, hi = _med(values)
    return f"{m:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def _other_verdict(vals: list[float] | None, inproc: list[float] | None, bound: float) -> str:
    """' (in-process: no)' when the in-process figure gives the other verdict, else ''."""
    if not vals or not inproc:
        return ""
    a, b = statistics.median(vals) <= bound, statistics.median(inproc) <= bound
    return "" if a == b else f" (in-process: {'yes' if b else '**no**'})"


def _work(samples: list[Sample]) -> str:
    """The child's own timing of its work (without the interpreter's start), for vbm's steps."""
    if "work_wall" not in samples[0].info:
        return ""
    wall = statistics.median(s.info["work_wall"] for s in samples)
    cpu = statistics.median(s.info["work_cpu"] for s in samples)
    return f"{wall:.2f} / {cpu:.2f}"


def in_process_ratios(rounds: list[dict[str, Sample]], size: int) -> dict[str, list[float]]:
    """vbm-vs-raw ratios from the children's own timing of their work (no interpreter start)."""
    pairs = {
        "full/raw": "vbm full",
        "cbt incr/raw": "vbm incr CBT",
        "restore/raw": "vbm restore",
    }
    out: dict[str, list[float]] = {}
    for key, name in pairs.items():
        vals = [
            rd[name].info["work_wall"] / rd["raw download"].info["work_wall"]
            for rd in rounds
            if name in rd and "raw download" in rd
        ]
        if vals:
            out[key] = vals
    cpu = [rd["vbm full"].info["work_cpu"] / (size / GiB) for rd in rounds if "vbm full" in rd]
    if cpu:
        out["cpu/GiB"] = cpu
    return out


def ratios(rounds: list[dict[str, Sample]], size: int) -> dict[str, list[float]]:
    pairs = {
        "full/raw": ("vbm full", "raw download"),
        "cbt incr/raw": ("vbm incr CBT", "raw download"),
        "no-CBT incr/raw": ("vbm incr no CBT", "raw download"),
        "nothing changed/raw": ("vbm nothing changed", "raw download"),
        "restore/raw": ("vbm restore", "raw download"),
        "restore/raw upload": ("vbm restore", "raw upload"),
        "raw upload/raw download": ("raw upload", "raw download"),
        "full/restic full": ("vbm full", "restic full"),
        "full/borg full": ("vbm full", "borg full"),
        "cbt incr/restic incr": ("vbm incr CBT", "restic incr"),
        "cbt incr/borg incr": ("vbm incr CBT", "borg incr"),
        "no-CBT incr/restic incr": ("vbm incr no CBT", "restic incr"),
        "no-CBT incr/borg incr": ("vbm incr no CBT", "borg incr"),
        "restore/restic restore": ("vbm restore", "restic restore"),
        "restore/borg restore": ("vbm restore", "borg restore"),
        "https: full/raw (both over TLS)": ("vbm full https", "raw download https"),
        "https: raw over TLS / raw": ("raw download https", "raw download"),
        "https: full over TLS / full": ("vbm full https", "vbm full"),
    }
    out: dict[str, list[float]] = {}
    for key, (a, b) in pairs.items():
        vals = [rd[a].wall / rd[b].wall for rd in rounds if a in rd and b in rd and rd[b].wall > 0]
        if vals:
            out[key] = vals
    for tool, name in (("vbm", "vbm full"), ("restic", "restic full"), ("borg", "borg full")):
        vals = [rd[name].cpu / (size / GiB) for rd in rounds if name in rd]
        if vals:
            out[f"CPU-s/GiB {tool} full"] = vals
    for key, (a, b) in {
        "stored full/restic full": ("vbm full", "restic full"),
        "stored full/borg full": ("vbm full", "borg full"),
    }.items():
        vals = [rd[a].stored / rd[b].stored for rd in rounds if a in rd and b in rd and rd[b].stored]  # type: ignore[operator]
        if vals:
            out[key] = vals
    return out


def report(bench: Bench, profile: dict[str, Any] | None) -> str:
    lines: list[str] = []
    add = lines.append
    comp = bench.composition
    seg = comp.random + comp.zero + comp.text
    add(f"Image: {bench.size / MiB:.0f} MiB, seed {bench.args.seed}: {seg} segments of 64 KiB,")
    add(
        f"{100 * comp.random / seg:.1f}% random, {100 * comp.zero / seg:.1f}% zero,"
        f" {100 * comp.text / seg:.1f}% text;"
        f" incremental: {len(bench.changes)} windows of 4 MiB get 1 MiB of random data each."
    )
    add(f"Command: python -m bench {' '.join(bench.argv)}")
    add(f"Rounds: {len(bench.rounds)} (interleaved, order rotated per round). Wall/CPU: median [min-max].")
    add("")
    if bench.rounds:
        add("| step | wall s | CPU s (user+sys) | peak RSS MB | read MiB | stored MiB | in-proc wall/CPU s |")
        add("|---|---|---|---|---|---|---|")
        for name, samples in bench.samples.items():
            rss = max(s.rss for s in samples) / 1e6
            read = (
                statistics.median(s.read for s in samples if s.read is not None)
                if samples[0].read is not None
                else None
            )
            stored = [s.stored for s in samples if s.stored is not None]
            add(
                f"| {name} | {_fmt([s.wall for s in samples])} | {_fmt([s.cpu for s in samples])}"
                f" | {rss:.0f} |"
                f" {'' if read is None else f'{read / MiB:.0f}'} |"
                f" {f'{statistics.median(stored) / MiB:.1f}' if stored else ''} | {_work(samples)} |"
            )
        add("")
        rat = ratios(bench.rounds, bench.size)
        inproc = in_process_ratios(bench.rounds, bench.size)
        add("| ratio (per round, then median [range]) | measured | target | met | in-process |")
        add("|---|---|---|---|---|")
        for label, key, bound in TARGETS:
            vals = rat.get(key)
            met = "n/a" if not vals else ("yes" if statistics.median(vals) <= bound else "**no**")
            alt = _fmt(inproc[key]) if key in inproc else ""
            met += _other_verdict(vals, inproc.get(key), bound)
            add(f"| {label} | {_fmt(vals) if vals else 'n/a'} | <= {bound} | {met} | {alt} |")
        vals = rat.get("CPU-s/GiB vbm full")
        met = "n/a" if not vals else ("yes" if statistics.median(vals) <= CPU_TARGET else "**no**")
        alt = _fmt(inproc["cpu/GiB"]) if "cpu/GiB" in inproc else ""
        met += _other_verdict(vals, inproc.get("cpu/GiB"), CPU_TARGET)
        add(
            f"| CPU-s per GiB, vbm full | {_fmt(vals) if vals else 'n/a'} | <= {CPU_TARGET} | {met} | {alt} |"
        )
        movers = [
            s.rss / 1e6
            for n, ss in bench.samples.items()
            if n.startswith("vbm") and "restore" not in n
            for s in ss
        ]
        if movers:
            met = "yes" if max(movers) <= RSS_TARGET else "**no**"
            add(
                f"| peak RSS of the mover, MB (max of all backups) | {max(movers):.0f}"
                f" | <= {RSS_TARGET:.0f} | {met} | |"
            )
        add("")
        add("| other ratio | median [range] |")
        add("|---|---|")
        shown = {t[1] for t in TARGETS} | {"CPU-s/GiB vbm full"}
        for key, vals in rat.items():
            if key not in shown:
                add(f"| {key} | {_fmt(vals)} |")
        same = bench.samples.get("vbm nothing changed", [])
        if same:
            add("")
            add(
                "Fixed cost of a run with nothing changed (process, incl. interpreter start):"
                f" wall {_fmt([s.wall for s in same])} s, CPU {_fmt([s.cpu for s in same])} s;"
                f" the work alone (login, CBT query, small files, commit): wall"
                f" {_fmt([s.info.get('work_wall', 0.0) for s in same])} s,"
                f" CPU {_fmt([s.info.get('work_cpu', 0.0) for s in same])} s."
            )
        full = bench.samples.get("vbm full", [])
        if full:
            add(
                f"vbm full, the work alone (without the interpreter's start): wall"
                f" {_fmt([s.info.get('work_wall', 0.0) for s in full])} s, CPU"
                f" {_fmt([s.info.get('work_cpu', 0.0) for s in full])} s."
            )
        restores = bench.samples.get("vbm restore", [])
        if restores:
            add(f"vbm restore target: {restores[0].info.get('to')} (HTTP PUT /folder when 'datastore').")
    if profile:
        add("")
        add(
            f"Profile of one full backup in-process ({bench.size / MiB:.0f} MiB): wall"
            f" {profile['profile_wall']:.2f} s, CPU {profile['profile_cpu']:.2f} s"
            f" (process: wall {profile['process_wall']:.2f} s, CPU {profile['process_cpu']:.2f} s,"
            f" peak RSS {profile['process_rss'] / 1e6:.0f} MB)"
        )
        add("")
        add("| stage | calls | wall s (summed over concurrent calls) | thread CPU s |")
        add("|---|---|---|---|")
        for name, st in profile["stages"].items():
            add(f"| {name} | {st['calls']} | {st['wall']:.2f} | {st['cpu']:.2f} |")
        add("")
        add("cProfile, event-loop (main) thread, by tottime:")
        add("```")
        lines.extend(profile["cprofile_main_thread"][:30])
        add("```")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=2 * GiB, help="image size (default 2G)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-peers", action="store_true", help="skip restic and borg")
    parser.add_argument("--profile", action="store_true", help="also profile one full backup in-process")
    parser.add_argument(
        "--https", action="store_true", help="also raw + full through a TLS proxy (socat) in front of the lab"
    )
    parser.add_argument("--restore-to-file", action="store_true", help="restore to a local file, not PUT")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="parent of the temp dir (default: $TMPDIR)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the raw samples as JSON here")
    args = parser.parse_args(argv)
    if args.reps < 0 or (args.reps == 0 and not args.profile):
        parser.error("--reps must be >= 1 (or 0 with --profile)")
    if not args.no_peers:
        for tool in ("restic", "borg"):
            if shutil.which(tool) is None:
                parser.error(f"{tool} is not installed (apt-get install -y restic borgbackup, or --no-peers)")

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    info = machine()
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="vbm-bench-", dir=args.workdir))
    bench = Bench(args, tmp)
    bench.argv = list(sys.argv[1:] if argv is None else argv)
    profile = None
    try:
        with _cleanup(bench, tmp):
            bench.setup()
            bench.run_rounds()
            if args.profile:
                bench.log("profile: one full backup in-process")
                profile = bench.run_profile()
    except BenchError as exc:
        print(f"benchmark FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmark interrupted", file=sys.stderr)
        return 130
    text = report(bench, profile)
    print(text)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "size": bench.size,
                    "rounds": [{n: s.__dict__ for n, s in rd.items()} for rd in bench.rounds],
                    "profile": profile,
                    "report": text,
                },
                indent=1,
                default=str,
            )
        )
    return 0


@contextlib.contextmanager
def _cleanup(bench: Bench, tmp: Path) -> Iterator[None]:
    try:
        yield
    finally:
        bench.stop_tls_proxy()
        if bench.lab is not None:
            bench.lab.stop()
        shutil.rmtree(tmp, ignore_errors=True)
