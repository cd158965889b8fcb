"""The inference routes' shortcut past Starlette's router (``server/inference_routes.py``) answers as the router did."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from opsgate.domain.config import parse_config
from opsgate.domain.errors import InvalidRequestError
from opsgate.server.app import create_app

CONFIG = {
    "models": [{"name": "m", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}]}],
    "record": {"store": "none"},
}


def test_inference_routes_answer_as_the_router_did() -> None:
    app = create_app(parse_config(CONFIG))
    seen: list[dict[str, Any]] = []
    raising: list[Exception] = []

    async def handle(endpoint: str, request: Request) -> Response:
        scope = request.scope
        route = scope.get("route")  # Starlette's router sets it; middleware naming requests by route reads it
        seen.append(
            {
                "endpoint": endpoint,
                "router": scope["router"] is app.router,
                "params": scope["path_params"],
                "route": getattr(route, "path", None),
            }
        )
        if raising:
            raise raising.pop()
        return Response(b"{}", media_type="application/json")

    app.state.gateway.handle = handle

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            answers = [await client.post(path, content=b"{}") for path in ("/v1/chat/completions", "/v1/embeddings")]
            # A route's GatewayError is answered by the app's handler; anything else is the 500 of the last resort.
            raising.append(InvalidRequestError("no good", code="made_up"))
            answers.append(await client.post("/v1/completions", content=b"{}"))
            raising.append(RuntimeError("a bug"))
            answers.append(await client.post("/v1/completions", content=b"{}"))
            # Not an exact POST match: the router's own answers (405, 404), as before.
            answers.append(await client.get("/v1/chat/completions"))
            answers.append(await client.post("/v1/chat/completions/", content=b"{}"))
            return answers

    ok, embedding, refused, failed, wrong_method, trailing = asyncio.run(calls())
    assert ok.status_code == 200 and embedding.status_code == 200
    assert [s["endpoint"] for s in seen[:2]] == ["chat", "embedding"]
    assert all(s["router"] and s["params"] == {} for s in seen)
    assert [s["route"] for s in seen[:2]] == ["/v1/chat/completions", "/v1/embeddings"]  # review: was unset
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "made_up"
    assert failed.status_code == 500 and "Internal error" in failed.json()["error"]["message"]
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert trailing.status_code in (307, 404)
    assert len(seen) == 4  # neither the GET nor the trailing slash reached the handler
