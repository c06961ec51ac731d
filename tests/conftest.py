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
    "tests.plugins.tmpfs",
    "tests.plugins.mounts",
    "tests.plugins.smbd",
    "tests.plugins.ganesha",
]
