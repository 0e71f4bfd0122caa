"""The API-key rule: fails closed, accepts the header or a bearer token, leaves health and docs open."""

from __future__ import annotations

import pytest

from steep.config import ServingConfig
from steep.serving import ServingError
from steep.serving.auth import api_key, authorized, is_open


def test_api_key_fails_closed_when_its_variable_is_missing():
    assert api_key(ServingConfig()) is None
    keyed = ServingConfig(api_key_env="MY_KEY")
    with pytest.raises(ServingError, match=r"MY_KEY.*export MY_KEY"):
        api_key(keyed, environ={})
    assert api_key(keyed, environ={"MY_KEY": "k"}) == "k"


def test_authorized_accepts_the_header_or_a_bearer_token_only_with_the_right_key():
    assert authorized({}, None)
    assert authorized({"x-api-key": "k"}, "k") and authorized({"authorization": "Bearer k"}, "k")
    assert not authorized({}, "k") and not authorized({"x-api-key": "nope"}, "k")
    assert not authorized({"authorization": "Basic k"}, "k")
    assert is_open("/healthz") and is_open("/readyz") and is_open("/metrics") and is_open("/")
    assert not is_open("/summarize")
