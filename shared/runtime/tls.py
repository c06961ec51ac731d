"""The gateway over TLS: which certificate it serves, read and checked at the door, or made.

`server_tls(gateway, data_dir)` decides (docs/design.md, "The gateway over TLS"):
- `tls_cert`/`tls_key` configured (and `tls` not off): that pair, checked (readable, PEM, the key
  belongs to the certificate) or a ConfigError naming the setting;
- `tls = "auto"` on a loopback address: plain HTTP (None);
- otherwise (`auto` on any other address, or `on`): the self-signed certificate under
  `<data_dir>/tls/`, made on first start (key 0600) and reused on later starts while it still names
  the host; clients trust that file, never "verification off";
- `tls = "off"`: plain HTTP, with a warning when the address is not loopback.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.settings import ConfigError, GatewaySettings

log = logging.getLogger(__name__)

CERT_NAME = "gateway.crt"
KEY_NAME = "gateway.key"
VALID_DAYS = 3650
HSTS = "max-age=31536000"


def tls_dir(data_dir: Path) -> Path:
    """Where the self-signed certificate and its key live (config backups carry them)."""
    return data_dir / "tls"


@dataclass(frozen=True)
class ServedTLS:
    """What the gateway serves over TLS."""

    context: ssl.SSLContext
    cert: Path
    fingerprint: str  # SHA-256 of the leaf certificate (DER), AA:BB:...
    generated: bool  # vbm's own self-signed certificate


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def server_tls(gateway: GatewaySettings, data_dir: Path) -> ServedTLS | None:
    """The TLS the gateway serves with, or None for plain HTTP. ConfigError on a bad pair."""
    if gateway.tls == "off":
        if not is_loopback(gateway.host):
            log.warning(
                "gateway.tls is off on %s: passwords, session cookies and API keys cross the network"
                " in the clear; serve TLS (gateway.tls auto/on) or listen on 127.0.0.1",
                gateway.host,
            )
        return None
    if gateway.tls_cert is not None and gateway.tls_key is not None:
        return load_pair(gateway.tls_cert, gateway.tls_key, ("gateway.tls_cert", "gateway.tls_key"))
    if gateway.tls == "auto" and is_loopback(gateway.host):
        return None
    return self_signed(gateway.host, tls_dir(data_dir))


def _setting_env(setting: str) -> str:
    return "VBM_" + setting.upper().replace(".", "__")


def load_pair(cert_path: Path, key_path: Path, names: tuple[str, str]) -> ServedTLS:
    cert_name, key_name = names
    certs = _read(cert_path, cert_name)
    try:
        cert = x509.load_pem_x509_certificates(certs)[0]
    except ValueError:
        raise ConfigError(
            f"{cert_name} ({_setting_env(cert_name)}): {cert_path} holds no PEM certificate"
        ) from None
    try:
        key = serialization.load_pem_private_key(_read(key_path, key_name), password=None)
    except (ValueError, TypeError) as exc:
        why = (
            "is encrypted (give it unencrypted)" if isinstance(exc, TypeError) else "holds no PEM private key"
        )
        raise ConfigError(f"{key_name} ({_setting_env(key_name)}): {key_path} {why}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        raise ConfigError(
            f"{key_name} ({_setting_env(key_name)}): the key in {key_path} does not belong to the"
            f" certificate in {cert_path} ({cert_name})"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        raise ConfigError(f"{cert_name}: {cert_path} and {key_path} are not usable: {exc.reason}") from None
    return ServedTLS(context, cert_path, fingerprint(cert), generated=False)


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{setting} ({_setting_env(setting)}): cannot read {path}: {exc.strerror}"
        ) from None


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def file_fingerprint(cert_path: Path) -> str:
    return fingerprint(x509.load_pem_x509_certificates(cert_path.read_bytes())[0])


def host_names(host: str) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) the self-signed certificate names: the machine, the bind address
    (when it is one address, not all) and localhost."""
    dns = ["localhost", socket.gethostname()]  # not getfqdn(): a DNS lookup that can hang a start
    ips = ["127.0.0.1", "::1"]
    try:
        addr = ipaddress.ip_address(host)
        if not addr.is_unspecified and str(addr) not in ips:
            ips.append(str(addr))
    except ValueError:
        if host and host not in dns:
            dns.append(host)
    return [d for d in dns if d], ips


def self_signed(host: str, where: Path) -> ServedTLS:
    """vbm's own certificate under `where`: reused while it names the host, else made (under a
    lock, so gateways starting together on one data directory serve one certificate)."""
    try:
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (where / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return _reuse_or_make(host, where)
    except OSError as exc:
        raise ConfigError(
            f"cannot keep the gateway's self-signed certificate in {where}: {exc.strerror}; make it"
            " writable, or configure gateway.tls_cert and gateway.tls_key"
        ) from None


def _reuse_or_make(host: str, where: Path) -> ServedTLS:
    cert_path, key_path = where / CERT_NAME, where / KEY_NAME
    dns, ips = host_names(host)
    names = ("the generated certificate", "the generated key")
    if cert_path.is_file() and key_path.is_file():
        try:
            cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
            usable = _covers(cert, dns, ips) and cert.not_valid_after_utc > dt.datetime.now(dt.UTC)
        except ValueError:
            usable = False
        if usable:
            try:
                return load_pair(cert_path, key_path, names)
            except ConfigError as exc:
                log.warning("%s", exc)
        log.warning(
            "the self-signed certificate in %s is unusable, does not name %s or has expired: making one",
            where,
            host,
        )
    _make(cert_path, key_path, dns, ips)
    served = load_pair(cert_path, key_path, names)
    log.warning(
        "made a self-signed certificate for the gateway: %s, SHA-256 fingerprint %s; clients trust"
        " this file (or configure gateway.tls_cert/tls_key)",
        cert_path,
        served.fingerprint,
    )
    return ServedTLS(served.context, served.cert, served.fingerprint, generated=True)


def _covers(cert: x509.Certificate, dns: list[str], ips: list[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    return set(dns) <= have_dns and set(ips) <= have_ips


def _make(cert_path: Path, key_path: Path, dns: list[str], ips: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"vbm gateway {dns[1]}")])
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(key_path, key_pem)
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` as a new 0600 file, atomically (a half-written key never serves)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


__all__ = ["HSTS", "ServedTLS", "file_fingerprint", "is_loopback", "server_tls", "tls_dir"]
