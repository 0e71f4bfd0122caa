"""The OpenAI-compatible routes (/v1) through the official `openai` client against a real `bentoml serve`
process (tiny random model): chat and text completions under every model name, usage, stop strings,
streaming, the model list, errors as the client's own exceptions, the API key through `steep serve`, and one
batcher shared with POST /summarize.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from steep.registry import model_name
from tests.bentos.conftest import KEY

pytestmark = pytest.mark.integration

TEXT = "alpha bravo charlie delta echo foxtrot"


def client(url: str, api_key: str = "unused") -> openai.OpenAI:
    """The official client; no retries, so an error is the server's first answer."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=60)


def chat(api: openai.OpenAI, model: str, text: str = TEXT, **options):
    return api.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **options)


@pytest.fixture(scope="module")
def name(server) -> str:
    return model_name(server.cfg)


def test_models_lists_every_name_of_the_served_model(server, name):
    ids = [m.id for m in client(server.url).models.list()]
    assert ids == [name, f"{name}:1", f"{name}:champion"]


def test_chat_and_completions_answer_under_every_model_name_naming_the_version(server, name):
    api = client(server.url)
    answers = set()
    for model in (name, f"{name}:1", f"{name}:champion"):
        reply = chat(api, model, max_tokens=6)
        assert reply.object == "chat.completion" and reply.model == f"{name}:1", model
        [choice] = reply.choices
        assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
        usage = reply.usage
        assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 6
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        answers.add(choice.message.content)

        done = api.completions.create(model=model, prompt=TEXT, max_tokens=6)
        assert done.object == "text_completion" and done.model == f"{name}:1", model
        [choice] = done.choices
        assert choice.finish_reason in ("stop", "length")
        assert done.usage.prompt_tokens > 0 and 0 < done.usage.completion_tokens <= 6
        answers.add(choice.text)
    assert len(answers) == 1  # greedy by default: the same text whatever the route or the name


def test_max_tokens_bounds_the_answer_and_a_prompt_list_gets_a_choice_each(server, name):
    api = client(server.url)
    for limit in (1, 3, 16):
        reply = chat(api, name, max_tokens=limit)
        used = reply.usage.completion_tokens
        assert 0 < used <= limit and reply.choices[0].finish_reason == ("length" if used == limit else "stop")
    many = api.completions.create(model=name, prompt=["alpha bravo", "charlie delta echo"], max_tokens=2)
    assert [c.index for c in many.choices] == [0, 1]
    assert 0 < many.usage.completion_tokens <= 4  # the usage of both prompts
    assert many.usage.prompt_tokens > chat(api, name, "alpha bravo", max_tokens=2).usage.prompt_tokens


def stop_inside(text: str) -> str:
    """A stop string that first occurs inside `text`, after its first character."""
    for start in range(1, len(text) - 1):
        candidate = text[start : start + 2]
        if candidate.strip() and text.find(candidate) == start:
            return candidate
    pytest.fail(f"no stop string to cut {text!r} with: the tiny model answered too little")


def test_a_stop_string_cuts_the_answer_before_it(server, name):
    api = client(server.url)
    full = chat(api, name, max_tokens=16).choices[0].message.content
    stop = stop_inside(full)
    expected = full[: full.find(stop)].strip()

    cut = chat(api, name, max_tokens=16, stop=stop).choices[0]
    assert (cut.message.content, cut.finish_reason) == (expected, "stop")
    listed = api.completions.create(model=name, prompt=TEXT, max_tokens=16, stop=["\x00never", stop])
    assert (listed.choices[0].text, listed.choices[0].finish_reason) == (expected, "stop")


def test_a_streamed_chat_sends_the_greedy_answer_in_chunks(server, name):
    api = client(server.url)
    whole = chat(api, name, max_tokens=8)
    chunks = list(chat(api, name, max_tokens=8, stream=True, stream_options={"include_usage": True}))
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert {c.model for c in chunks} == {f"{name}:1"}
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in with_choices]
    assert finishes[-1] == whole.choices[0].finish_reason and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # asked for: usage comes last


def test_a_streamed_completion_sends_the_greedy_answer_in_chunks(server, name):
    api = client(server.url)
    whole = api.completions.create(model=f"{name}:champion", prompt=TEXT, max_tokens=8)
    chunks = list(api.completions.create(model=f"{name}:champion", prompt=TEXT, max_tokens=8, stream=True))
    assert len(chunks) > 1 and {c.model for c in chunks} == {f"{name}:1"}
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks]
    assert finishes[-1] == whole.choices[0].finish_reason and set(finishes[:-1]) == {None}


# --------------------------------------------------------------------------------------------- errors
def test_a_model_this_server_does_not_serve_is_the_clients_not_found_error(server, name):
    api = client(server.url)
    for model in ("gpt-4o", f"{name}:7", f"{name}:challenger"):
        with pytest.raises(openai.NotFoundError) as info:
            chat(api, model)
        found = info.value
        assert (found.code, found.param, found.type) == ("model_not_found", "model", "not_found_error")
        assert f"'{name}:1'" in found.message  # the message lists what is served
    with pytest.raises(openai.NotFoundError) as info:
        api.completions.create(model="gpt-4o", prompt=TEXT, stream=True)
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"max_tokens": 17}, "max_tokens"),  # over serving.max_tokens_limit
        ({"n": 2}, "n"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "be brief"}]}, "messages"),  # nothing to summarize
        ({"messages": [{"role": "user", "content": "   "}]}, "messages.0.content"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_a_bad_request_is_the_clients_bad_request_error_naming_the_field(server, name, options, param):
    api = client(server.url)
    request = {"model": name, "messages": [{"role": "user", "content": TEXT}], **options}
    with pytest.raises(openai.BadRequestError) as info:
        api.chat.completions.create(**request)
    assert info.value.type == "invalid_request_error"
    assert info.value.param is not None and info.value.param.startswith(param), info.value.message


def test_the_keyed_server_refuses_the_client_without_the_key(keyed_server, tiny_registry):
    url, _, _ = keyed_server
    name = model_name(tiny_registry[0])
    without = client(url, "unused")
    with pytest.raises(openai.AuthenticationError) as info:
        without.models.list(extra_headers={"Authorization": openai.omit})  # no key at all
    assert info.value.code == "invalid_api_key" and "X-API-Key" in info.value.message
    wrong = client(url, "not-the-key")
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.AuthenticationError):
        chat(wrong, name)

    keyed = client(url, KEY)  # sent as Authorization: Bearer KEY
    assert name in [m.id for m in keyed.models.list()]
    assert chat(keyed, name, max_tokens=2).model == f"{name}:1"


# --------------------------------------------------------------------------------------------- one batcher
def test_summarize_and_chat_requests_sent_together_all_succeed(server, name):
    api = client(server.url)

    def summarize(i: int) -> str:
        body = {"texts": [f"{TEXT} {i}", "golf hotel"]}
        resp = httpx.post(f"{server.url}/summarize", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        assert [s["model_version"] for s in resp.json()] == ["1", "1"]
        return "summarize"

    def ask(i: int) -> str:
        reply = chat(api, name, f"{TEXT} {i}", max_tokens=4)
        assert reply.model == f"{name}:1" and reply.usage.completion_tokens <= 4
        return "chat"

    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [pool.submit(summarize if i % 2 else ask, i) for i in range(8)]
        assert sorted(job.result() for job in jobs) == ["chat"] * 4 + ["summarize"] * 4
