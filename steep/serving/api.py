"""The HTTP API the BentoML service mounts: POST /summarize and the OpenAI-compatible /v1 routes.

One FastAPI app, so one batcher serves every route and the OpenAPI document BentoML serves at /docs.json
declares every answer the app can give: each route lists its error statuses, all in OpenAI's error shape
(`{"error": {"message", "type", "param", "code"}}`), including the validation errors FastAPI would
otherwise answer as 422 with its own body.
"""

import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from steep.config import ServingConfig
from steep.generation import Completion
from steep.serving import ServingError
from steep.serving.batcher import Overloaded
from steep.serving.engine import Engine, ModelNotFound
from steep.serving.model_slot import LoadedModel
from steep.serving.openai_schema import (
    ChatChoice,
    ChatChunk,
    ChatChunkChoice,
    ChatMessage,
    ChatResponse,
    CompletionChoice,
    CompletionResponse,
    Delta,
    ErrorBody,
    ErrorDetail,
    ModelCard,
    ModelList,
    Usage,
    request_types,
)
from steep.serving.summarize_schema import Summary, texts_type

ERRORS: dict[int, str] = {
    400: "the request is malformed or breaks a limit; the message names the field",
    401: "missing or wrong API key",
    404: "no such route, or a model this server does not serve",
    413: "the request body is larger than serving.max_body_bytes",
    500: "the server failed on this request (a bug: the server log has the cause)",
    503: "the model is still loading, or the server could not start the request within "
    "serving.max_latency_ms",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    500: "server_error",
    503: "server_overloaded",
}
SSE = "text/event-stream"
# a field name or a list index in an error's location; the rest are the names pydantic gives the branches of a
# union (`list[TextPart]`, `constrained-str`), no use to a client
_FIELD = re.compile(r"[a-z_]+|\d+")
log = logging.getLogger("steep.serving")


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    body = ErrorBody(
        error=ErrorDetail(
            message=message, type=ERROR_TYPES.get(status, "server_error"), param=param, code=code
        )
    )
    return JSONResponse(body.model_dump(), status_code=status)


def _responses(*statuses: int, stream: type[BaseModel] | None = None) -> dict[int | str, dict[str, Any]]:
    """The error answers a route declares; "4XX" keeps FastAPI from declaring its own 422 shape. `stream`:
    the chunk a `stream: true` answer sends as server-sent events."""
    declared: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorBody, "description": ERRORS[s]} for s in (*statuses, 500)
    }
    declared["4XX"] = {"model": ErrorBody, "description": "any other client error, in the same shape"}
    if stream is not None:
        declared[200] = {
            "content": {SSE: {"schema": _event_schema(stream)}},
            "description": "JSON; with `stream: true`, server-sent events ending with `data: [DONE]`",
        }
    return declared


def _event_schema(chunk: type[BaseModel]) -> dict[str, Any]:
    """One server-sent event, as OpenAPI (before 3.2's itemSchema) reads `schema` for text/event-stream: its
    `data` is a chunk in JSON, an error in OpenAI's shape (after the first byte no status can change), or the
    final `[DONE]`."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"anyOf": [_inline(chunk), _inline(ErrorBody)]},
                    },
                ]
            }
        },
    }


def _inline(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its nested models written in place: no `$defs` for `$ref` to miss."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rpartition("/")[2]])
            return {k: resolve(v) for k, v in node.items()}
        return [resolve(v) for v in node] if isinstance(node, list) else node

    return resolve(schema)


def build_app(serving: ServingConfig, engine: Callable[[], Engine], model_name: str | None = None) -> FastAPI:
    """The API over `engine()` (the service's engine, created when its worker starts); `model_name`, the
    registered model it serves, is the document's example of a request's `model`."""
    app = FastAPI(title="steep summarizer", docs_url=None, redoc_url=None, openapi_url=None)
    CompletionRequest, ChatRequest = request_types(serving, model_name)
    Texts = texts_type(serving)

    class SummarizeRequest(BaseModel):
        texts: Texts  # type: ignore[valid-type]

    _errors(app)

    @app.post("/summarize", response_model=list[Summary], responses=_responses(400, 401, 413, 503))
    async def summarize(body: SummarizeRequest) -> list[Summary]:
        """One text or a list of texts -> one summary per text, in order, each naming its model version."""
        return await engine().summarize(body.texts)

    @app.get("/v1/models", response_model=ModelList, responses=_responses(401, 503))
    async def models() -> ModelList:
        """The served model under every name a request may use: `name`, `name:VERSION`, `name:ALIAS`."""
        served = engine()
        created = int(time.time())
        return ModelList(data=[ModelCard(id=i, created=created) for i in served.model_ids()])

    @app.post(
        "/v1/completions",
        response_model=CompletionResponse,
        responses=_responses(400, 401, 404, 413, 503, stream=CompletionResponse),
    )
    async def completions(body: CompletionRequest) -> Any:  # type: ignore[valid-type]
        """OpenAI's completions: each prompt is a text to summarize; `stream: true` answers with SSE."""
        served = engine()
        version = served.pinned_version(body.model)
        settings = body.settings()
        texts = body.texts()
        reply = _Reply("cmpl")
        if body.stream:
            if len(texts) > 1:
                return error_response(400, "stream: true takes one prompt", "prompt")
            pieces = served.stream(texts[0], reply.id, settings, version)
            return _stream(reply, _model_id(served.slot.current), pieces, chat=False)
        answers = await served.generate(texts, reply.id, settings, version)
        model = answers[0][0]
        return CompletionResponse(
            id=reply.id,
            created=reply.created,
            model=_model_id(model),
            system_fingerprint=model.run_id,
            choices=[
                CompletionChoice(index=i, text=c.text, finish_reason=c.finish_reason)
                for i, (_, c) in enumerate(answers)
            ],
            usage=_usage([c for _, c in answers]),
        )

    @app.post(
        "/v1/chat/completions",
        response_model=ChatResponse,
        responses=_responses(400, 401, 404, 413, 503, stream=ChatChunk),
    )
    async def chat(body: ChatRequest) -> Any:  # type: ignore[valid-type]
        """OpenAI's chat completions: the last user message is the text to summarize."""
        served = engine()
        version = served.pinned_version(body.model)
        text = body.text()
        if text is None:
            return error_response(
                400,
                "no user message with text: send the text to summarize as the "
                "content of a message with role user",
                "messages",
            )
        settings = body.settings()
        reply = _Reply("chatcmpl")
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            pieces = served.stream(text, reply.id, settings, version)
            return _stream(reply, _model_id(served.slot.current), pieces, chat=True, usage=usage)
        [(model, done)] = await served.generate([text], reply.id, settings, version)
        return ChatResponse(
            id=reply.id,
            created=reply.created,
            model=_model_id(model),
            system_fingerprint=model.run_id,
            choices=[
                ChatChoice(index=0, message=ChatMessage(content=done.text), finish_reason=done.finish_reason)
            ],
            usage=_usage([done]),
        )

    return app


class _Reply:
    """The id and creation time one answer carries in every chunk."""

    def __init__(self, kind: str) -> None:
        self.id = f"{kind}-{uuid.uuid4().hex}"
        self.created = int(time.time())


def _model_id(model: LoadedModel) -> str:
    return f"{model.name}:{model.version}"


def _usage(done: list[Completion]) -> Usage:
    prompt = sum(c.prompt_tokens for c in done)
    completion = sum(c.completion_tokens for c in done)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _stream(
    reply: _Reply,
    model_name: str,
    pieces: AsyncIterator[str | tuple[LoadedModel, Completion]],
    *,
    chat: bool,
    usage: bool = False,
) -> StreamingResponse:
    """Server-sent events in OpenAI's chunk format; an error after the first byte becomes an error event."""

    async def events() -> AsyncIterator[str]:
        sent_role = False
        try:
            async for piece in pieces:
                if isinstance(piece, tuple):
                    model, done = piece
                    yield _event(
                        _chunk(reply, _model_id(model), chat, None, done.finish_reason, model.run_id)
                    )
                    if usage:
                        yield _event(
                            _chunk(
                                reply,
                                _model_id(model),
                                chat,
                                None,
                                None,
                                model.run_id,
                                _usage([done]),
                                choices=False,
                            )
                        )
                    break
                if chat and not sent_role:
                    yield _event(_chunk(reply, model_name, chat, "", None, None, role=True))
                    sent_role = True
                yield _event(_chunk(reply, model_name, chat, piece, None, None))
        except Exception as exc:  # after the first byte no status can change: the error is the last event
            if _status(exc) == 500:
                log.exception("a streamed answer failed")
            yield _event(_error_body(exc).model_dump())
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type=SSE, headers={"cache-control": "no-cache"})


def _chunk(
    reply: _Reply,
    model: str,
    chat: bool,
    text: str | None,
    finish: str | None,
    fingerprint: str | None,
    usage: Usage | None = None,
    *,
    role: bool = False,
    choices: bool = True,
) -> dict[str, Any]:
    if chat:
        chunk = ChatChunk(
            id=reply.id,
            created=reply.created,
            model=model,
            system_fingerprint=fingerprint,
            choices=[
                ChatChunkChoice(
                    index=0,
                    delta=Delta(role="assistant" if role else None, content=text),
                    finish_reason=finish,
                )
            ]
            if choices
            else [],
            usage=usage,
        )
        return chunk.model_dump(exclude_none=False)
    return CompletionResponse(
        id=reply.id,
        created=reply.created,
        model=model,
        system_fingerprint=fingerprint,
        choices=[CompletionChoice(index=0, text=text or "", finish_reason=finish)] if choices else [],
        usage=usage,
    ).model_dump()


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _error_body(exc: Exception) -> ErrorBody:
    status = _status(exc)
    message = (
        f"the server failed on this request ({type(exc).__name__}); the server log has the cause"
        if status == 500
        else str(exc)
    )
    return ErrorBody(error=ErrorDetail(message=message, type=ERROR_TYPES[status]))


def _status(exc: Exception) -> int:
    if isinstance(exc, ModelNotFound):
        return 404
    return 503 if isinstance(exc, (Overloaded, ServingError)) else 500


def _errors(app: FastAPI) -> None:
    """Every error in OpenAI's shape, with the status the route declares."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ()) if p != "body"]
            if e.get("type") == "json_invalid":
                problems.append(
                    ("body", f"Invalid JSON in the request body: {e.get('ctx', {}).get('error', e['msg'])}")
                )
                continue
            where = ".".join(p for p in loc if _FIELD.fullmatch(p))
            problems.append((where, e.get("msg", "invalid").removeprefix("Value error, ")))
        message = (
            "; ".join(f"{where}: {msg}" if where else msg for where, msg in problems) or "invalid request"
        )
        return error_response(400, message, problems[0][0] if problems else None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        status = exc.status_code if exc.status_code in ERRORS or exc.status_code == 405 else 400
        answer = error_response(status, str(exc.detail))
        answer.headers.update(exc.headers or {})  # 405's Allow
        return answer

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        """A bug: OpenAI's shape still (Starlette logs the exception once this answer is sent)."""
        return JSONResponse(_error_body(exc).model_dump(), status_code=500)

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        status = _status(exc)
        return error_response(
            status, str(exc), "model" if status == 404 else None, "model_not_found" if status == 404 else None
        )
