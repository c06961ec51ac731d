#!/usr/bin/env python3
"""An example client of vbm's REST API, with nothing but Python's standard library (3.8+), so it
runs anywhere: it creates a backup job, runs it, follows the run over Server-Sent Events until it
ends, then prints the manifest of each restore point the run made (every file with its SHA-256).

    VBM_KEY=vbm_... python3 vbm_client.py --vcenter vc1 --vm web [--url http://127.0.0.1:8420]

Progress goes to stderr, the manifests (JSON) to stdout. The shapes it reads are in the API
reference (GET /api/v1/docs) and docs/api.md ("Live events", "Retries and concurrent edits").
"""

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid

RUN_FINAL = ("succeeded", "warning", "partial", "failed", "cancelled")


class Api:
    def __init__(self, url, key, context=None):
        self.url = url.rstrip("/") + "/api/v1"
        self.key = key
        self.context = context

    def request(self, method, path, body=None, headers=None, timeout=30):
        """The open response of one request; a problem (4xx, 5xx) is raised as SystemExit with
        its detail (RFC 9457: every error answer is application/problem+json)."""
        data = None if body is None else json.dumps(body).encode()
        sent = {"X-API-Key": self.key, "Accept": "application/json", **(headers or {})}
        if data is not None:
            sent["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=sent, method=method)
        try:
            return urllib.request.urlopen(req, timeout=timeout, context=self.context)
        except urllib.error.HTTPError as exc:
            try:
                problem = json.load(exc)
            except ValueError:
                problem = {"detail": exc.reason}
            raise SystemExit(f"{method} {path}: {exc.code} {problem.get('detail')}") from None

    def call(self, method, path, body=None, headers=None):
        with self.request(method, path, body, headers) as resp:
            return json.load(resp)


def read_events(resp):
    """The events of a text/event-stream, one dict per event: {"event", "data", "id"}; comment
    lines (": connected", ": heartbeat") are handed on as {"comment": text}."""
    fields = {}
    for raw in resp:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            fields[name] = fields[name] + "\n" + value if name == "data" and "data" in fields else value
        elif fields:  # a blank line ends an event
            yield fields
            fields = {}


def follow(api, run_id, timeout):
    """Wait for the run to end over GET /events?run=ID; the run's final state."""
    last_id = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id  # a reconnect: every event after it, none twice
        with api.request("GET", f"/events?run={run_id}", headers=headers, timeout=60) as resp:
            for event in read_events(resp):
                if event.get("comment") == "connected":
                    # subscribed now: a run that ended before that sends no more events, so ask
                    run = api.call("GET", f"/runs/{run_id}")
                    if run["finished"]:
                        return run["state"]
                if "data" not in event:
                    continue
                last_id = event.get("id", last_id)
                data = json.loads(event["data"])
                kind = event.get("event")
                if kind == "progress":
                    if data["bytes_total"]:  # a sample per second or so while bytes move
                        percent = 100 * data["bytes_done"] // data["bytes_total"]
                        say(f"  {data['vm_name']}: {data['phase']} {percent}%")
                elif kind == "task.state":
                    say(f"  {data['vm_name']}: {data['phase']} ({data['state']})")
                elif kind == "run.state":
                    say(f"run {run_id}: {data['state']}")
                    if data["state"] in RUN_FINAL:
                        return data["state"]
                elif kind in ("reset", "dropped"):
                    say(f"  {kind}: {data['reason']}")
                    if kind == "reset":
                        last_id = None
                    break  # connect again
        time.sleep(1)
    raise SystemExit(f"run {run_id} did not end in {timeout} s")


def say(text):
    print(text, file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("VBM_URL", "http://127.0.0.1:8420"))
    parser.add_argument("--key", default=os.environ.get("VBM_KEY"), help="an API key (default: $VBM_KEY)")
    parser.add_argument("--vcenter", required=True, help="a configured vCenter's name")
    parser.add_argument("--vm", action="append", required=True, help="a VM's name (repeatable)")
    parser.add_argument("--name", default=f"example-{uuid.uuid4().hex[:8]}", help="the new job's name")
    parser.add_argument("--repository", help="where its restore points go (default: the server's)")
    parser.add_argument("--cacert", help="a CA file to trust, for a gateway with its own certificate")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the run")
    args = parser.parse_args()
    if not args.key:
        parser.error("give an API key: --key or $VBM_KEY (`vbm apikey create NAME` makes one)")
    context = ssl.create_default_context(cafile=args.cacert) if args.cacert else None
    api = Api(args.url, args.key, context)

    spec = {"name": args.name, "vcenter": args.vcenter, "vms": [{"name": vm} for vm in args.vm]}
    if args.repository:
        spec["repository"] = args.repository
    job = api.call("POST", "/jobs", spec)
    say(f"job {job['name']} ({job['id']}) created")

    # The same key on a retry (a timeout, a lost answer) answers the first 202: no second run.
    once = {"Idempotency-Key": str(uuid.uuid4())}
    started = api.call("POST", f"/jobs/{job['id']}/run", headers=once)
    run_id = started["run_id"]
    say(f"run {run_id} started")

    state = follow(api, run_id, args.timeout)
    run = api.call("GET", f"/runs/{run_id}")
    points = [t["restore_point_id"] for t in run["tasks"] if t.get("restore_point_id")]
    if not points:
        raise SystemExit(f"run {run_id} ended {state} without a restore point: {run.get('error')}")
    for rp in points:
        print(json.dumps(api.call("GET", f"/backups/{rp}/manifest.json"), indent=1))
    return 0 if state in ("succeeded", "warning") else 1


if __name__ == "__main__":
    sys.exit(main())
