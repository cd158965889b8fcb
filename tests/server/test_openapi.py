"""``/openapi.json`` covers every registered route, declares path parameters and the bearer key, and is valid."""

from __future__ import annotations

import re

import httpx
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from opsgate import __version__
from opsgate.domain.config import parse_config
from opsgate.server.app import create_app
from opsgate.server.openapi import openapi_document

MODELS = [{"name": "up", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}]}]


def _registered() -> set[tuple[str, str]]:
    """(path template as OpenAPI writes it, method) for every route of a fully built app."""
    app = create_app(parse_config({"models": MODELS, "record": {"store": "sqlite:///:memory:"}}))
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Mount):
            continue  # /ui/static: files, not an API
        assert isinstance(route, Route)
        path = re.sub(r"{(\w+)(:\w+)?}", r"{\1}", route.path)  # {model:path} -> {model}
        found.update((path, method.lower()) for method in route.methods or () if method != "HEAD")
    return found


def test_every_registered_route_is_documented() -> None:
    document = openapi_document(__version__)
    paths = document["paths"].items()
    documented = {(path, method) for path, item in paths for method in item if method != "parameters"}
    assert documented == _registered()


def test_path_parameters_bodies_and_security_are_declared() -> None:
    document = openapi_document(__version__)
    for path, item in document["paths"].items():
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), path
    assert document["paths"]["/v1/models/{model}"]["parameters"][0]["name"] == "model"
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert document["paths"]["/healthz"]["get"]["security"] == []
    erasure = document["paths"]["/admin/erasure"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert erasure == {"$ref": "#/components/schemas/Erasure"}
    assert "messages" in document["components"]["schemas"]["ChatCompletionRequest"]["properties"]


def test_the_document_is_valid_openapi() -> None:
    validate(openapi_document(__version__))  # raises, naming the first problem


def test_served_document_is_the_same(tmp_path: object) -> None:
    from tests.support import start_gateway

    gateway = start_gateway({"models": MODELS})
    try:
        served = httpx.get(gateway.url + "/openapi.json").json()
    finally:
        gateway.server.stop()
    assert served == openapi_document(__version__)
