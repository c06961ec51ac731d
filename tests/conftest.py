"""Test-wide fixtures: each real component lives in its own plugin module under tests/plugins."""

pytest_plugins = [
    "tests.plugins.procs",
    "tests.plugins.faultproxy",
    "tests.plugins.nats",
    "tests.plugins.lab",
    "tests.plugins.s3",
    "tests.plugins.azurite",
    "tests.plugins.sftp",
    "tests.plugins.rclone",
    "tests.plugins.postgres",
    "tests.plugins.smtp",
    "tests.plugins.webhook",
    "tests.plugins.telegram",
    "tests.plugins.tmpfs",
    "tests.plugins.mounts",
    "tests.plugins.smbd",
    "tests.plugins.ganesha",
]

import pytest  # noqa: E402

# Tests that measure the speed of what they watch (a throttle's rate, a slow datastore's latency
# against the other's): `make test` runs them after the rest, alone on the machine, while every
# other file runs on two workers (docs/testing.md, "Two workers").
SERIAL = ("tests/lab/test_throttle.py", "tests/pipeline/test_scheduling.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(SERIAL):
            item.add_marker(pytest.mark.serial)
