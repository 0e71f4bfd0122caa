"""The API-key rule: which key the server requires, which requests carry it, which paths stay open."""

from __future__ import annotations

import hmac
import os

from steep.config import ServingConfig
from steep.serving import ServingError

API_KEY_HEADER = "x-api-key"
OPEN_PATHS = frozenset({"/", "/healthz", "/livez", "/readyz", "/metrics", "/docs", "/docs.json"})
OPEN_PREFIXES = ("/static_content/",)


def api_key(serving: ServingConfig, environ: dict[str, str] | None = None) -> str | None:
    """The API key the server requires, or None when serving.api_key_env is unset; fails closed."""
    if not serving.api_key_env:
        return None
    environ = os.environ if environ is None else environ
    key = environ.get(serving.api_key_env, "")
    if not key:
        raise ServingError(
            f"serving.api_key_env names {serving.api_key_env}, but that variable is empty or unset: "
            f"export {serving.api_key_env}=<a secret key>, "
            "or set serving.api_key_env: null to serve without auth"
        )
    return key


def authorized(headers: dict[str, str], key: str | None) -> bool:
    """X-API-Key: KEY or Authorization: Bearer KEY, compared in constant time."""
    if key is None:
        return True
    given = headers.get(API_KEY_HEADER, "")
    bearer = headers.get("authorization", "")
    if not given and bearer.lower().startswith("bearer "):
        given = bearer[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


def is_open(path: str) -> bool:
    """Health, metrics, the web page and the API docs need no key; the page itself asks for one."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
