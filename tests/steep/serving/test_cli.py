"""`steep serve` and `steep package` as a user runs them."""

from __future__ import annotations

import yaml

from steep.config import dump_config
from tests.bentos.conftest import register_tiny, tiny_serving_config
from tests.cli.test_cli import assert_user_error, steep


def test_steep_serve_stops_early_without_a_champion_or_without_its_key(tmp_path):
    home = ["--set", f"project.home={tmp_path / 'home'}"]
    assert_user_error(steep("serve", *home), "no version with alias 'champion'", "steep run")
    keyed = ["--set", "serving.api_key_env=STEEP_NO_SUCH_KEY_VAR"]
    assert_user_error(steep("serve", *home, *keyed), "STEEP_NO_SUCH_KEY_VAR", "serving.api_key_env: null")


def test_steep_package_manifests_only_writes_parseable_yaml(tmp_path):
    cfg = tiny_serving_config(tmp_path / "home", tmp_path / "tiny")
    version = register_tiny(cfg, tmp_path / "tiny")
    config = tmp_path / "steep.yaml"
    config.write_text(dump_config(cfg))
    out = tmp_path / "out"
    result = steep("package", "--config", str(config), "--manifests-only", "--image-repo", "repo.invalid/x",
                   "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all((out / "k8s" / "summarizer.yaml").read_text())}
    [container] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"repo.invalid/x/steep-summarizer:v{version}"
    assert docs["Deployment"]["metadata"]["labels"]["steep/model-version"] == version
    assert "create secret generic steep-summarizer-inference-salt --from-file=salt=" in result.stdout
