"""The gateway over TLS: the real `python -m services.gateway` process on a private NATS and SQLite.

A configured certificate (a CA and leaf from trustme) is served with HSTS; on a non-loopback
address with nothing configured the gateway makes a self-signed certificate once and serves the
same one after a restart; on loopback it stays plain HTTP without HSTS; bad pairs are refused at
the door, naming the setting.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from shared.runtime.supervisor import CERT_PREFIX, LISTEN_PREFIX
from shared.runtime.tls import file_fingerprint, server_tls
from shared.settings import ConfigError, GatewaySettings, load_settings
from tests.plugins.nats import NatsServer
from tests.plugins.procs import free_port

ROOT = Path(__file__).resolve().parents[2]


class Gateway:
    def __init__(self, data: Path, nats: NatsServer, **env: str) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
        full.update(VBM_DATA_DIR=str(data), VBM_NATS__URL=nats.url, VBM_GATEWAY__PORT="0", **env)
        self.log = data.parent / f"gateway-{time.monotonic_ns()}.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.gateway"],
                env=full,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.url = ""
        self.cert_line = ""

    def wait_listening(self, timeout: float = 60) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(CERT_PREFIX):
                self.cert_line = line[len(CERT_PREFIX) :].strip()
            if line.startswith(LISTEN_PREFIX):
                self.url = line[len(LISTEN_PREFIX) :].strip()
                return
        self.stop()
        raise AssertionError(f"the gateway did not listen; stderr:\n{self.stderr()}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def stderr(self) -> str:
        return self.log.read_text()


@pytest.fixture
def gateways(nats_server: NatsServer) -> Iterator[Any]:
    started: list[Gateway] = []

    def start(data: Path, **env: str) -> Gateway:
        gw = Gateway(data, nats_server, **env)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], Any]:
    with urllib.request.urlopen(url, timeout=10, context=context) as resp:
        return resp.status, dict(resp.headers), json.load(resp)


def test_configured_certificate_is_served_with_hsts(gateways: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = tmp_path / "gw.pem", tmp_path / "gw.key"
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    gw = gateways(
        tmp_path / "data",
        VBM_GATEWAY__HOST="127.0.0.1",
        VBM_GATEWAY__TLS_CERT=str(cert),
        VBM_GATEWAY__TLS_KEY=str(key),
    )
    gw.wait_listening()
    assert gw.url.startswith("https://127.0.0.1:")
    assert "(configured)" in gw.cert_line and file_fingerprint(cert) in gw.cert_line
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    status, headers, body = get(f"https://127.0.0.1:{gw.port}/healthz", trusting)
    assert status == 200 and body
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    # An error answer carries it too; a client that does not trust the CA is refused.
    with pytest.raises(urllib.error.HTTPError) as err:
        get(f"https://127.0.0.1:{gw.port}/api/v1/jobs", trusting)
    assert err.value.code == 401 and "Strict-Transport-Security" in err.value.headers
    err.value.close()
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(f"https://127.0.0.1:{gw.port}/healthz", ssl.create_default_context())
    # Plain HTTP to the TLS port gets no answer it could take for the API.
    with pytest.raises((urllib.error.URLError, ConnectionError, http_error())):
        get(f"http://127.0.0.1:{gw.port}/healthz")


def http_error() -> type[Exception]:
    import http.client

    return http.client.HTTPException


def test_non_loopback_makes_a_self_signed_certificate_once(gateways: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    gw = gateways(data, VBM_GATEWAY__HOST="0.0.0.0")
    gw.wait_listening()
    assert gw.url.startswith("https://0.0.0.0:")
    cert, key = data / "tls" / "gateway.crt", data / "tls" / "gateway.key"
    assert key.stat().st_mode & 0o777 == 0o600
    first = file_fingerprint(cert)
    assert "self-signed" in gw.cert_line and first in gw.cert_line
    trusting = ssl.create_default_context(cafile=str(cert))  # trust the file, verification on
    for host in ("127.0.0.1", "localhost"):
        status, headers, _ = get(f"https://{host}:{gw.port}/healthz", trusting)
        assert status == 200 and "Strict-Transport-Security" in headers
    gw.stop()

    again = gateways(data, VBM_GATEWAY__HOST="0.0.0.0")
    again.wait_listening()
    assert file_fingerprint(cert) == first and first in again.cert_line
    assert get(f"https://127.0.0.1:{again.port}/healthz", trusting)[0] == 200


def test_loopback_stays_plain_http_without_hsts(gateways: Any, tmp_path: Path) -> None:
    gw = gateways(tmp_path / "data", VBM_GATEWAY__HOST="127.0.0.1")
    gw.wait_listening()
    assert gw.url.startswith("http://") and not gw.cert_line
    status, headers, _ = get(f"http://127.0.0.1:{gw.port}/healthz")
    assert status == 200 and "Strict-Transport-Security" not in headers
    assert not (tmp_path / "data" / "tls").exists()


def test_off_on_all_addresses_is_plain_http_with_a_warning(gateways: Any, tmp_path: Path) -> None:
    gw = gateways(tmp_path / "data", VBM_GATEWAY__HOST="0.0.0.0", VBM_GATEWAY__TLS="off")
    gw.wait_listening()
    assert gw.url.startswith("http://")
    assert "Strict-Transport-Security" not in get(f"http://127.0.0.1:{gw.port}/healthz")[1]
    gw.stop()
    assert "gateway.tls is off on 0.0.0.0" in gw.stderr()


def test_a_key_of_another_certificate_stops_the_gateway(gateways: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = tmp_path / "gw.pem", tmp_path / "other.key"
    ca.issue_cert("localhost").cert_chain_pems[0].write_to_path(str(cert))
    ca.issue_cert("localhost").private_key_pem.write_to_path(str(key))
    gw = gateways(tmp_path / "data", VBM_GATEWAY__TLS_CERT=str(cert), VBM_GATEWAY__TLS_KEY=str(key))
    assert gw.proc.wait(60) == 2
    gw.stop()
    err = gw.stderr()
    assert "gateway.tls_key (VBM_GATEWAY__TLS_KEY)" in err and "does not belong" in err
    assert "Traceback" not in err and "PRIVATE KEY" not in err


def test_bad_configurations_name_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("VBM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("VBM_DATA_DIR", str(tmp_path))
    pem = tmp_path / "cert.pem"
    pem.write_text("not a certificate")
    monkeypatch.setenv("VBM_GATEWAY__TLS_CERT", str(pem))
    with pytest.raises(ConfigError, match=r"gateway.tls_cert is set but gateway.tls_key is not"):
        load_settings()
    monkeypatch.delenv("VBM_GATEWAY__TLS_CERT")
    monkeypatch.setenv("VBM_GATEWAY__TLS_KEY", str(pem))
    with pytest.raises(ConfigError, match=r"VBM_GATEWAY__TLS_CERT"):
        load_settings()
    monkeypatch.setenv("VBM_GATEWAY__TLS_CERT", str(pem))
    monkeypatch.setenv("VBM_GATEWAY__TLS", "off")
    with pytest.raises(ConfigError, match=r"gateway.tls is off but"):
        load_settings()

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    cert, key = tmp_path / "ok.pem", tmp_path / "ok.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    missing = tmp_path / "missing.key"
    cases = [
        (cert, missing, r"gateway.tls_key \(VBM_GATEWAY__TLS_KEY\): cannot read .*missing.key"),
        (pem, key, r"gateway.tls_cert \(VBM_GATEWAY__TLS_CERT\): .* holds no PEM certificate"),
        (cert, cert, r"gateway.tls_key \(VBM_GATEWAY__TLS_KEY\): .* holds no PEM private key"),
    ]
    for c, k, message in cases:
        with pytest.raises(ConfigError, match=message):
            server_tls(GatewaySettings(tls_cert=c, tls_key=k), tmp_path)
    unreadable = tmp_path / "unreadable.key"
    unreadable.write_bytes(key.read_bytes())
    unreadable.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(ConfigError, match=r"cannot read .*unreadable.key: Permission denied"):
            server_tls(GatewaySettings(tls_cert=cert, tls_key=unreadable), tmp_path)
    assert server_tls(GatewaySettings(tls_cert=cert, tls_key=key), tmp_path) is not None


def test_vbm_up_on_all_addresses_serves_https_and_prints_the_fingerprint(tmp_path: Path) -> None:
    """`vbm up` reads the gateway's https address and certificate lines; its banner shows both."""
    data, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env.update(
        VBM_DATA_DIR=str(data),
        VBM_GATEWAY__HOST="0.0.0.0",
        VBM_GATEWAY__PORT=str(port),
        VBM_NATS__EMBEDDED_PORT=str(free_port()),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "up", "--no-lab"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not any("Ctrl-C stops everything" in line for line in lines):
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        banner = "".join(lines)
        cert = data / "tls" / "gateway.crt"
        assert f"vbm is up. Web UI: https://0.0.0.0:{port}/" in banner
        assert f"REST API: https://0.0.0.0:{port}/api/v1" in banner
        assert f"TLS certificate: {cert} (self-signed" in banner and file_fingerprint(cert) in banner
        trusting = ssl.create_default_context(cafile=str(cert))
        status, headers, _ = get(f"https://localhost:{port}/healthz", trusting)
        assert status == 200 and "Strict-Transport-Security" in headers
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == 0


def test_a_damaged_or_foreign_self_signed_certificate_is_made_again(tmp_path: Path) -> None:
    where = tmp_path / "tls"
    first = server_tls(GatewaySettings(host="0.0.0.0", tls="auto"), tmp_path)
    assert first is not None and first.generated and first.cert == where / "gateway.crt"
    assert server_tls(GatewaySettings(host="0.0.0.0"), tmp_path).fingerprint == first.fingerprint  # type: ignore[union-attr]
    # another bind address the certificate does not name: a new one that names it
    moved = server_tls(GatewaySettings(host="192.0.2.7"), tmp_path)
    assert moved is not None and moved.fingerprint != first.fingerprint
    (where / "gateway.crt").write_text("garbage")
    again = server_tls(GatewaySettings(host="192.0.2.7"), tmp_path)
    assert again is not None and again.generated and again.fingerprint != moved.fingerprint
    assert server_tls(GatewaySettings(host="127.0.0.1", tls="on"), tmp_path) is not None
    assert server_tls(GatewaySettings(host="127.0.0.1"), tmp_path) is None
