"""The summarizer against a real `bentoml serve` process over a real MLflow registry (tiny random models).

Covers the API and its validation, bad and good requests batched together, health/metrics/docs, the
inference log, the web page in headless Chromium, the API key through `steep serve`, and hot swap.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import psutil
import pytest
import yaml

from steep.inference_log import InferenceLog
from steep.registry import Registry, model_name
from tests.bentos.conftest import register_tiny

pytestmark = pytest.mark.integration

def post(url: str, body: bytes | str, **headers: str) -> httpx.Response:
    data = body.encode() if isinstance(body, str) else body
    return httpx.post(
        f"{url}/summarize", content=data, headers={"content-type": "application/json", **headers}, timeout=60
    )


def explain(resp: httpx.Response) -> str:
    body = resp.json()
    return " | ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in body.get("detail", [])) or str(
        body
    )


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

    rows = InferenceLog.for_config(server.cfg).window(timedelta(hours=1))
    mine = rows[rows["request_id"].isin([single["request_id"], results[0]["request_id"]])]
    assert len(mine) == 4
    assert set(mine["model_version"]) == {"1"} and set(mine["run_id"]) == {expected_run}
    assert sorted(mine["n_words"]) == [2, 3, 3, 5]
    assert mine["text"].isna().all() and mine["summary"].isna().all()  # serving.log_texts is off


BAD = {
    "empty list": ('{"texts": []}', "texts: .*at least 1 item"),
    "blank text": ('{"texts": ["alpha bravo", "   "]}', r"texts\.1: .*blank text"),
    "too many texts": ('{"texts": ["a", "b", "c", "d", "e"]}', "texts: .*at most 4 items"),
    "over the length cap": ('{"texts": "' + "a" * 201 + '"}', r"texts\.0: .*at most 200 characters"),
    "a number": ('{"texts": 3}', "texts: .*a string or a list of strings, got int"),
    "a list of numbers": ('{"texts": [1, 2]}', r"texts\.0: .*valid string"),
    "an object": ('{"texts": {"a": "b"}}', "texts: .*got dict"),
    "malformed JSON": ('{"texts": ["alpha"', "Invalid JSON"),
    "no texts field": ('{"text": "alpha"}', "texts: Field required"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_400_naming_the_field(server, case):
    body, message = BAD[case]
    resp = post(server.url, body)
    assert resp.status_code == 400, resp.text
    assert re.search(message, explain(resp)), explain(resp)


def batch_sizes(metrics: str) -> tuple[float, float]:
    """(batches run, batches of one request) from BentoML's adaptive batch size histogram."""
    count = sum(
        float(m)
        for m in re.findall(
            r'^\w*adaptive_batch_size_count\{[^}]*method_name="summarize"[^}]*\} (\S+)', metrics, re.M
        )
    )
    ones = sum(
        float(m)
        for m in re.findall(
            r'^\w*adaptive_batch_size_bucket\{[^}]*le="1.0"[^}]*method_name="summarize"[^}]*\} (\S+)',
            metrics,
            re.M,
        )
    )
    return count, ones


def test_bad_requests_never_fail_good_ones_batched_with_them(server):
    good = [f'{{"texts": ["alpha bravo {i}", "charlie delta echo"]}}' for i in range(24)]
    bad = [body for body, _ in BAD.values()] * 2
    jobs = [(True, b) for b in good] + [(False, b) for b in bad]
    jobs = [j for pair in zip(jobs[::2], jobs[1::2], strict=False) for j in pair]  # interleave good and bad
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        responses = list(pool.map(lambda job: (job[0], post(server.url, job[1])), jobs))
    for ok, resp in responses:
        if ok:
            assert resp.status_code == 200, resp.text
            assert len(resp.json()) == 2 and all(r["model_version"] == "1" for r in resp.json())
        else:
            assert resp.status_code == 400, resp.text
    count, ones = batch_sizes(httpx.get(f"{server.url}/metrics").text)
    assert count > 0 and count > ones, "no batch ever held more than one request: adaptive batching is off"


def test_health_metrics_and_openapi_docs(server):
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.status_code == 200 and "request_duration_seconds" in metrics.text
    spec = httpx.get(f"{server.url}/docs.json").json()
    assert "/summarize" in spec["paths"]
    assert "texts" in yaml.safe_dump(spec["components"])
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# --------------------------------------------------------------------------------------------- steep serve
def test_steep_serve_requires_the_key_but_health_stays_open(keyed_server):
    url, _, _ = keyed_server
    for path in ("/healthz", "/readyz", "/metrics", "/"):
        assert httpx.get(f"{url}{path}").status_code == 200, path
    missing = post(url, '{"texts": "alpha bravo"}')
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["error"]
    assert post(url, '{"texts": "alpha bravo"}', **{"x-api-key": "wrong"}).status_code == 401
    assert post(url, '{"texts": "alpha bravo"}', **{"x-api-key": "s3cret-key"}).status_code == 200
    assert post(url, '{"texts": "alpha bravo"}', authorization="Bearer s3cret-key").status_code == 200


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
    rows = InferenceLog.for_config(server.cfg).window(timedelta(hours=1))
    assert {"1", new} <= set(rows["model_version"])
