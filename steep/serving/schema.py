"""The request and response types of POST /summarize.

Validation lives in the types: BentoML checks them per request before adaptive batching, so one bad request
is refused alone (a 400 naming the field) and never fails the requests batched with it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StringConstraints

from steep.config import ServingConfig


@dataclass(frozen=True)
class Item:
    """One validated text with the request it came in: batching mixes requests, the log keeps them apart."""

    text: str
    request_id: str
    received: float = field(default_factory=time.perf_counter)


class Summary(BaseModel):
    summary: str
    model_name: str
    model_version: str
    run_id: str
    request_id: str


def _one_or_many(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"texts must be a string or a list of strings, got {type(value).__name__}")
    return value


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("blank text: every text needs at least one non-space character")
    return text


def _tag_request(texts: list[str]) -> list[Item]:
    request_id = uuid.uuid4().hex
    return [Item(text, request_id) for text in texts]


def texts_type(serving: ServingConfig) -> Any:
    """The type of the `texts` field: one string or a non-empty list of non-blank strings, capped by config.

    Strict strings: a number or an object is refused, not turned into text.
    """
    text = Annotated[
        str,
        StringConstraints(strict=True, max_length=serving.max_text_chars),
        AfterValidator(_not_blank),
    ]
    return Annotated[
        list[text],  # type: ignore[valid-type]
        BeforeValidator(_one_or_many),
        Field(
            min_length=1,
            max_length=serving.max_texts,
            description=f"one text, or a list of 1 to {serving.max_texts} texts of at most "
            f"{serving.max_text_chars} characters each",
        ),
        AfterValidator(_tag_request),
    ]


def as_items(texts: Iterable[Item | str]) -> list[Item]:
    """Items as they come from the HTTP layer; plain strings (an in-process call) get one request id."""
    texts = list(texts)
    request_id = uuid.uuid4().hex
    return [t if isinstance(t, Item) else Item(str(t), request_id) for t in texts]
