"""The gateway's running-app fixture for the mounts' API tests."""

from tests.gateway.conftest import make_api  # noqa: F401  (a fixture)
