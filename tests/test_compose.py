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
