"""The OpenAI-compatible request and response types (/v1/completions, /v1/chat/completions, /v1/models).

They follow OpenAI's wire format, so the official clients work unchanged; what a summarizer cannot honour
is refused with a 400 that says so (`n` > 1), and unknown fields are ignored, as OpenAI-compatible servers do.
Two deliberate differences: `temperature` defaults to 0 (greedy, what the promotion gate evaluated), and
`model` in every answer is `name:version`, the registry version that wrote it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from steep.config import ServingConfig
from steep.serving.summarize_schema import NON_SPACE, text_type


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error the server answers, on every route: OpenAI's error shape."""

    error: ErrorDetail


class _Request(BaseModel):
    """Strict, as the schema reads: `0` is no boolean, `"5"` no number; unknown fields are still ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)


def _integral(value: Any) -> Any:
    """2.0 is the integer 2 in JSON Schema, which strict validation would refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _not_a_boolean(value: Any) -> Any:
    """`true == 1` in Python, not in JSON: a boolean is no `n`."""
    if isinstance(value, bool):
        raise ValueError("Input should be 1, not a boolean")
    return value


# What the routes refuse beyond each field's own type, stated in JSON Schema so the document says it too.
_HAS_TEXT = {"type": "string", "pattern": NON_SPACE}
USER_MESSAGE_WITH_TEXT: dict[str, Any] = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"const": "user"},
        "content": {
            "anyOf": [
                _HAS_TEXT,
                {
                    "type": "array",
                    "contains": {"type": "object", "required": ["text"], "properties": {"text": _HAS_TEXT}},
                },
            ]
        },
    },
}
ONE_PROMPT_WHEN_STREAMING: dict[str, Any] = {
    "if": {"required": ["stream"], "properties": {"stream": {"const": True}}},
    "then": {"properties": {"prompt": {"anyOf": [{"type": "string"}, {"type": "array", "maxItems": 1}]}}},
}


def request_types(
    serving: ServingConfig, model_name: str | None = None
) -> tuple[type[BaseModel], type[BaseModel]]:
    """(CompletionRequest, ChatRequest) with the server's limits in their schemas; `model_name`, the served
    model, is the example of `model` (what Swagger UI's "Try it out" sends)."""
    Text = text_type(serving)
    Stop = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
    Tokens = Annotated[int, Field(ge=1, le=serving.max_tokens_limit), BeforeValidator(_integral)]

    class Sampling(_Request):
        model: str = Field(
            description="the served model: `name`, `name:VERSION` or `name:ALIAS` (GET /v1/models)",
            examples=[model_name] if model_name else None,
        )
        max_tokens: Tokens | None = Field(None, description="default: serving.max_new_tokens")
        temperature: float = Field(0.0, ge=0, le=2, description="0 (the default): greedy decoding")
        top_p: float = Field(1.0, gt=0, le=1)
        repetition_penalty: float | None = Field(
            None, ge=1, le=2, description="as vLLM's; > 1 discourages repeating generated tokens. "
            "Default: serving.repetition_penalty (what evaluation scored)",
        )  # fmt: skip
        stop: Stop | Annotated[list[Stop], Field(max_length=4)] | None = None
        stream: bool = False
        n: Annotated[Literal[1], BeforeValidator(_not_a_boolean)] = Field(
            1, description="one choice per prompt"
        )

        def settings(self) -> dict[str, Any]:
            """steep.generation.Request fields, serving's defaults where the request says nothing."""
            stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
            penalty = self.repetition_penalty
            return {
                "max_new_tokens": self.max_tokens or serving.max_new_tokens,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "repetition_penalty": serving.repetition_penalty if penalty is None else penalty,
                "stop": tuple(stops),
            }

    class CompletionRequest(Sampling):
        model_config = ConfigDict(json_schema_extra=ONE_PROMPT_WHEN_STREAMING)

        prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=serving.max_texts)] = Field(
            description="the text to summarize, or a list of texts (one choice each)"
        )

        def texts(self) -> list[str]:
            return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    class TextPart(_Request):
        type: Literal["text"]
        text: Annotated[str, StringConstraints(strict=True, max_length=serving.max_text_chars)]

    class Message(_Request):
        role: Literal["system", "developer", "user", "assistant", "tool"]
        content: Text | Annotated[list[TextPart], Field(min_length=1)] | None = None

        def text(self) -> str:
            if isinstance(self.content, list):
                return "\n".join(part.text for part in self.content)
            return self.content or ""

    class StreamOptions(_Request):
        include_usage: bool = False

    class ChatRequest(Sampling):
        messages: Annotated[list[Message], Field(min_length=1)] = Field(
            description="the last `user` message with text is the text to summarize; the instruction is the "
            "model's own",
            json_schema_extra={"contains": USER_MESSAGE_WITH_TEXT},
        )
        max_completion_tokens: Tokens | None = None
        stream_options: StreamOptions | None = None

        def text(self) -> str | None:
            users = [m for m in self.messages if m.role == "user" and m.text().strip()]
            return users[-1].text() if users else None

        def settings(self) -> dict[str, Any]:
            found = super().settings()
            if self.max_completion_tokens:
                found["max_new_tokens"] = self.max_completion_tokens
            return found

    return CompletionRequest, ChatRequest


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str = Field(description="name:version of the registry version that wrote the text")
    system_fingerprint: str | None = Field(None, description="the MLflow run that trained it")
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="name:version of the registry version that wrote the text")
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatChunk(BaseModel):
    """One server-sent event of a streamed chat completion (`data: {...}`), ended by `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "steep"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
