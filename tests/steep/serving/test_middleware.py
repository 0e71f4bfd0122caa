"""The middleware in front of BentoML's app, stacked as the service stacks it, over a stand-in app."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from steep.config import ServingConfig
from steep.serving.middleware import ApiKeyMiddleware, BodyLimitMiddleware, WebPageMiddleware


async def echo(request):
    return PlainTextResponse(f"inner {request.url.path}")


async def size(request):
    return PlainTextResponse(f"read {len(await request.body())} bytes")


INNER = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])
READER = Starlette(routes=[Route("/{path:path}", size, methods=["POST"])])


def openai_error(response, status: int) -> dict:
    assert response.status_code == status and response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


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
    found = openai_error(denied, 401)
    assert "X-API-Key" in found["message"]
    assert (found["type"], found["code"]) == ("invalid_request_error", "invalid_api_key")
    assert denied.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/chat/completions", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/summarize", headers={"X-API-Key": "k"}).text == "inner /summarize"
    assert client.post("/summarize", headers={"Authorization": "Bearer k"}).text == "inner /summarize"


def test_without_a_key_everything_passes(page):
    client = TestClient(ApiKeyMiddleware(WebPageMiddleware(INNER, page=page), serving=ServingConfig()))
    assert client.post("/summarize").text == "inner /summarize"
    assert client.get("/").text == "<h1>page</h1>"


def test_the_openapi_document_is_served_at_docs_json_when_given(page):
    client = TestClient(WebPageMiddleware(INNER, page=page, document=lambda: {"openapi": "3.1.0"}))
    assert client.get("/docs.json").json() == {"openapi": "3.1.0"}
    assert client.post("/docs.json").text == "inner /docs.json"  # only GET and HEAD are the document's
    assert TestClient(WebPageMiddleware(INNER, page=page)).get("/docs.json").text == "inner /docs.json"


# ------------------------------------------------------------------------------------ body limit
LIMIT = ServingConfig(max_body_bytes=1024)


def test_a_body_over_the_limit_is_refused_by_its_length_before_the_app_sees_it():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["path"])
        await READER(scope, receive, send)

    client = TestClient(BodyLimitMiddleware(app, serving=LIMIT))
    assert client.post("/summarize", content=b"x" * 1024).text == "read 1024 bytes"
    found = openai_error(client.post("/summarize", content=b"x" * 1025), 413)
    assert "1024 bytes" in found["message"] and "serving.max_body_bytes" in found["message"]
    assert found["code"] == "request_too_large"
    assert seen == ["/summarize"]  # the large one never reached the app
    assert client.get("/healthz").status_code == 405  # no body: passed through (READER takes POST only)


def chunked(total: int, chunk: int = 400) -> list[dict]:
    """The ASGI messages of a body sent in chunks without a content-length."""
    sizes = [chunk] * (total // chunk) + ([total % chunk] if total % chunk else [])
    return [
        {"type": "http.request", "body": b"x" * n, "more_body": i < len(sizes) - 1}
        for i, n in enumerate(sizes)
    ]


def call(app, messages: list[dict]) -> tuple[int, bytes]:
    """One POST through an ASGI app, the body as `messages`; -> (status, body)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/summarize", "raw_path": b"/summarize", "query_string": b"", "root_path": "",
        "headers": [(b"transfer-encoding", b"chunked"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    incoming = list(messages)
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_a_chunked_body_is_refused_once_it_passes_the_limit():
    app = BodyLimitMiddleware(READER, serving=LIMIT)
    assert call(app, chunked(1024)) == (200, b"read 1024 bytes")
    status, body = call(app, chunked(3000))
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
