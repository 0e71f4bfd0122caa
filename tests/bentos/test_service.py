"""The summarizer against a real `bentoml serve` process over a real MLflow registry (tiny random models).

Covers POST /summarize and its validation (400s in OpenAI's error shape naming the field), bad and good
requests sent together (steep's batcher), health/metrics/docs, the inference log, the API key through
`steep serve`, and hot swap. The OpenAI-compatible routes are tests/bentos/test_openai.py's, the OpenAPI
document test_spec.py's, the web page test_web_page.py's.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from itertools import zip_longest

import httpx
import psutil
import pytest
import yaml

from steep.inference_log import InferenceLog
from steep.registry import Registry, model_name
from tests.bentos.conftest import KEY, register_tiny

pytestmark = pytest.mark.integration


def post(url: str, body: bytes | str, **headers: str) -> httpx.Response:
    data = body.encode() if isinstance(body, str) else body
    return httpx.post(
        f"{url}/summarize", content=data, headers={"content-type": "application/json", **headers}, timeout=60
    )


def error(resp: httpx.Response, status: int) -> dict:
    """The error of an answer, after checking its status and OpenAI's error shape."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def logged(cfg, request_ids: list[str], rows: int, timeout_s: float = 15.0):
    """The inference log's rows of these requests, once all `rows` are there: a batch answers, then logs."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = InferenceLog.for_config(cfg).window(timedelta(hours=1))
        mine = found[found["request_id"].isin(request_ids)]
        if len(mine) >= rows or time.monotonic() > deadline:
            assert len(mine) == rows, mine
            return mine
        time.sleep(0.2)


def test_one_text_or_a_list_gets_summaries_with_the_model_identity(server):
    expected_run = Registry(model_name(server.cfg)).version("1").run_id
    one = post(server.url, '{"texts": "alpha bravo charlie delta echo"}')
    assert one.status_code == 200, one.text
    [single] = one.json()
    assert single["model_name"] == model_name(server.cfg)
    assert single["model_version"] == "1" and single["run_id"] == expected_run
    assert isinstance(single["summary"], str)

    many = post(server.url, '{"texts": ["alpha bravo", "charlie delta echo", "golf hotel india"]}')
    assert many.status_code == 200, many.text
    results = many.json()
    assert len(results) == 3 and {r["model_version"] for r in results} == {"1"}
    assert len({r["request_id"] for r in results}) == 1 and results[0]["request_id"] != single["request_id"]

    mine = logged(server.cfg, [single["request_id"], results[0]["request_id"]], 4)
    assert set(mine["model_version"]) == {"1"} and set(mine["run_id"]) == {expected_run}
    assert sorted(mine["n_words"]) == [2, 3, 3, 5]
    assert mine["text"].isna().all() and mine["summary"].isna().all()  # serving.log_texts is off


BAD = {  # body, the field the error names (`param`), its message
    "empty list": ('{"texts": []}', "texts", "texts: .*at least 1 item"),
    "blank text": ('{"texts": ["alpha bravo", "   "]}', "texts.1", r"texts\.1: .*blank text"),
    "too many texts": ('{"texts": ["a", "b", "c", "d", "e"]}', "texts", "texts: .*at most 4 items"),
    "over the length cap": ('{"texts": "' + "a" * 201 + '"}', "texts.0", r"texts\.0: .*at most 200 char"),
    "a number": ('{"texts": 3}', "texts", "texts: .*a string or a list of strings, got int"),
    "a list of numbers": ('{"texts": [1, 2]}', "texts.0", r"texts\.0: .*valid string"),
    "an object": ('{"texts": {"a": "b"}}', "texts", "texts: .*got dict"),
    "malformed JSON": ('{"texts": ["alpha"', "body", "Invalid JSON in the request body"),
    "no texts field": ('{"text": "alpha"}', "texts", "texts: Field required"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_400_naming_the_field(server, case):
    body, param, message = BAD[case]
    found = error(post(server.url, body), 400)
    assert found["type"] == "invalid_request_error" and found["code"] is None
    assert found["param"] == param, found
    assert re.search(message, found["message"]), found["message"]


def batch_sizes(metrics: str) -> tuple[float, float]:
    """(batches run, batches of at most 2 rows) from steep's `steep_batch_size` histogram on /metrics."""

    def one(pattern: str) -> float:
        return sum(float(m) for m in re.findall(pattern, metrics, re.M))

    return one(r"^steep_batch_size_count(?:\{[^}]*\})? (\S+)"), one(
        r'^steep_batch_size_bucket\{[^}]*le="2\.0"[^}]*\} (\S+)'
    )


def test_bad_requests_never_fail_good_ones_batched_with_them(server):
    before = batch_sizes(httpx.get(f"{server.url}/metrics").text)
    good = [f'{{"texts": ["alpha bravo {i}", "charlie delta echo"]}}' for i in range(24)]
    bad = [body for body, _, _ in BAD.values()] * 2
    pairs = zip_longest([(True, b) for b in good], [(False, b) for b in bad])
    jobs = [job for pair in pairs for job in pair if job is not None]  # good and bad interleaved
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        responses = list(pool.map(lambda job: (job[0], post(server.url, job[1])), jobs))
    for ok, resp in responses:
        if ok:
            assert resp.status_code == 200, resp.text
            assert len(resp.json()) == 2 and all(r["model_version"] == "1" for r in resp.json())
        else:
            error(resp, 400)
    after = batch_sizes(httpx.get(f"{server.url}/metrics").text)
    batches, small = after[0] - before[0], after[1] - before[1]
    # every good request has 2 rows: a batch of more than 2 held rows of several requests
    assert batches > 0 and small < batches, "no batch held more than one request: the batcher does not batch"


def test_health_metrics_and_openapi_docs(server):
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.status_code == 200 and "request_duration_seconds" in metrics.text
    assert "steep_batch_size_bucket" in metrics.text
    spec = httpx.get(f"{server.url}/docs.json").json()
    assert spec["openapi"] == "3.1.0"  # the schemas in it are JSON Schema 2020-12, as OpenAPI 3.1 reads them
    assert {"/summarize", "/v1/models", "/v1/completions", "/v1/chat/completions"} <= set(spec["paths"])
    assert "texts" in yaml.safe_dump(spec["components"])
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# --------------------------------------------------------------------------------------------- steep serve
def test_steep_serve_requires_the_key_but_health_stays_open(keyed_server):
    url, _, _ = keyed_server
    for path in ("/healthz", "/readyz", "/metrics", "/", "/docs", "/docs.json"):
        assert httpx.get(f"{url}{path}").status_code == 200, path
    for resp in (
        post(url, '{"texts": "alpha bravo"}'),
        post(url, '{"texts": "alpha bravo"}', **{"x-api-key": "wrong"}),
        post(url, '{"texts": "alpha bravo"}', authorization="Bearer wrong"),
        httpx.get(f"{url}/v1/models"),
    ):
        found = error(resp, 401)
        assert "X-API-Key" in found["message"]
        assert (found["type"], found["code"]) == ("invalid_request_error", "invalid_api_key")
        assert resp.headers["www-authenticate"] == "Bearer"
    assert post(url, '{"texts": "alpha bravo"}', **{"x-api-key": KEY}).status_code == 200
    assert post(url, '{"texts": "alpha bravo"}', authorization=f"Bearer {KEY}").status_code == 200


def test_steep_serve_binds_localhost_only(keyed_server):
    _, _, port = keyed_server
    listening = [c for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port]
    assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}


# --------------------------------------------------------------------------------------------- hot swap
def test_hot_swap_moves_to_the_new_champion_without_dropping_a_request(server):
    stop = threading.Event()
    seen: list[list[tuple[int, str]]] = [[] for _ in range(4)]

    def client(log: list[tuple[int, str]]) -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                resp = http.post(
                    f"{server.url}/summarize", json={"texts": ["alpha bravo charlie", "delta echo"]}
                )
                version = resp.json()[0]["model_version"] if resp.status_code == 200 else "-"
                log.append((resp.status_code, version))

    threads = [threading.Thread(target=client, args=(log,)) for log in seen]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        new = register_tiny(server.cfg, server.model_dir, promote=True)  # moves the champion alias
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(v == new for log in seen for _, v in log):
            time.sleep(0.2)
        time.sleep(1.5)  # keep the load on across and after the swap
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    statuses = [s for log in seen for s, _ in log]
    assert statuses and all(s == 200 for s in statuses), f"dropped or failed requests: {statuses}"
    assert any(v == new for log in seen for _, v in log), f"never answered with v{new}"
    for log in seen:  # each client's answers move from v1 to the new version once, never back
        versions = [v for _, v in log]
        first_new = versions.index(new) if new in versions else len(versions)
        assert set(versions[:first_new]) <= {"1"} and set(versions[first_new:]) <= {new}
    assert post(server.url, '{"texts": "alpha"}').json()[0]["model_version"] == new
    deadline = time.monotonic() + 15  # a batch answers first, then logs
    log = InferenceLog.for_config(server.cfg)
    while not {"1", new} <= set(log.window(timedelta(hours=1))["model_version"]):
        assert time.monotonic() < deadline, "the log never showed both versions"
        time.sleep(0.2)
