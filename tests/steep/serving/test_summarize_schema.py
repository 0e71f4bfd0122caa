"""The request type of POST /summarize: what is accepted, what is refused and with which message."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from steep.config import ServingConfig
from steep.serving.summarize_schema import Item, texts_type

LIMITS = ServingConfig(max_texts=3, max_text_chars=10)


def validate(value):
    return TypeAdapter(texts_type(LIMITS)).validate_python(value)


def errors(value) -> str:
    with pytest.raises(ValidationError) as info:
        validate(value)
    return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors())


def test_one_text_or_a_list_become_items_of_one_request():
    [one] = validate("alpha")
    assert isinstance(one, Item) and one.text == "alpha"
    many = validate(["alpha", "bravo"])
    assert [i.text for i in many] == ["alpha", "bravo"]
    assert many[0].request_id == many[1].request_id != one.request_id


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "at least 1 item"),
        (["ok", "  \n"], "1: Value error, blank text"),
        (["a", "b", "c", "d"], "at most 3 items"),
        ("x" * 11, "0: String should have at most 10 characters"),
        (7, "texts must be a string or a list of strings, got int"),
        ([1], "0: Input should be a valid string"),
        ({"a": 1}, "got dict"),
        (None, "got NoneType"),
    ],
)
def test_bad_texts_are_refused_with_a_message_naming_the_item(value, message):
    assert message in errors(value)


def test_the_json_schema_shows_the_limits():
    schema = TypeAdapter(texts_type(LIMITS)).json_schema(mode="validation")
    assert schema["maxItems"] == 3 and schema["minItems"] == 1
    assert schema["items"]["maxLength"] == 10
