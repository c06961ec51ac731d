from pathlib import Path

import pytest

from shared.settings import ConfigError, load_settings, unknown_variables


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("VBM_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("VBM_DATA_DIR", str(tmp_path))


def test_defaults_are_embedded(tmp_path: Path) -> None:
    s = load_settings()
    assert s.data_dir == tmp_path
    assert s.db_url == f"sqlite:///{tmp_path / 'vbm.db'}"
    assert s.nats.url is None
    assert s.nats.server_url() == "nats://127.0.0.1:4223"
    assert s.vcenters == ()


def test_env_nested_and_json_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VBM_GATEWAY__PORT", "9001")
    monkeypatch.setenv("VBM_NATS__URL", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv(
        "VBM_VCENTERS", '[{"name":"vc1","url":"https://vc1/sdk/","username":"u","password":"p"}]'
    )
    s = load_settings()
    assert s.gateway.port == 9001
    assert s.nats.server_url() == "nats://a:4222,nats://b:4222"
    assert s.vcenters[0].url == "https://vc1/sdk"
    assert s.vcenters[0].password.get_secret_value() == "p"


def test_toml_file_in_data_dir_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vbm.toml").write_text('log_level = "DEBUG"\n[gateway]\nport = 7000\n')
    assert load_settings().gateway.port == 7000
    assert load_settings().log_level == "DEBUG"
    monkeypatch.setenv("VBM_GATEWAY__PORT", "7001")
    assert load_settings().gateway.port == 7001


def test_vbm_config_names_a_missing_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VBM_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="not a file"):
        load_settings()


def test_bad_value_names_the_field_and_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VBM_GATEWAY__PORT", "99999")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert "gateway.port" in str(exc.value)
    assert "VBM_GATEWAY__PORT" in str(exc.value)


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("VBM_NATS__URL", "http://x:4222", "nats://"),
        ("VBM_VCENTERS", '[{"name":"a","url":"vc1","username":"u","password":"p"}]', "https://"),
        ("VBM_LOG_LEVEL", "LOUD", "log_level"),
        ("VBM_LOG_FORMAT", "xml", "log_format"),
        ("VBM_OTEL__ENDPOINT", "collector:4318", "otel.endpoint.*http://"),
        ("VBM_OTEL__SAMPLE_RATIO", "2", "otel.sample_ratio"),
    ],
)
def test_wrong_input_is_refused(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str | None
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=needle):
        load_settings()


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vbm.toml").write_text("gatway_port = 1\n")
    with pytest.raises(ConfigError, match="gatway_port"):
        load_settings()


def test_duplicate_vcenter_names(monkeypatch: pytest.MonkeyPatch) -> None:
    vc = '{"name":"a","url":"https://a/sdk","username":"u","password":"p"}'
    monkeypatch.setenv("VBM_VCENTERS", f"[{vc},{vc}]")
    with pytest.raises(ConfigError, match="unique"):
        load_settings()


def test_secrets_are_masked() -> None:
    s = load_settings(
        vcenters=[{"name": "a", "url": "https://a/sdk", "username": "u", "password": "hunter2"}]
    )
    assert "hunter2" not in str(s.public_dict())
    assert "hunter2" not in repr(s)


def test_typos_in_variable_names_are_reported() -> None:
    env = {"VBM_GATEWAY__PORT": "1", "VBM_GATWAY__PORT": "1", "VBM_CONFIG": "x", "PATH": "/"}
    assert unknown_variables(env) == ["VBM_GATWAY__PORT"]
