"""The middleware in front of BentoML's app, stacked as the service stacks it, over a stand-in app."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from steep.config import ServingConfig
from steep.serving.middleware import ApiKeyMiddleware, WebPageMiddleware


async def echo(request):
    return PlainTextResponse(f"inner {request.url.path}")


INNER = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])


@pytest.fixture
def page(tmp_path):
    path = tmp_path / "index.html"
    path.write_text("<h1>page</h1>")
    return path


@pytest.mark.parametrize("page_outside", [True, False], ids=["page-outside", "key-outside"])
def test_the_page_moves_docs_and_the_key_is_checked_in_either_order(page, monkeypatch, page_outside):
    monkeypatch.setenv("GATE_KEY", "k")
    serving = ServingConfig(api_key_env="GATE_KEY")
    if page_outside:
        app = WebPageMiddleware(ApiKeyMiddleware(INNER, serving=serving), page=page)
    else:
        app = ApiKeyMiddleware(WebPageMiddleware(INNER, page=page), serving=serving)
    client = TestClient(app)
    assert client.get("/").text == "<h1>page</h1>"
    assert client.get("/docs").text == "inner /"  # BentoML's Swagger page lives at its `/`
    assert client.get("/healthz").text == "inner /healthz"
    denied = client.post("/summarize")
    assert denied.status_code == 401 and "X-API-Key" in denied.json()["error"]
    assert denied.headers["www-authenticate"] == "Bearer"
    assert client.post("/summarize", headers={"X-API-Key": "k"}).text == "inner /summarize"
    assert client.post("/summarize", headers={"Authorization": "Bearer k"}).text == "inner /summarize"


def test_without_a_key_everything_passes(page):
    client = TestClient(ApiKeyMiddleware(WebPageMiddleware(INNER, page=page), serving=ServingConfig()))
    assert client.post("/summarize").text == "inner /summarize"
    assert client.get("/").text == "<h1>page</h1>"
