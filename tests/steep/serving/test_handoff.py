"""The config handed to the server process: resolved JSON, a file path, or a bento argument."""

from __future__ import annotations

import pytest

from steep.config import SteepConfig
from steep.serving.handoff import CONFIG_ENV, config_env, service_config


def test_service_config_comes_from_the_resolved_json_or_a_file(tmp_path):
    cfg = SteepConfig.model_validate({"serving": {"port": 4123, "poll_interval": "5s"}})
    assert service_config({CONFIG_ENV: config_env(cfg)}).serving.port == 4123
    path = tmp_path / "steep.yaml"
    path.write_text("serving: {port: 4999}\n")
    assert service_config({CONFIG_ENV: str(path)}).serving.port == 4999
    with pytest.raises(Exception, match="poll_interval"):
        SteepConfig.model_validate({"serving": {"poll_interval": "soon"}})
