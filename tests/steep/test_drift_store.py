"""Drift on a cloud stack: servers ship the inference log to the stack's object storage in batches, and the
drift check reads its window from there. Real fsspec filesystems throughout: the memory and local ones in
the default tier, an S3 API (moto's server) through s3fs in the integration tier.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import pytest

from steep.config import SteepConfig
from steep.deploy.prefect_yaml import job_variables
from steep.drift import Sample
from steep.errors import SteepError
from steep.inference_log import (
    SALT_ENV,
    STORE_ENV,
    InferenceLog,
    Shipper,
    inference_store,
    open_store,
    record,
)
from steep.serving.package import ModelRef, bentofile, render_manifests
from steep.stack.contract import Stack
from steep.stack.record import write_record

SALT = "test-salt"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)
    monkeypatch.setenv(SALT_ENV, SALT)


def config(home: Path, name: str = "acme") -> SteepConfig:
    return SteepConfig.model_validate({"project": {"name": name, "home": str(home)}})


def stack(artifact_uri: str, target: str = "aws") -> Stack:
    return Stack(target=target, mlflow_tracking_uri="http://mlflow.steep.svc.cluster.local:5000",
                 artifact_uri=artifact_uri, prefect_api_url="http://p/api", ray_address="r",
                 serving_url="k8s://c/steep-serving", created_at="2026-01-01T00:00:00+00:00")  # fmt: skip


def rows(n: int, start: int = 0) -> list[dict]:
    meta = {"model_name": "m", "model_version": "3", "run_id": "r", "latency_ms": 1.0, "log_texts": False}
    return [
        record(f"the licensee shall pay royalties number {i}", "pay", request_id=f"q{i}", salt=SALT, **meta)
        for i in range(start, start + n)
    ]


def memory_store() -> str:
    return f"memory://steep-test-{uuid.uuid4().hex[:8]}/inference/acme"


# --------------------------------------------------------------------------------------------- where
def test_the_store_lies_beside_mlflows_artifacts_in_the_stacks_bucket(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert inference_store(cfg, stack("s3://steep-art-1/mlflow")) == "s3://steep-art-1/inference/acme"
    assert inference_store(cfg, stack("gs://steep-art-1/mlflow/")) == "gs://steep-art-1/inference/acme"
    assert inference_store(cfg, stack("s3://bucket")) == "s3://bucket/inference/acme"
    azure = "wasbs://artifacts@steepacct.blob.core.windows.net/mlflow"
    assert inference_store(cfg, stack(azure)) == (
        "wasbs://artifacts@steepacct.blob.core.windows.net/inference/acme"
    )
    # local behaviour stays: no stack, or the local target's file:// artifact store
    assert inference_store(cfg, None) is None
    assert inference_store(cfg, stack("file:///home/u/.steep/stack/mlflow/artifacts", "local")) is None


def test_for_config_takes_a_pods_store_else_the_provisioned_stacks(tmp_path: Path, monkeypatch) -> None:
    cfg = config(tmp_path / ".steep")
    assert InferenceLog.for_config(cfg).store is None  # no stack: the local files, as before
    cfg.home.mkdir(parents=True)
    outputs = {**stack("s3://steep-art-1/mlflow").__dict__}
    outputs = {k: outputs[k] for k in ("target", "mlflow_tracking_uri", "artifact_uri", "prefect_api_url",
                                       "ray_address", "serving_url", "created_at")}  # fmt: skip
    write_record(cfg.home, outputs, None, None)
    log = InferenceLog.for_config(cfg)
    assert log.store == "s3://steep-art-1/inference/acme" and log.location == log.store
    monkeypatch.setenv(STORE_ENV, "memory://given/inference/acme")
    assert InferenceLog.for_config(cfg).store == "memory://given/inference/acme"


def test_a_missing_filesystem_package_names_the_steep_extra() -> None:
    pytest.importorskip("s3fs")  # installed by steep[dev]; gcsfs and adlfs are not
    for uri, extra in [("gs://b/inference/acme", "gcp"),
                       ("wasbs://c@acct.blob.core.windows.net/inference/acme", "azure")]:  # fmt: skip
        try:
            __import__({"gcp": "gcsfs", "azure": "adlfs"}[extra])
            continue  # installed here after all: nothing missing to report
        except ImportError:
            pass
        with pytest.raises(SteepError, match=rf"pip install 'steep\[{extra}\]'"):
            open_store(uri)
    fs, path = open_store("s3://bucket/inference/acme")
    assert type(fs).__name__ == "S3FileSystem" and path == "bucket/inference/acme"


# --------------------------------------------------------------------------------------------- shipping
def test_batches_are_shipped_once_and_the_window_is_read_from_the_store(tmp_path: Path) -> None:
    store = memory_store()
    log = InferenceLog(tmp_path / "inference", SALT, store=store)
    shipper = Shipper(log.root, store, writer="pod-a")
    log._shipper = shipper  # appends must not start a thread here: this test ships by hand
    log.append(rows(5))
    assert shipper.ship() == 5
    assert shipper.ship() == 0  # nothing new: nothing shipped again
    log.append(rows(3, start=5))
    assert shipper.ship() == 3
    fs, base = open_store(store)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    first, second = sorted(fs.find(f"{base}/{day}"))
    assert first.endswith("/pod-a-000000000000.jsonl") and second.rpartition("-")[2] != "000000000000.jsonl"
    window = InferenceLog(tmp_path / "elsewhere", SALT, store=store).window(timedelta(hours=1))
    assert sorted(window["request_id"]) == sorted(f"q{i}" for i in range(8))  # every row, none twice
    assert Sample.from_log(window).lengths == [7] * 8  # what drift compares, from the store


def test_a_failed_upload_keeps_the_rows_and_the_next_batch_carries_them(tmp_path: Path, caplog) -> None:
    """A real local-filesystem store that refuses writes (a file where its folder should be)."""
    target = tmp_path / "bucket"
    target.write_text("not a folder")
    store = f"file://{target}/inference/acme"
    log = InferenceLog(tmp_path / "inference", SALT, store=store)
    shipper = Shipper(log.root, store, writer="pod-a")
    log._shipper = shipper
    log.append(rows(4))
    assert shipper.tick() == 0 and shipper.failures == 1  # logged, not raised
    assert "could not ship the inference log" in caplog.text and "next batch" in caplog.text
    log.append(rows(2, start=4))
    target.unlink()  # the store is back
    assert shipper.tick() == 6 and shipper.failures == 0
    window = InferenceLog(tmp_path / "reader", SALT, store=store).window(timedelta(hours=1))
    assert sorted(window["request_id"]) == sorted(f"q{i}" for i in range(6))


def test_a_batch_shipped_again_overwrites_itself(tmp_path: Path) -> None:
    """Upload done, offset not saved (the process died between): the retry writes the same object."""
    store = memory_store()
    root = tmp_path / "inference"
    InferenceLog(root, SALT).append(rows(3))
    shipper = Shipper(root, store, writer="pod-a")
    assert shipper.ship() == 3
    (root / Shipper.STATE).unlink()
    InferenceLog(root, SALT).append(rows(2, start=3))
    assert shipper.ship() == 5
    window = InferenceLog(tmp_path / "reader", SALT, store=store).window(timedelta(hours=1))
    assert sorted(window["request_id"]) == sorted(f"q{i}" for i in range(5))


def test_a_past_days_file_is_removed_once_shipped_and_a_partial_line_waits(tmp_path: Path) -> None:
    store = memory_store()
    root = tmp_path / "inference"
    root.mkdir()
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    old = [dict(r, ts=(datetime.now(UTC) - timedelta(days=1)).isoformat()) for r in rows(2)]
    (root / f"{yesterday}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    today = root / f"{datetime.now(UTC):%Y-%m-%d}.jsonl"
    line = json.dumps(rows(1, start=9)[0])
    today.write_text(line[:20])  # a line still being written
    shipper = Shipper(root, store, writer="pod-a")
    assert shipper.ship() == 2
    assert not (root / f"{yesterday}.jsonl").exists() and today.exists()
    with today.open("a") as fh:
        fh.write(line[20:] + "\n")
    assert shipper.ship() == 1
    window = InferenceLog(tmp_path / "reader", SALT, store=store).window(timedelta(days=2))
    assert sorted(window["request_id"]) == ["q0", "q1", "q9"]


def test_appends_never_wait_for_the_store_and_close_ships_the_rest(tmp_path: Path) -> None:
    store = memory_store()
    log = InferenceLog(tmp_path / "inference", SALT, store=store)
    started = time.perf_counter()
    log.append(rows(3))
    assert time.perf_counter() - started < 0.5
    assert log._shipper is not None and log._shipper.interval_s >= 30  # ships on its own thread, later
    fs, base = open_store(store)
    assert not fs.exists(base)  # nothing shipped on the request's path
    log.close()  # a server's shutdown (also at interpreter exit)
    window = InferenceLog(tmp_path / "reader", SALT, store=store).window(timedelta(hours=1))
    assert len(window) == 3


def test_an_empty_store_is_an_empty_window(tmp_path: Path) -> None:
    window = InferenceLog(tmp_path, SALT, store=memory_store()).window(timedelta(hours=1))
    assert window.empty and "word_hashes" in window.columns


# --------------------------------------------------------------------------------------------- wiring
def test_serving_pods_and_flow_runs_are_told_the_store(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    aws = stack("s3://steep-art-1/mlflow")
    ref = ModelRef(name="acme-summarizer", version="3", run_id="r" * 32)
    docs = render_manifests(cfg, ref, "img:1", "steep-serving", aws.mlflow_tracking_uri,
                            inference_store=inference_store(cfg, aws))  # fmt: skip
    env = {e["name"]: e.get("value") for e in docs[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[STORE_ENV] == "s3://steep-art-1/inference/acme"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.steep.svc.cluster.local:5000"  # in-cluster
    flow_env = job_variables(cfg, aws, "kubernetes", tmp_path)["env"]
    assert flow_env[STORE_ENV] == "s3://steep-art-1/inference/acme"
    assert flow_env["MLFLOW_TRACKING_URI"] == aws.mlflow_tracking_uri
    local = job_variables(cfg, None, "process", tmp_path)["env"]
    assert STORE_ENV not in local and "MLFLOW_TRACKING_URI" not in local


def test_a_cloud_bento_carries_the_filesystem_of_its_bucket(tmp_path: Path) -> None:
    ref = ModelRef(name="acme-summarizer", version="3", run_id="r" * 32)
    packages = {
        target: {p.partition("==")[0] for p in bentofile(cfg, ref)["python"]["packages"]}
        for target, cfg in (
            (t, SteepConfig.model_validate({"project": {"home": str(tmp_path)}, "stack": {"target": t}}))
            for t in ("local", "aws", "gcp", "azure")
        )
    }
    assert {"s3fs", "gcsfs", "adlfs"} & packages["local"] == set()
    assert {"fsspec", "s3fs"} <= packages["aws"]
    assert "gcsfs" in packages["gcp"] and "adlfs" in packages["azure"]


# --------------------------------------------------------------------------------------------- S3
@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch):
    moto_server = pytest.importorskip("moto.server")
    from steep.stack.daemons import free_ports

    (port,) = free_ports(1)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # s3fs (botocore) goes to moto, not to AWS
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir("steep-artifacts")
    yield endpoint
    server.stop()


@pytest.mark.integration
def test_shipping_to_s3_and_the_drift_window_from_it(s3_server: str, tmp_path: Path, monkeypatch) -> None:
    """Two pods ship to a real S3 API (moto's server) through s3fs; the drift check's log reads them."""
    cfg = config(tmp_path / ".steep")
    store = inference_store(cfg, stack("s3://steep-artifacts/mlflow"))
    assert store == "s3://steep-artifacts/inference/acme"
    monkeypatch.setenv(STORE_ENV, store)
    pods = [InferenceLog(tmp_path / pod, SALT, store=store) for pod in ("pod-a", "pod-b")]
    for i, log in enumerate(pods):
        log._shipper = Shipper(log.root, store, writer=f"pod-{i}")
        log.append(rows(3, start=10 * i))
        assert log._shipper.ship() == 3
    pods[0].append(rows(2, start=5))
    assert pods[0]._shipper.ship() == 2
    reader = InferenceLog.for_config(cfg)
    assert reader.store == store
    window = reader.window(timedelta(hours=1))
    assert sorted(window["request_id"]) == sorted(["q0", "q1", "q2", "q5", "q6", "q10", "q11", "q12"])
    fs, base = open_store(store)
    assert len(fs.find(base)) == 3  # one object per batch
