"""The OpenAPI document a real `bentoml serve` process serves at /docs.json, against that server: every
answer it gives matches the document.

schemathesis (`st run`, all checks, positive and negative data) generates requests for every operation in
the document, steep's routes and BentoML's own (/healthz, /livez, /readyz, /metrics), and checks each answer
against it: status declared, content type, body schema (the 400/404 errors, each server-sent event of a
stream), schema-valid requests accepted and schema-violating ones refused, no 5xx. The refusals it cannot
provoke are sent here by hand and checked against the document too: 413 (a body over serving.max_body_bytes)
and 401 (`steep serve` with an API key, asked without it). Not provoked: 503, answered only while the model
loads or when a request waits over serving.max_latency_ms; its body comes from the same handler as the 404s
schemathesis checks.

Checks that run but have nothing to judge here (none is excluded): `ignored_auth` (the document declares no
security scheme: this server needs no key, and the key of `steep serve` is checked by hand below), and the
stateful ones, `use_after_free`, `ensure_resource_availability`, `object_level_authorization` (no operation
creates or deletes a resource, so there are no links to follow: the stateful phase reports not applicable).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import schemathesis

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = 100  # per operation and phase: about 700 requests, some 15 s on 2 cores
SEED = 15  # reproducible; run `st run` by hand with other seeds to explore further
STEEP_ROUTES = ("/summarize", "/v1/models", "/v1/completions", "/v1/chat/completions")


def run_schemathesis(url: str, folder: Path) -> dict:
    """`st run` against the server's own document; its JSON report."""
    served = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
    config = folder / "schemathesis.toml"
    # a random `model` is a 404: the generated requests name a served model 9 times in 10
    config.write_text(
        f"[dictionaries.models]\nvalues = {json.dumps(served)}\n\n"
        '[parameters]\n"body.model" = { dictionary = "models", probability = 0.9 }\n'
    )
    report = folder / "report.json"
    command = [
        str(SCHEMATHESIS), "--config-file", str(config), "run", f"{url}/docs.json",
        "--checks", "all", "--mode", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
        "--workers", "1",  # hypothesis's lambda-source cache is not thread-safe (spurious errors with 2)
        "--max-response-time", "30",  # on (all checks); 16 tokens on 2 busy cores can take a few seconds
        "--request-timeout", "60", "--output-sanitize", "false",  # unsanitized: `max_tokens` is no secret
        "--report", "json", "--report-json-path", str(report),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600)
    assert report.exists(), done.stdout[-4000:] + done.stderr[-4000:]
    found = json.loads(report.read_text())
    found["output"] = done.stdout
    assert done.returncode == found["exit_code"]
    return found


def test_every_answer_matches_the_openapi_document(server, tmp_path):
    found = run_schemathesis(server.url, tmp_path)
    output = found["output"][-12000:]
    assert found["failures"] == [] and found["errors"] == [], output
    assert found["exit_code"] == 0, output
    operations = found["operations"]
    assert operations["tested"] == operations["selected"] == operations["total"] == 8, operations
    assert {name: hits for name, hits in found["warnings"].items() if hits} == {}, output
    phases = found["phases"]
    assert {phases[p]["status"] for p in ("examples", "coverage", "fuzzing")} == {"success"}, phases
    assert phases["stateful"]["skip_reason"] == "not_applicable"  # no links between operations to follow
    for route in ("POST /summarize", "POST /v1/completions", "POST /v1/chat/completions"):
        accepted = found["valid_rates"][route]["fuzzing"]["accepted"]
        assert accepted > 0, f"{route}: no generated request got past validation to the model"


def check(document: schemathesis.BaseSchema, answer: httpx.Response) -> httpx.Response:
    """The answer against what the document declares for its operation: status, content type, schema."""
    request = answer.request
    path = request.url.path
    document[path][request.method].Case().validate_response(answer)
    return answer


def test_a_body_over_the_limit_gets_a_413_the_document_declares(server):
    document = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    limit = server.cfg.serving.max_body_bytes
    body = b'{"texts": "' + b"a" * limit + b'"}'
    for path in ("/summarize", "/v1/completions", "/v1/chat/completions"):
        answer = check(document, httpx.post(f"{server.url}{path}", content=body, timeout=60))
        assert answer.status_code == 413, path
        assert answer.json()["error"]["code"] == "request_too_large"


def test_a_request_without_the_key_gets_a_401_the_document_declares(keyed_server):
    url, _, _ = keyed_server
    document = schemathesis.openapi.from_url(f"{url}/docs.json")
    chat = {"model": "m", "messages": [{"role": "user", "content": "alpha"}]}
    with httpx.Client(base_url=url, timeout=60) as http:
        refused = [
            http.post("/summarize", json={"texts": "alpha bravo"}),
            http.get("/v1/models"),
            http.post("/v1/completions", json={"model": "m", "prompt": "alpha"}),
            http.post("/v1/chat/completions", json=chat),
        ]
        assert {answer.request.url.path for answer in refused} == set(STEEP_ROUTES)
        for answer in refused:
            assert check(document, answer).status_code == 401, answer.request.url
            assert answer.json()["error"]["code"] == "invalid_api_key"
        for path in ("/healthz", "/livez", "/readyz", "/metrics"):  # BentoML's own routes stay open
            assert check(document, http.get(path)).status_code == 200, path
