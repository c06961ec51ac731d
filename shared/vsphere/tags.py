"""vSphere tags, read through vCenter's vAPI REST endpoint (`/rest/com/vmware/cis/...`).

Tags are not in the SOAP API pyVmomi speaks: vCenter serves them over REST, with a session made
from the same credentials (`POST /rest/com/vmware/cis/session`, basic auth) and sent back in
the `vmware-api-session-id` header. What a job selection needs is which tags each VM carries,
as `Category/Tag` names: every category and tag is listed, then the objects each tag is attached
to. The session is deleted afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from shared.vsphere.client import VCenter, VSphereError

BASE = "/rest/com/vmware/cis"


class _Rest:
    def __init__(self, vc: VCenter, timeout: float) -> None:
        self.vc = vc
        self.timeout = timeout
        self.session: str | None = None
        settings = vc.settings
        if vc.scheme == "https":
            if settings.verify_tls:
                self.ssl: ssl.SSLContext | None = ssl.create_default_context(cafile=settings.ca_file)
            else:
                self.ssl = ssl._create_unverified_context()
        else:
            self.ssl = None

    def call(self, method: str, path: str, *, login: bool = False) -> Any:
        headers = {"Accept": "application/json"}
        if login:
            user = self.vc.settings.username
            secret = self.vc.settings.password.get_secret_value()
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
        elif self.session:
            headers["vmware-api-session-id"] = self.session
        req = urllib.request.Request(f"{self.vc.base_url}{BASE}{path}", method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            what = "refused the login" if exc.code in (401, 403) else f"answered HTTP {exc.code}"
            raise VSphereError(
                f"vCenter {self.vc.settings.name}'s tagging API {what} ({method} {BASE}{path})",
                fault="TaggingAPI",
                retryable=exc.code >= 500,
            ) from None
        except (OSError, ValueError) as exc:
            raise VSphereError(
                f"vCenter {self.vc.settings.name}'s tagging API cannot be reached: {exc}",
                fault="TaggingAPI",
                retryable=True,
            ) from None
        return json.loads(body)["value"] if body else None


def attached_tags(vc: VCenter, *, timeout: float = 30.0) -> dict[str, tuple[str, ...]]:
    """VM moref -> the `Category/Tag` names attached to it (VMs without tags are left out)."""
    rest = _Rest(vc, timeout)
    rest.session = rest.call("POST", "/session", login=True)
    try:
        categories = {
            cid: rest.call("GET", f"/tagging/category/id:{cid}")["name"]
            for cid in rest.call("GET", "/tagging/category") or []
        }
        out: dict[str, list[str]] = {}
        for tid in rest.call("GET", "/tagging/tag") or []:
            tag = rest.call("GET", f"/tagging/tag/id:{tid}")
            name = f"{categories.get(tag.get('category_id'), '')}/{tag['name']}"
            for obj in (
                rest.call("POST", f"/tagging/tag-association/id:{tid}?~action=list-attached-objects") or []
            ):
                if obj.get("type") == "VirtualMachine":
                    out.setdefault(obj["id"], []).append(name)
        return {moref: tuple(sorted(names)) for moref, names in out.items()}
    finally:
        with contextlib.suppress(VSphereError):  # the session expires on its own
            rest.call("DELETE", "/session")
