"""The HTTP API over an engine with a stand-in model: answers in OpenAI's wire format, every error in
OpenAI's error shape naming the field, and an OpenAPI document that declares them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.openapi.utils import get_openapi
from fastapi.testclient import TestClient

from steep.serving import ServingError
from steep.serving.api import build_app
from tests.steep.serving.test_engine import Served, config, engine_over


@pytest.fixture
def served() -> Served:
    return Served()


@pytest.fixture
def client(tmp_path, served) -> Iterator[TestClient]:
    cfg = config(tmp_path, max_texts=4, max_text_chars=200, max_new_tokens=4, max_tokens_limit=16)
    with engine_over(cfg, served) as engine:
        yield TestClient(build_app(cfg.serving, lambda: engine))


def error(response, status: int) -> dict:
    """The error of an answer, after checking its status and that it has OpenAI's shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def events(response) -> list:
    """The server-sent events of a streamed answer: JSON chunks, then the final `[DONE]`."""
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


CHAT = {"model": "m", "messages": [{"role": "user", "content": "alpha bravo"}]}


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("path", "body", "param", "message"),
    [
        ("/summarize", {"texts": "  "}, "texts.0", "blank text"),
        ("/summarize", {"texts": ["alpha", "\t"]}, "texts.1", "blank text"),
        ("/summarize", {"texts": ["alpha"] * 5}, "texts", "at most 4"),
        ("/summarize", {"texts": "x" * 201}, "texts.0", "at most 200 characters"),
        ("/summarize", {}, "texts", "required"),
        ("/v1/completions", {"model": "m", "prompt": "alpha", "n": 2}, "n", "Input should be 1"),
        ("/v1/completions", {"model": "m", "prompt": "alpha", "temperature": 3}, "temperature", "2"),
        ("/v1/completions", {"model": "m", "prompt": "alpha", "temperature": -1}, "temperature", "0"),
        ("/v1/completions", {"model": "m", "prompt": "alpha", "max_tokens": 17}, "max_tokens", "16"),
        ("/v1/completions", {"model": "m", "prompt": " "}, "prompt", ""),
        ("/v1/completions", {"prompt": "alpha"}, "model", "required"),
        ("/v1/completions", {"model": "m", "prompt": ["a", "b"], "stream": True}, "prompt", "one prompt"),
        ("/v1/chat/completions", {**CHAT, "n": 2}, "n", "Input should be 1"),
        ("/v1/chat/completions", {**CHAT, "top_p": 0}, "top_p", "greater than 0"),
        ("/v1/chat/completions", {"model": "m", "messages": []}, "messages", "at least 1"),
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "system", "content": "be brief"}]},
            "messages",
            "no user message",
        ),
    ],
)
def test_a_bad_request_is_a_400_in_openais_shape_naming_the_field(client, path, body, param, message):
    found = error(client.post(path, json=body), 400)
    assert found["type"] == "invalid_request_error"
    assert found["param"] is not None and found["param"].startswith(param), found
    assert message in found["message"]


def test_invalid_json_and_unknown_routes_answer_in_the_same_shape(client):
    broken = client.post("/summarize", content=b"{not json", headers={"content-type": "application/json"})
    assert error(broken, 400)["param"] == "body"
    assert error(client.get("/no-such-route"), 404)["type"] == "not_found_error"
    wrong_method = client.get("/summarize")
    assert error(wrong_method, 405)["message"] == "Method Not Allowed"


def test_a_model_this_server_does_not_serve_is_a_404_with_code_and_param(client):
    for path, body in (
        ("/v1/completions", {"model": "other", "prompt": "alpha"}),
        ("/v1/chat/completions", {**CHAT, "model": "m:7"}),
        ("/v1/chat/completions", {**CHAT, "model": "m:7", "stream": True}),
    ):
        found = error(client.post(path, json=body), 404)
        assert (found["type"], found["code"], found["param"]) == (
            "not_found_error",
            "model_not_found",
            "model",
        )
        assert "'m:1'" in found["message"]


def test_before_the_model_is_loaded_every_route_answers_503(tmp_path):
    def starting():
        raise ServingError("the server is still starting: the model is loading (see GET /readyz)")

    client = TestClient(build_app(config(tmp_path).serving, starting))
    for answer in (
        client.post("/summarize", json={"texts": "alpha"}),
        client.get("/v1/models"),
        client.post("/v1/chat/completions", json=CHAT),
    ):
        assert "still starting" in error(answer, 503)["message"]


# ------------------------------------------------------------------------------------ answers
def test_summarize_answers_each_text_with_its_model_version(client):
    answer = client.post("/summarize", json={"texts": ["alpha bravo", "charlie"]})
    assert answer.status_code == 200
    body = answer.json()
    assert [s["summary"] for s in body] == ["alpha", "charlie"]
    assert {(s["model_name"], s["model_version"], s["run_id"]) for s in body} == {("m", "1", "run-1")}
    assert len({s["request_id"] for s in body}) == 1
    assert client.post("/summarize", json={"texts": "one text"}).json()[0]["summary"] == "one"


def test_models_lists_every_name_a_request_may_use(client, served):
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and {m["object"] for m in body["data"]} == {"model"}
    assert [m["id"] for m in body["data"]] == ["m", "m:1", "m:champion"]
    served.swap_to("2")
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["m", "m:2", "m:champion"]


def test_a_completion_answers_every_prompt_and_sums_the_usage(client, served):
    body = {"model": "m:1", "prompt": ["alpha bravo", "charlie delta echo"], "max_tokens": 3, "stop": "x"}
    answer = client.post("/v1/completions", json=body)
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["object"] == "text_completion" and reply["id"].startswith("cmpl-")
    assert reply["model"] == "m:1" and reply["system_fingerprint"] == "run-1"
    assert [(c["index"], c["text"], c["finish_reason"]) for c in reply["choices"]] == [
        (0, "alpha", "stop"),
        (1, "charlie", "stop"),
    ]
    assert reply["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    asked = {"max_new_tokens": 3, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0, "stop": ("x",)}
    assert served.summarizer.settings == [asked, asked]


def test_a_chat_completion_summarizes_the_last_user_message(client, served):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "alpha bravo"},
        {"role": "assistant", "content": "alpha"},
        {"role": "user", "content": [{"type": "text", "text": "charlie delta"}]},
    ]
    body = {"model": "m:champion", "messages": messages, "max_tokens": 9, "max_completion_tokens": 2}
    reply = client.post("/v1/chat/completions", json=body).json()
    assert reply["object"] == "chat.completion" and reply["id"].startswith("chatcmpl-")
    assert reply["model"] == "m:1"  # the version that wrote it, whatever name the request used
    [choice] = reply["choices"]
    assert (
        choice["message"] == {"role": "assistant", "content": "charlie"} and choice["finish_reason"] == "stop"
    )
    assert reply["usage"] == {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
    assert served.summarizer.settings[-1]["max_new_tokens"] == 2  # max_completion_tokens wins
    client.post("/v1/chat/completions", json=CHAT)
    assert served.summarizer.settings[-1]["max_new_tokens"] == 4  # none asked: serving.max_new_tokens


def test_a_streamed_chat_sends_the_text_in_chunks_then_done(client):
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    chunks = events(client.post("/v1/chat/completions", json=body))
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert {c["model"] for c in chunks} == {"m:1"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
    assert text == "alpha" and len(chunks) > 3  # in pieces, as generated
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 3
    plain = events(client.post("/v1/chat/completions", json={**CHAT, "stream": True}))
    assert all(c["usage"] is None for c in plain)  # usage only when asked for


def test_a_streamed_completion_sends_the_text_in_chunks_then_done(client):
    chunks = events(
        client.post("/v1/completions", json={"model": "m", "prompt": "alpha bravo", "stream": True})
    )
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in chunks) == "alpha"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# ------------------------------------------------------------------------------------ the document
def test_the_openapi_document_declares_every_error_and_no_422(tmp_path):
    app = build_app(config(tmp_path).serving, lambda: None)
    document = get_openapi(title="steep", version="test", routes=app.routes)
    posts = {path: ops["post"] for path, ops in document["paths"].items() if "post" in ops}
    assert set(posts) == {"/summarize", "/v1/completions", "/v1/chat/completions"}
    for path, operation in posts.items():
        declared = set(operation["responses"])
        assert {"200", "400", "401", "413", "503"} <= declared, path
        assert "422" not in declared, path
        assert path == "/summarize" or "404" in declared
        error_schema = operation["responses"]["400"]["content"]["application/json"]["schema"]
        assert error_schema["$ref"].endswith("/ErrorBody")
    assert "HTTPValidationError" not in document.get("components", {}).get("schemas", {})
    for path in ("/v1/completions", "/v1/chat/completions"):
        assert "text/event-stream" in posts[path]["responses"]["200"]["content"]
