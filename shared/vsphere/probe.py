"""A vCenter's connection, tested step by step so that a failure says which step failed and how to
fix it: the name (DNS), the port (TCP), the certificate (TLS), the vSphere API, the login.

Blocking: call it through a thread. It logs in and out once; it never says the password.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import asdict, dataclass
from typing import Literal
from urllib.parse import urlsplit

from shared.settings import VCenterSettings
from shared.vsphere.session import Session, VSphereError, ssl_context

Kind = Literal["ok", "dns", "tcp", "tls", "not_vcenter", "credentials"]

HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH


@dataclass(frozen=True)
class Probe:
    """What a connection test found. `field` names the setting to change when it failed."""

    kind: Kind
    message: str
    field: str | None = None
    server: str | None = None  # what the server says it is, when the login worked

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    def view(self) -> dict[str, object]:
        return {"ok": self.ok, **asdict(self)}


def probe(vc: VCenterSettings, timeout: float = 10.0) -> Probe:
    """Test `vc`'s connection: DNS, TCP, TLS (https only), the vSphere API and the login."""
    parts = urlsplit(vc.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        return Probe("dns", f"the name {host!r} does not resolve ({why}): check the url", "url")
    family, _, _, _, address = addresses[0]
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
    except ConnectionRefusedError:
        sock.close()
        return Probe("tcp", f"{where} refused the connection: nothing listens there (check the port)", "url")
    except TimeoutError:
        sock.close()
        return Probe("tcp", f"{where} did not answer within {timeout:.0f}s (a firewall? the port?)", "url")
    except OSError as exc:
        sock.close()
        return Probe("tcp", f"{where} cannot be reached: {exc.strerror or exc}", "url")
    with sock:
        if parts.scheme == "https":
            failed = _tls(sock, vc, host, where)
            if failed is not None:
                return failed
    return _login(vc, timeout)


def _tls(sock: socket.socket, vc: VCenterSettings, host: str, where: str) -> Probe | None:
    try:
        ctx = ssl_context(vc, host) or ssl.create_default_context()
    except (ssl.SSLError, OSError, ValueError) as exc:
        field = "ca_file" if vc.ca_file else "ca_pem"
        return Probe("tls", f"the CA certificate cannot be read: {exc}", field)
    try:
        with ctx.wrap_socket(sock, server_hostname=host if ctx.check_hostname else None):
            return None
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code == HOSTNAME_MISMATCH:
            message = (
                f"the certificate of {where} does not name {host!r} ({exc.verify_message}): use the name"
                " the certificate was made for in the url, or set verify_tls=false"
            )
            return Probe("tls", message, "url")
        message = (
            f"the certificate of {where} is not trusted ({exc.verify_message}): give the CA that"
            " signed it (ca_pem, or ca_file on the vbm host), or set verify_tls=false"
        )
        return Probe("tls", message, "ca_pem")
    except (ssl.SSLError, OSError) as exc:
        message = f"the TLS handshake with {where} failed ({exc}): does it speak https? (http:// otherwise)"
        return Probe("tls", message, "url")


def _login(vc: VCenterSettings, timeout: float) -> Probe:
    session = Session(vc, timeout=timeout)
    try:
        session.connect()
        server = session.about()
    except VSphereError as exc:
        if exc.fault == "InvalidLogin":
            return Probe("credentials", str(exc), "password")
        message = f"{vc.url} answers but not as vSphere's API (check the url, e.g. https://vcsa/sdk): {exc}"
        return Probe("not_vcenter", message, "url")
    finally:
        with contextlib.suppress(Exception):
            session.close()
    return Probe("ok", f"connected to {vc.name}: {server}", server=server)
