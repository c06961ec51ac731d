"""A session with one vCenter: login, calls on one lock with a re-login, task waiting, errors.

Everything in the adapter is blocking (pyVmomi is synchronous); services call it through a thread.
Errors leave it as `VSphereError` with the fault's name, a readable message and whether retrying
could help. Every vSphere task is awaited to its end (or to a deadline, raising `TaskTimeout`,
after which the work may still complete: callers that create things must be ready to find them later).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pyVim import connect
from pyVmomi import vim, vmodl
from pyVmomi.SoapAdapter import SoapStubAdapter
from pyVmomi.VmomiSupport import GetServiceVersions

from shared.observe import tracing
from shared.observe.metrics import VCENTER_CALL, VCENTER_ERRORS
from shared.settings import VCenterSettings

T = TypeVar("T")

RETRYABLE_FAULTS = frozenset(
    {
        "TaskInProgress",
        "ResourceInUse",
        "ResourceBusy",
        "HostCommunication",
        "HostNotConnected",
        "NotAuthenticated",
        "SystemError",
        "RequestCanceled",
        "Timedout",
        "ConcurrentAccess",
    }
)


class VSphereError(Exception):
    """A vSphere call failed. `fault` is the vim fault type (or a transport error's name).
    `settled`: vCenter said its task ended in error, so nothing of it is still under way (unlike
    a timeout or a lost answer, after which the task may still complete)."""

    def __init__(self, message: str, *, fault: str, retryable: bool, settled: bool = False) -> None:
        super().__init__(message)
        self.fault = fault
        self.retryable = retryable
        self.settled = settled


class NotFound(VSphereError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} does not exist", fault="ManagedObjectNotFound", retryable=False)


class TaskTimeout(VSphereError):
    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(
            f"{what} did not finish within {seconds:.0f}s (it may still complete)",
            fault="Timedout",
            retryable=True,
        )


def _fault_name(exc: BaseException) -> str:
    return type(exc).__name__.rsplit(".", 1)[-1]


def _fault_message(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None) or str(exc) or _fault_name(exc)
    return str(msg).strip()


def translate(exc: BaseException, doing: str) -> VSphereError:
    """Any pyVmomi or transport error -> VSphereError saying what we were doing."""
    if isinstance(exc, VSphereError):
        return exc
    if isinstance(exc, vmodl.fault.ManagedObjectNotFound):
        return NotFound(doing)
    if isinstance(exc, (OSError, http.client.HTTPException, socket.timeout)):
        return VSphereError(
            f"{doing}: vCenter unreachable ({_fault_message(exc)})",
            fault=_fault_name(exc),
            retryable=True,
        )
    name = _fault_name(exc)
    return VSphereError(
        f"{doing}: {name}: {_fault_message(exc)}", fault=name, retryable=name in RETRYABLE_FAULTS
    )


class Session:
    """A session with one vCenter (or ESXi host). Calls are serialised on one lock; the role
    mixins of `client.VCenter` build on `_call`, `_wait` and the managed-object helpers here."""

    def __init__(self, settings: VCenterSettings, *, timeout: float = 60.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._si: Any = None
        self._lock = threading.RLock()
        parts = urlsplit(settings.url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = parts.path or "/sdk"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    # session
    def connect(self) -> None:
        with self._lock:
            if self._si is not None:
                return
            stub: Any = None
            try:
                # SmartConnect's steps, done here so a failed login can close its connections.
                ssl_ctx = ssl_context(self.settings, self.host)
                doing = f"connecting to vCenter {self.settings.name}"
                version = _find_version(doing, self.scheme, self.host, self.port, self.path, ssl_ctx)
                stub = SoapStubAdapter(
                    host=self.host,
                    port=self.port if self.scheme == "https" else -self.port,  # <0: plain HTTP
                    path=self.path,
                    version=version,
                    sslContext=ssl_ctx,
                    httpConnectionTimeout=self.timeout,
                    connectionPoolTimeout=self.timeout,
                )
                si = vim.ServiceInstance("ServiceInstance", stub)
                content = si.RetrieveContent()
                assert content.sessionManager is not None
                content.sessionManager.Login(
                    self.settings.username, self.settings.password.get_secret_value(), None
                )
                self._si = si
            except vim.fault.InvalidLogin:
                _drop(stub)
                raise VSphereError(
                    f"vCenter {self.settings.name} refused the login of {self.settings.username}:"
                    " check the username and password",
                    fault="InvalidLogin",
                    retryable=False,
                ) from None
            except Exception as exc:
                _drop(stub)
                err = translate(exc, f"connecting to vCenter {self.settings.name}")
                if not isinstance(exc, vmodl.MethodFault):
                    err.retryable = True  # pyVmomi says "is down or is not a VIM server"
                raise err from None

    def about(self) -> str:
        """What the server says it is, e.g. `VMware vCenter Server 8.0.2 build-...`."""
        return str(self._call("reading what the server is", lambda: self._content().about.fullName))

    def close(self) -> None:
        with self._lock:
            if self._si is not None:
                with contextlib.suppress(Exception):  # the session is going anyway
                    self._si.content.sessionManager.Logout()
                _drop(self._si._stub)
                self._si = None

    def session_cookie(self) -> str:
        """The `vmware_soap_session` cookie value, for datastore HTTP access."""
        self.connect()
        cookie: str = self._si._stub.cookie
        return cookie.split("=", 1)[1].split(";", 1)[0] if "=" in cookie else cookie

    def _call(self, doing: str, fn: Callable[[], T]) -> T:
        """Run `fn` with a session; re-login once if the session expired. Every call is a span
        named by the adapter method that makes it (`vcenter create_snapshot`), in a trace only,
        timed and its faults counted (`vbm_vcenter_call_*`) by that method (a bounded set,
        unlike `doing`, which names VMs)."""
        method = sys._getframe(1).f_code.co_name
        started = time.monotonic()
        try:
            with tracing.span(f"vcenter {method}", within=True, vcenter=self.settings.name, doing=doing):
                return self._call_once(doing, fn)
        except VSphereError as exc:
            VCENTER_ERRORS.labels(vcenter=self.settings.name, method=method, fault=exc.fault).inc()
            raise
        finally:
            took = time.monotonic() - started
            VCENTER_CALL.labels(vcenter=self.settings.name, method=method).observe(took)

    def _call_once(self, doing: str, fn: Callable[[], T]) -> T:
        with self._lock:
            for attempt in (1, 2):
                self.connect()
                try:
                    return fn()
                except vim.fault.NotAuthenticated:
                    _drop(self._si._stub)
                    self._si = None
                    if attempt == 2:
                        raise VSphereError(
                            f"{doing}: session lost", fault="NotAuthenticated", retryable=True
                        ) from None
                except Exception as exc:
                    if isinstance(exc, (OSError, http.client.HTTPException)):
                        _drop(self._si._stub)  # the connection is suspect: start a new session
                        self._si = None
                    raise translate(exc, doing) from None
        raise AssertionError("unreachable")

    def _content(self) -> Any:
        return self._si.RetrieveContent()

    def _vm(self, moref: str) -> Any:
        vm = vim.VirtualMachine(moref, self._si._stub)
        try:
            vm.name  # noqa: B018 - fetch once to prove it exists
        except vmodl.fault.ManagedObjectNotFound:
            raise NotFound(f"VM {moref}") from None
        return vm

    def _snapshot(self, moref: str) -> Any:
        return vim.vm.Snapshot(moref, self._si._stub)

    def _wait(self, task: Any, what: str, timeout: float | None) -> Any:
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        delay = 0.05
        while True:
            info = task.info
            if info.state == vim.TaskInfo.State.success:
                return info.result
            if info.state == vim.TaskInfo.State.error:
                err = translate(info.error, what)
                err.settled = True
                raise err
            if time.monotonic() >= deadline:
                raise TaskTimeout(what, limit)
            time.sleep(delay)
            delay = min(1.0, delay * 1.5)


def ssl_context(settings: VCenterSettings, host: str) -> ssl.SSLContext | None:
    """How vbm checks a vCenter's certificate: against its CA (`ca_file` or `ca_pem`), else the
    system's CAs (None: pyVmomi's default; not checked on loopback, as pyVmomi does); not at all
    with `verify_tls` false."""
    if settings.verify_tls and (settings.ca_file or settings.ca_pem):
        return ssl.create_default_context(cafile=settings.ca_file, cadata=settings.ca_pem)
    ctx: ssl.SSLContext | None = connect.getSslContext(host, None, not settings.verify_tls)
    return ctx


def _bad(message: str, *, retryable: bool = False) -> VSphereError:
    return VSphereError(message, fault="InvalidArgument", retryable=retryable)


def _names(found: dict[str, Any]) -> str:
    return ", ".join(sorted(found)) or "none"


def _find_datacenter(content: Any, name: str) -> Any:
    for dc in content.rootFolder.childEntity:
        if isinstance(dc, vim.Datacenter) and dc.name == name:
            return dc
    raise _bad(f"no datacenter {name!r}")


def _datacenter(entity: Any) -> Any:
    node = entity.parent
    while node is not None and not isinstance(node, vim.Datacenter):
        node = node.parent
    return node


def _find_version(doing: str, scheme: str, host: str, port: int, path: str, ssl_ctx: Any) -> str:
    """The newest API version both pyVmomi and the server speak (as SmartConnect finds it); a
    failure says which vCenter (names, not URLs, are what people know them by)."""
    find = getattr(connect, "__FindSupportedVersion")
    preferred = GetServiceVersions("vim25")
    version = find(scheme, host, port, path, preferred, ssl_ctx, None, 80, None)
    if version is None:
        raise VSphereError(
            f"{doing}: {scheme}://{host}:{port}{path} is down or is not a vSphere API endpoint",
            fault="NotVSphere",
            retryable=True,
        )
    return str(version)


def _drop(stub: Any) -> None:
    """Close a stub's pooled connections (pyVmomi leaves them open on failed logins)."""
    if stub is not None:
        with contextlib.suppress(Exception):
            stub.DropConnections()
