"""A vCenter's connection, tested step by step so that a failure says which step failed and how to
fix it: the name (DNS), the port (TCP), the certificate (TLS), the vSphere API, the login.

Blocking: call it through a thread. It logs in and out once; it never says the password.

Over https the server's certificate is fingerprinted (SHA-256 and SHA-1 of its DER bytes, as
colon-separated upper-case hex, the way vSphere shows thumbprints) whenever the handshake got one:
also when the certificate was not trusted (then fetched again without checking it, only to show
the thumbprint in the message, so the admin can compare it with the vCenter's own).
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal
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
    thumbprint_sha256: str | None = None  # of the server's certificate, when https gave one
    thumbprint_sha1: str | None = None

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
    cert: bytes | None = None
    with sock:
        if parts.scheme == "https":
            failed, cert = _tls(sock, vc, host, where)
            if failed is not None:
                if cert is None:  # refused, so not kept: fetched again without checking it
                    cert = _fetch_cert(family, address, timeout)
                return _with_thumbprints(failed, cert)
    return _with_thumbprints(_login(vc, timeout), cert)


def thumbprints(der: bytes) -> tuple[str, str]:
    """The SHA-256 and SHA-1 thumbprints of a DER certificate, as AA:BB:... (vSphere's form)."""

    def hexed(digest: bytes) -> str:
        return ":".join(f"{b:02X}" for b in digest)

    return hexed(hashlib.sha256(der).digest()), hexed(hashlib.sha1(der).digest())  # SHA-1: vSphere shows it


def _with_thumbprints(result: Probe, der: bytes | None) -> Probe:
    if not der:
        return result
    sha256, sha1 = thumbprints(der)
    message = result.message
    if result.kind == "tls":
        message += (
            f". The server's certificate has the SHA-256 thumbprint {sha256} (SHA-1 {sha1}):"
            " compare it with the vCenter's own before trusting it"
        )
    return replace(result, message=message, thumbprint_sha256=sha256, thumbprint_sha1=sha1)


def _fetch_cert(family: int, address: tuple[Any, ...], timeout: float) -> bytes | None:
    """The server's certificate, not checked: only to show its thumbprint when it was refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.socket(family, socket.SOCK_STREAM) as raw:
            raw.settimeout(timeout)
            raw.connect(address)
            with ctx.wrap_socket(raw) as tls:
                return tls.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError):
        return None


def _tls(
    sock: socket.socket, vc: VCenterSettings, host: str, where: str
) -> tuple[Probe | None, bytes | None]:
    """The handshake's failure (None: it worked) and the server's certificate (None: fetch it)."""
    try:
        ctx = ssl_context(vc, host) or ssl.create_default_context()
    except (ssl.SSLError, OSError, ValueError) as exc:
        field = "ca_file" if vc.ca_file else "ca_pem"
        return Probe("tls", f"the CA certificate cannot be read: {exc}", field), None
    try:
        with ctx.wrap_socket(sock, server_hostname=host if ctx.check_hostname else None) as tls:
            return None, tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code == HOSTNAME_MISMATCH:
            message = (
                f"the certificate of {where} does not name {host!r} ({exc.verify_message}): use the name"
                " the certificate was made for in the url, or set verify_tls=false"
            )
            return Probe("tls", message, "url"), None
        message = (
            f"the certificate of {where} is not trusted ({exc.verify_message}): give the CA that"
            " signed it (ca_pem, or ca_file on the vbm host), or set verify_tls=false"
        )
        return Probe("tls", message, "ca_pem"), None
    except (ssl.SSLError, OSError) as exc:
        message = f"the TLS handshake with {where} failed ({exc}): does it speak https? (http:// otherwise)"
        return Probe("tls", message, "url"), b""  # no certificate to fetch


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
