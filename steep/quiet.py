"""Keep the libraries steep drives quiet: no telemetry, no files in the user's home, no terminal noise.

`quiet_third_parties()` runs once at CLI start (steep.cli.app.main) and at the start of code that runs in
other processes (the Ray Train worker, the serving process). Each switch is at its source: an environment
variable a library reads, a library logger's level, or (only where no switch exists) a filter for one exact
warning. Nothing here hides warnings in general: a warning about the user's data or config still shows.

Every switch is a default, so a user can turn a library back on: environment variables are only set when
unset (`MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=true steep run` shows MLflow's bars again), a logger's level
only when nothing configured it (`logging.getLogger("ray.train").setLevel("INFO")` first wins), and the
known-warning filters only when the user passed no warning options (`PYTHONWARNINGS=default steep run`).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

ENV: dict[str, str] = {
    # no telemetry or usage statistics; a local Ray without token authentication
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GX_ANALYTICS_ENABLED": "false",
    # no fork warning from the tokenizers library (steep tokenizes before Ray forks its workers)
    "TOKENIZERS_PARALLELISM": "false",
    # MLflow: no "Downloading artifacts" bar for each artifact copied while logging and loading a model
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow: no "View run ... at: <url>" lines when a run ends on a tracking server (steep prints its own)
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # huggingface_hub and transformers: no "Loading weights" / "Writing model shards" bars for a local
    # folder that loads in a second (a slow step prints one steep line instead: steep.models)
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}

LOGGERS: dict[str, int] = {
    # "Creating initial MLflow database tables..." / "Updating database tables": the embedded sqlite file
    # being created or migrated, which steep does on its own
    "mlflow.store.db.utils": logging.WARNING,
    # Ray Train: "Running in local mode..." (training.workers=0 is a steep setting, not a user surprise)
    # and "Reported metrics: {...}" at each checkpoint (steep shows its own progress and logs the metrics)
    "ray.train": logging.WARNING,
    # Ray: "Started a local Ray instance." / "Connected to Ray cluster." (training.workers >= 1)
    "ray._private.worker": logging.WARNING,
}

# Known warnings that no switch turns off, each with why it is not the user's to fix: (the start of the exact
# message, its category, the module it is attributed to). Any other warning still shows.
KNOWN_WARNINGS: list[tuple[str, type[Warning], str]] = [
    # PEFT (0.21) asks `getattr(model, "is_gradient_checkpointing", True)` in PeftModel.__init__, and
    # transformers 5 deprecated that property with a FutureWarning. steep never calls it (it does not
    # checkpoint activations); it fires on every get_peft_model / PeftModel.from_pretrained until PEFT
    # reads `is_activation_checkpointing` instead.
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning, r"transformers\.modeling_utils\Z"),
    # MLflow (3.17) warns when a model with a signature is logged without an input example. Giving one makes
    # log_model load the model and generate with it to validate the example (measured on SmolLM2-135M +
    # LoRA, 2 CPU cores: logged_model.log_summarizer 1.3-1.6 s -> 7-17 s), pyfunc.log_model has no parameter
    # to skip that, and the signature steep logs already describes the input. (MLflow colours the message:
    # it starts with an ANSI escape.)
    (
        r"(\x1b\[[\d;]*m)?An input example was not provided when logging the model",
        UserWarning,
        r"mlflow\.pyfunc\Z",
    ),
]


# Records of one library logger to drop by the start of their message, where the logger also carries lines the
# user wants. Prefect logs these on its top-level `prefect` logger, whose children carry steep's own flow and
# task lines: the temporary API of the embedded default is steep's choice, not news to the user.
DROPPED_RECORDS: dict[str, tuple[str, ...]] = {
    "prefect": ("Starting temporary server on ", "Stopping temporary server on "),
}


class _DropByPrefix(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def quiet_third_parties() -> None:
    """Set the switches above (defaults only: whatever the user set first wins). Idempotent."""
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    for name, level in LOGGERS.items():
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)
    for name, prefixes in DROPPED_RECORDS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropByPrefix) for f in logger.filters):
            logger.addFilter(_DropByPrefix(prefixes))
    if not sys.warnoptions:  # -W / PYTHONWARNINGS: the user chose which warnings to see
        for message, category, module in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
    _progress_bars_already_imported()


def _progress_bars_already_imported() -> None:
    """huggingface_hub and transformers read HF_HUB_DISABLE_PROGRESS_BARS once, when first imported."""
    if not _truthy(os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")):
        return
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers.utils.logging" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
