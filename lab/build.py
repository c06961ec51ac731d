"""Compile the lab's Go simulator (lab/vcsim) offline against Debian's govmomi, cached.

The binary lands in ``$VBM_LAB_BIN_DIR`` (default ``<repo>/var/lab/bin``) named after a hash
of the Go sources, the Go toolchain's version and govmomi's, so it is rebuilt only when one of
them changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["GOVMOMI_SRC", "GO_FALLBACK", "INSTALL_HINT", "LabError", "build_lab"]

VCSIM_SRC = Path(__file__).resolve().parent / "vcsim"
REPO_ROOT = Path(__file__).resolve().parent.parent
GOPATH = "/usr/share/gocode"
GOVMOMI_SRC = Path(GOPATH) / "src/github.com/vmware/govmomi"
GO_FALLBACK = Path("/usr/lib/go/bin/go")  # Debian's golang-go, when /usr/bin is not on PATH
INSTALL_HINT = (
    "run `make test` (or `make lab`), which installs the Debian packages "
    "`golang-go` and `golang-github-vmware-govmomi-dev` "
    "(`sudo apt-get install -y golang-go golang-github-vmware-govmomi-dev`)"
)


class LabError(RuntimeError):
    """The lab cannot be built, started or driven; the message says why (and how to fix)."""


def _bin_dir() -> Path:
    return Path(os.environ.get("VBM_LAB_BIN_DIR") or REPO_ROOT / "var" / "lab" / "bin")


def _go_version(go: str) -> str:
    proc = subprocess.run([go, "version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or proc.stderr.strip()


def _govmomi_version() -> str:
    """The Debian package's version of govmomi's source, else its go.sum (no version file ships)."""
    proc = (
        subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "golang-github-vmware-govmomi-dev"],
            capture_output=True,
            text=True,
            check=False,
        )
        if shutil.which("dpkg-query")
        else None
    )
    if proc is not None and proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip()
    go_sum = GOVMOMI_SRC / "go.sum"
    return go_sum.read_text(errors="replace") if go_sum.is_file() else ""


def _source_hash(toolchain: str = "") -> str:
    h = hashlib.sha256(toolchain.encode() + b"\0")
    for src in sorted(VCSIM_SRC.glob("*.go")):
        h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build_lab(force: bool = False) -> Path:
    """Compile lab/vcsim into the cache dir (keyed by a hash of the Go sources) and return it."""
    if not any(VCSIM_SRC.glob("*.go")):
        raise LabError(f"no Go sources in {VCSIM_SRC}")
    go = shutil.which("go") or (str(GO_FALLBACK) if GO_FALLBACK.is_file() else None)
    if go is None:
        raise LabError(f"the Go compiler (`go`) is not installed: {INSTALL_HINT}")
    if not (GOVMOMI_SRC / "simulator").is_dir():
        raise LabError(f"govmomi's source is missing ({GOVMOMI_SRC}): {INSTALL_HINT}")
    out_dir = _bin_dir()
    binary = out_dir / f"vcsim-{_source_hash(_go_version(go) + _govmomi_version())}"
    if binary.is_file() and not force:
        return binary
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (parallel test runs)
        if binary.is_file() and not force:
            return binary
        tmp = binary.with_name(binary.name + f".tmp{os.getpid()}")
        env = {**os.environ, "GOPATH": GOPATH, "GO111MODULE": "off"}
        env.pop("GOFLAGS", None)  # module flags break GOPATH mode
        if not os.access(Path.home(), os.W_OK) and "GOCACHE" not in env:
            env["GOCACHE"] = str(out_dir.parent / "go-build")
        proc = subprocess.run(
            [go, "build", "-o", str(tmp), "."],
            cwd=VCSIM_SRC,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise LabError(f"building the lab failed:\n{proc.stderr.strip()}\n({INSTALL_HINT})")
        tmp.replace(binary)
        for old in out_dir.glob("vcsim-*"):
            if old != binary and ".tmp" not in old.name:
                old.unlink(missing_ok=True)
    return binary
