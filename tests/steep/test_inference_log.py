"""The inference log's salt: secret, made once per stack, shared by every process that opens the log."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest

from steep.config import SteepConfig
from steep.errors import SteepError
from steep.inference_log import SALT_ENV, InferenceLog, hash_word, inference_salt, salt_file
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def no_salt_in_env(monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)


def config(home, name: str = "steep") -> SteepConfig:
    return SteepConfig.model_validate({"project": {"name": name, "home": str(home)}})


def test_the_salt_is_a_secret_not_the_project_name(tmp_path):
    cfg = config(tmp_path / "home", name="acme-legal")
    salt = InferenceLog.for_config(cfg).salt
    assert salt != cfg.project.name and cfg.project.name not in salt
    assert len(salt) == 64 and int(salt, 16) >= 0  # secrets.token_hex(32)
    assert hash_word("licensee", salt) != hash_word("licensee", cfg.project.name)


def test_the_salt_file_is_private_and_kept_out_of_git(tmp_path):
    cfg = config(tmp_path / "home")
    inference_salt(cfg)
    path = salt_file(cfg.home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert (path.parent / ".gitignore").read_text() == "*\n"
    assert sorted(p.name for p in path.parent.iterdir()) == [".gitignore", "inference-salt"]  # no temp left


def test_the_salt_is_stable_and_shared_by_configs_with_the_same_home(tmp_path):
    first = InferenceLog.for_config(config(tmp_path / "home", name="one")).salt
    assert InferenceLog.for_config(config(tmp_path / "home", name="two")).salt == first
    assert inference_salt(config(tmp_path / "home")) == first
    assert inference_salt(config(tmp_path / "elsewhere")) != first


def test_processes_starting_at_once_agree_on_one_salt(tmp_path):
    home = tmp_path / "home"
    code = (
        "import sys; from steep.config import SteepConfig; from steep.inference_log import inference_salt; "
        "print(inference_salt(SteepConfig.model_validate({'project': {'home': sys.argv[1]}})))"
    )
    env = {"PATH": "", "HOME": str(tmp_path)}
    argv = [sys.executable, "-c", code, str(home)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env) for _ in range(4)]
    salts = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(salts) == 1 and salts == {inference_salt(config(home))}


def test_the_environment_carries_the_salt_of_a_pod(tmp_path, monkeypatch):
    cfg = config(tmp_path / "home")
    monkeypatch.setenv(SALT_ENV, "from-a-kubernetes-secret\n")
    assert InferenceLog.for_config(cfg).salt == "from-a-kubernetes-secret"
    assert not salt_file(cfg.home).exists()  # nothing written where the environment has it


def test_an_emptied_salt_file_is_an_error_not_a_new_salt(tmp_path):
    cfg = config(tmp_path / "home")
    inference_salt(cfg)
    salt_file(cfg.home).write_text("")
    with pytest.raises(SteepError, match=r"salt file .* is empty: delete it"):
        inference_salt(cfg)
