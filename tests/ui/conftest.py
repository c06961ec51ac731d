"""The web UI's tests use the gateway's running-app fixture."""

from tests.gateway.conftest import make_api

__all__ = ["make_api"]
