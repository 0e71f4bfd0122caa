"""The web page at `/` against a real server, in headless Chromium: it streams the summary token by token."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.bentos.browser import Browser, chromium_binary

pytestmark = pytest.mark.integration

# Every state #result's text goes through, recorded in the page before the click.
RECORD_STATES = """(() => {
  const result = document.getElementById('result');
  window.resultStates = [];
  new MutationObserver(() => window.resultStates.push(result.textContent))
    .observe(result, { childList: true, characterData: true, subtree: true });
})()"""
# #result's state once the page is done with a request: "done" or "error" ("streaming" before)
FINISHED = "(s => ['done', 'error'].includes(s) && s)(document.getElementById('result').dataset.state)"


def greedy_answer(url: str, text: str) -> tuple[str, dict]:
    """(the served model's first id, the non-streamed greedy chat completion of `text`)."""
    model = httpx.get(f"{url}/v1/models", timeout=60).json()["data"][0]["id"]
    resp = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    return model, resp.json()


def test_web_page_streams_the_summary_token_by_token(server):
    binary = chromium_binary()
    if binary is None:
        pytest.fail("the web page test needs headless Chromium: install Debian's `chromium` package")
    text = "alpha bravo charlie delta"
    model, answer = greedy_answer(server.url, text)
    expected = answer["choices"][0]["message"]["content"]
    assert expected.strip(), "the tiny model's greedy answer is empty: nothing to stream"
    with Browser(binary) as browser:
        browser.goto(f"{server.url}/", ready="document.getElementById('go')")
        assert "OpenAI-compatible" in browser.eval("document.body.textContent")
        assert browser.eval("document.querySelector('a[href=\"/docs\"]') !== null")
        browser.type_into("#text", text)
        assert browser.eval("document.getElementById('text').value") == text
        browser.eval(RECORD_STATES)
        browser.click("#go")
        state = browser.wait_for(FINISHED)
        assert state == "done", browser.eval("document.getElementById('error').textContent")
        final = browser.eval("document.getElementById('result').textContent")
        assert final == expected
        states = browser.eval("window.resultStates")
        assert states[-1] == final
        partial = [s for s in states if s and len(s) < len(final)]
        assert partial, f"#result went from empty to the whole answer at once: {states}"
        assert all(final.startswith(s) for s in states), states  # each state extends the one before
        assert browser.eval("document.getElementById('model').dataset.version") == "1"
        shown = browser.eval("document.getElementById('model').textContent")
        assert answer["model"] == f"{model}:1"
        assert shown == f"model {model} version 1 (run {answer['system_fingerprint'][:12]})"
        assert browser.eval("document.getElementById('error').textContent") == ""

        browser.eval("document.getElementById('text').value = ''")
        browser.type_into("#text", "   ")
        browser.click("#go")
        error = browser.wait_for("document.getElementById('error').textContent")
        # the server refuses whitespace-only content as a validation error on the field
        assert "messages.0.content" in error or "no user message with text" in error, error
        assert browser.eval("document.getElementById('result').dataset.state") == "error"
        assert browser.eval("document.getElementById('result').textContent") == ""
        assert browser.eval("document.getElementById('model').textContent") == ""


# The page's fetch() replaced by a fake server: /v1/models answers 200 (or 401 once `window.refuse` is set),
# and the chat stream arrives in 7-byte network chunks (splitting events mid-line; one ends in CRLFs),
# with an in-stream error event after the first piece. Every call is recorded in window.calls.
FAKE_SERVER = r"""(() => {
  const chunk = (delta) => JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1,
    model: 'fake:7', system_fingerprint: null, choices: [{ index: 0, delta, finish_reason: null }] });
  const sse = `data: ${chunk({ role: 'assistant', content: '' })}\n\n`
    + `data: ${chunk({ content: 'Hé' })}\r\n\r\n`
    + `data: ${chunk({ content: 'llo' })}\n\n`
    + `data: ${JSON.stringify({ error: { message: 'boom: the model went away', type: 'server_error' } })}\n\n`
    + 'data: [DONE]\n\n';
  const bytes = new TextEncoder().encode(sse);
  window.calls = [];
  window.fetch = async (url, init) => {
    window.calls.push({ url, headers: init.headers, body: init.body || null });
    const json = (status, body) =>
      new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
    if (url === '/v1/models') {
      return window.refuse
        ? json(401, { error: { message: 'missing or wrong API key', type: 'invalid_request_error' } })
        : json(200, { object: 'list', data: [{ id: 'fake' }, { id: 'fake:7' }] });
    }
    const body = new ReadableStream({ async start(controller) {
      for (let i = 0; i < bytes.length; i += 7) {
        controller.enqueue(bytes.slice(i, i + 7));
        await new Promise((done) => setTimeout(done, 1));
      }
      controller.close();
    } });
    return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
  };
})()"""


def test_web_page_parses_split_events_shows_errors_and_sends_the_key(server):
    binary = chromium_binary()
    if binary is None:
        pytest.fail("the web page test needs headless Chromium: install Debian's `chromium` package")
    with Browser(binary) as browser:
        browser.goto(f"{server.url}/", ready="document.getElementById('go')")
        browser.type_into("#key", "k3y")
        browser.type_into("#text", "some text")
        browser.eval(FAKE_SERVER)
        browser.click("#go")
        browser.wait_for(FINISHED)
        assert browser.eval("document.getElementById('error').textContent") == "boom: the model went away"
        assert browser.eval("document.getElementById('result').textContent") == "Héllo"
        assert browser.eval("document.getElementById('result').dataset.state") == "error"
        assert browser.eval("document.getElementById('model').dataset.version") == "7"
        assert browser.eval("document.getElementById('model').textContent") == "model fake version 7"
        models, chat = browser.eval("window.calls")
        assert models["url"] == "/v1/models" and models["headers"] == {"X-API-Key": "k3y"}
        assert chat["url"] == "/v1/chat/completions" and chat["headers"]["X-API-Key"] == "k3y"
        assert json.loads(chat["body"]) == {
            "model": "fake",
            "stream": True,
            "messages": [{"role": "user", "content": "some text"}],
        }

        browser.eval("window.refuse = true")
        browser.click("#go")
        browser.wait_for(
            "document.getElementById('result').dataset.state === 'error'"
            " && document.getElementById('error').textContent.includes('API key')"
        )
        assert browser.eval("document.getElementById('error').textContent") == "missing or wrong API key"
        assert browser.eval("document.getElementById('result').textContent") == ""

        browser.goto(f"{server.url}/", ready="document.getElementById('go')")
        assert browser.eval("document.getElementById('key').value") == "k3y"  # kept in localStorage
