"""ASGI middleware in front of BentoML's app: the web page at `/`, BentoML's Swagger UI at `/docs` and its
OpenAPI document at `/docs.json`, the API-key check (the rule itself is steep.serving.auth) and the request
body cap. Their refusals use the API's error shape (OpenAI's), as the OpenAPI document declares."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steep.config import ServingConfig
from steep.serving.auth import api_key, authorized, is_open

ASGIApp = Callable[..., Any]


class WebPageMiddleware:
    """Serves the web page at `/`, moves BentoML's Swagger page, which lives at `/`, to `/docs`, and serves
    `document()` as the OpenAPI document at `/docs.json` when given."""

    def __init__(
        self, app: ASGIApp, page: Path, document: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self.app = app
        self.page = page.read_bytes()
        self.document = document

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            if path == "/" and scope.get("method") in ("GET", "HEAD"):
                await _respond(send, 200, self.page, "text/html; charset=utf-8")
                return
            if path == "/docs.json" and self.document is not None and scope.get("method") in ("GET", "HEAD"):
                await _respond(send, 200, json.dumps(self.document()).encode(), "application/json")
                return
            if path == "/docs":
                scope = {**scope, "path": "/", "raw_path": b"/"}
        await self.app(scope, receive, send)


class ApiKeyMiddleware:
    """Refuses a request without the API key (401), except on the open paths: health, metrics, page, docs."""

    def __init__(self, app: ASGIApp, serving: ServingConfig) -> None:
        self.app = app
        # read when the server starts, not when `bentoml build` imports the service
        self.key = api_key(serving)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and self.key is not None and not is_open(scope.get("path", "")):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if not authorized(headers, self.key):
                body = error_body(
                    "missing or wrong API key: send it as the X-API-Key header "
                    "(or Authorization: Bearer KEY)",
                    "invalid_request_error",
                    "invalid_api_key",
                )
                await _respond(send, 401, body, "application/json", [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses a request body over serving.max_body_bytes with 413, before anything reads or parses it.

    A declared length is judged at once; a body without one (chunked) is read here, up to the limit, and
    handed on whole, so the refusal never has to interrupt an app that already started reading (or answering).
    """

    def __init__(self, app: ASGIApp, serving: ServingConfig) -> None:
        self.app = app
        self.limit = serving.max_body_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:  # the server holds the body to its declared length
            if declared.isdigit() and int(declared) > self.limit:
                await _too_large(send, self.limit)
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await _too_large(send, self.limit)
                return
            if not message.get("more_body", False):
                break
        whole = [{"type": "http.request", "body": bytes(body), "more_body": False}]

        async def replayed() -> dict:
            return whole.pop() if whole else await receive()  # then whatever comes next: a disconnect

        await self.app(scope, replayed, send)


async def _too_large(send: Callable, limit: int) -> None:
    body = error_body(
        f"the request body is over {limit} bytes (serving.max_body_bytes): send fewer or shorter texts",
        "invalid_request_error",
        "request_too_large",
    )
    await _respond(send, 413, body, "application/json")


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    """OpenAI's error shape, as steep.serving.api answers it."""
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


async def _respond(
    send: Callable,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
