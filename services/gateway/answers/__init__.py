"""Pydantic models of the REST API's answers, for the OpenAPI document (services/gateway/openapi.py)."""
