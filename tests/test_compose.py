"""compose.yaml cannot run here (no Docker engine), so check its shape against the code."""

from pathlib import Path

import yaml

from shared.runtime.supervisor import SERVICES
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def load() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_every_service_runs_its_module() -> None:
    services = load()["services"]
    for name in SERVICES:
        assert services[name]["command"] == ["python", "-m", f"services.{name}"]
        assert (ROOT / "services" / name / "__main__.py").is_file()
    assert {"nats", "postgres"} <= set(services)


def test_environment_names_real_settings() -> None:
    services = load()["services"]
    fields = set(Settings.model_fields)
    for name in SERVICES:
        for key in services[name]["environment"]:
            assert key.startswith("VBM_")
            assert key[4:].split("__")[0].lower() in fields, key
    assert services["gateway"]["environment"]["VBM_GATEWAY__HOST"] == "0.0.0.0"
    assert services["nats"]["command"][0] == "-js"


def test_no_plain_http_on_all_addresses() -> None:
    """Published on every address of the host: only over TLS; plain HTTP only on 127.0.0.1."""
    gateway = load()["services"]["gateway"]
    tls = gateway["environment"].get("VBM_GATEWAY__TLS", "auto")
    for port in gateway["ports"]:
        on_loopback = str(port).startswith("127.0.0.1:")
        assert on_loopback or tls == "on", f"{port} publishes plain HTTP to the network"


def test_monitoring_profile_scrapes_every_service_and_loads_rules_and_dashboard() -> None:
    """`--profile monitoring`: Prometheus scrapes each service's metrics port with vbm's alert
    rules; Grafana gets the data source and the dashboard; neither is published beyond loopback,
    and no service publishes its metrics port."""
    compose = load()
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        assert all(str(p).startswith("127.0.0.1:") for p in services[name]["ports"]), name
        for volume in services[name]["volumes"]:
            source, _target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
            else:
                assert source in compose["volumes"], source
    port = services["gateway"]["environment"]["VBM_METRICS__PORT"]
    for name in SERVICES:
        env = services[name]["environment"]
        assert env["VBM_METRICS__PORT"] == port and env["VBM_METRICS__HOST"] == "0.0.0.0"
        assert all(port not in str(p) for p in services[name].get("ports", [])), f"{name} publishes metrics"

    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    config_dir = ROOT / next(s for s, t in mounts.items() if t == "/etc/prometheus")
    config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    assert all((config_dir / f.split("#")[0].strip()).is_file() for f in config["rule_files"])
    targets = {
        t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]
    }
    targets |= {
        f"{n}:{sd['port']}"
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for n in sd["names"]
    }
    assert targets == {f"{name}:{port}" for name in SERVICES}
    assert all(job["honor_labels"] for job in config["scrape_configs"])  # vbm's own `job` label

    grafana = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    provisioning = ROOT / next(s for s, t in grafana.items() if t == "/etc/grafana/provisioning")
    provider = yaml.safe_load((provisioning / "dashboards" / "vbm.yml").read_text())["providers"][0]
    dashboards = [s for s, t in grafana.items() if t.startswith(provider["options"]["path"] + "/")]
    assert dashboards == ["./deploy/grafana/vbm.json"]
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
