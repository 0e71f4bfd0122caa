"""`steep package` for real: `bentoml build` with locking off, the build context and manifests; then the
built bento under `bentoml serve` answers with the version it was built for, even after the champion moves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from steep import tracking
from steep.config import dump_config
from steep.serving import process
from tests.bentos.conftest import free_port, register_tiny, tiny_serving_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    root = tmp_path_factory.mktemp("package")
    cfg = tiny_serving_config(root / "home", root / "tiny", port=3123, min_replicas=1, max_replicas=5)
    version = register_tiny(cfg, root / "tiny")
    config = root / "steep.yaml"
    config.write_text(dump_config(cfg))
    out = root / "out"
    env = {**os.environ, "BENTOML_HOME": str(root / "bentoml")}
    result = subprocess.run(
        [sys.executable, "-m", "steep", "package", "--config", str(config), "--k8s", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return cfg, root, out, version, env


def test_the_bento_is_tagged_with_the_model_version_and_pins_it(packaged):
    _, root, out, version, _ = packaged
    bento = root / "bentoml" / "bentos" / "steep-summarizer" / f"v{version}"
    meta = yaml.safe_load((bento / "bento.yaml").read_text())
    assert meta["name"] == "steep-summarizer" and meta["version"] == f"v{version}"
    assert meta["labels"]["steep.model_version"] == version
    baked = json.loads(meta["args"]["steep_config"])
    assert baked["serving"]["model_alias"] == version
    reqs = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "torch==" in reqs and "--hash" not in reqs  # package locking off: our pins, not a resolved lock
    assert "+cpu" not in reqs
    assert (bento / "src" / "steep" / "bentos" / "summarizer" / "static" / "index.html").is_file()
    assert (out / "context" / "env" / "docker" / "Dockerfile").is_file()
    dockerfile = (out / "context" / "env" / "docker" / "Dockerfile").read_text()
    assert "EXPOSE 3123" in dockerfile or "EXPOSE 3000" in dockerfile


def test_the_manifests_point_at_the_image_of_that_version(packaged):
    _, _, out, version, _ = packaged
    docs = {d["kind"]: d for d in yaml.safe_load_all((out / "k8s" / "summarizer.yaml").read_text())}
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    [container] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"steep-summarizer:v{version}"
    assert container["ports"][0]["containerPort"] == 3123
    assert docs["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 5


def test_the_built_bento_serves_its_own_version_after_the_champion_moves(packaged):
    cfg, root, _, version, env = packaged
    newer = register_tiny(cfg, root / "tiny", promote=True)
    assert newer != version
    port = free_port()
    serve_env = {**env, "MLFLOW_TRACKING_URI": tracking.default_tracking_uri(cfg)}
    serve_env.pop("STEEP_SERVING_CONFIG", None)
    workdir = root / "run"
    workdir.mkdir()
    serve_env["STEEP__PROJECT__HOME"] = str(workdir / "state")  # what the Deployment sets to its volume
    log = root / "bento-serve.log"
    bentoml = [sys.executable, "-m", "bentoml"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [*bentoml, "serve", f"steep-summarizer:v{version}", "--host", "127.0.0.1", "--port", str(port)],
            env=serve_env, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            process.wait_ready(url, proc, timeout_s=150)
        except Exception:
            print(log.read_text()[-4000:])
            raise
        resp = httpx.post(f"{url}/summarize", json={"texts": "alpha bravo"}, timeout=60)
        assert resp.status_code == 200, resp.text
        assert resp.json()[0]["model_version"] == version
        deadline = time.monotonic() + 15  # the server answers first, then appends to its log
        while not list((workdir / "state" / "inference").glob("*.jsonl")):
            assert time.monotonic() < deadline, "no inference log under the container's volume"
            time.sleep(0.2)
    finally:
        process.stop(proc)
