"""The config the server process runs with, handed over whole so it serves exactly what the command resolved.

`steep serve` puts it in an environment variable; `steep package` bakes it into the bento as an argument.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import ValidationError

from steep.config import SteepConfig, apply_overrides, load_config
from steep.serving import ServingError

CONFIG_ENV = "STEEP_SERVING_CONFIG"  # the resolved config as JSON, or a path to a steep.yaml
CONFIG_ARG = "steep_config"  # the same JSON as a bento argument, baked in by `steep package`


def config_env(cfg: SteepConfig) -> str:
    """The value of CONFIG_ENV that hands a resolved config (file + overrides) to the server process."""
    return json.dumps(cfg.model_dump(mode="json"), separators=(",", ":"))


def service_config(
    environ: dict[str, str] | None = None, arguments: dict[str, Any] | None = None
) -> SteepConfig:
    """The config the server runs with: the bento argument CONFIG_ARG (a packaged model), else CONFIG_ENV
    (JSON or a file path, set by `steep serve`), else ./steep.yaml. STEEP__SECTION__KEY variables override
    each (a container sets STEEP__PROJECT__HOME to its volume)."""
    environ = os.environ if environ is None else environ
    baked = (arguments or {}).get(CONFIG_ARG) or environ.get(CONFIG_ENV, "").strip()
    if isinstance(baked, str) and not baked.startswith("{"):
        return load_config(baked or None, environ=environ)
    data = json.loads(baked) if isinstance(baked, str) else dict(baked)
    apply_overrides(data, environ=environ)
    try:
        return SteepConfig.model_validate(data)
    except ValidationError as exc:
        raise ServingError(f"the server's config is invalid: {exc}") from exc
