"""The request and response types of POST /summarize.

Validation lives in the types: FastAPI checks them per request before the batcher sees it, so one bad request
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


# A character str.strip() keeps, spelled out: JSON Schema reads a pattern as ECMA-262, whose `\s` is not
# Python's (it leaves out \x1c-\x1f and \x85, and adds \ufeff), so with `\S` schema and server would disagree.
NON_SPACE = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def text_type(serving: ServingConfig) -> Any:
    """One text: a strict string (a number is refused, not turned into text) of at most
    serving.max_text_chars characters, not blank (the schema says so with the pattern NON_SPACE)."""
    return Annotated[
        str,
        StringConstraints(strict=True, max_length=serving.max_text_chars),
        AfterValidator(_not_blank),  # a message that says "blank", not "should match pattern"
        Field(json_schema_extra={"pattern": NON_SPACE}),
    ]


def _one_or_many_schema(schema: dict[str, Any]) -> None:
    """`texts` takes one string too: type [string, array], with the item's string keywords beside the array's
    (in JSON Schema, string keywords constrain only strings and array keywords only arrays)."""
    schema["type"] = ["string", "array"]
    schema.update({k: v for k, v in schema["items"].items() if k != "type"})


def texts_type(serving: ServingConfig) -> Any:
    """The type of the `texts` field: one text or a list of 1 to serving.max_texts texts (see text_type)."""
    return Annotated[
        list[text_type(serving)],  # type: ignore[valid-type]
        BeforeValidator(_one_or_many),
        Field(
            min_length=1,
            max_length=serving.max_texts,
            description=f"one text, or a list of 1 to {serving.max_texts} texts of at most "
            f"{serving.max_text_chars} characters each",
            json_schema_extra=_one_or_many_schema,
        ),
        AfterValidator(_tag_request),
    ]


def as_items(texts: Iterable[Item | str]) -> list[Item]:
    """Items as they come from the HTTP layer; plain strings (an in-process call) get one request id."""
    texts = list(texts)
    request_id = uuid.uuid4().hex
    return [t if isinstance(t, Item) else Item(str(t), request_id) for t in texts]
