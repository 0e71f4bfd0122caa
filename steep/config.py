"""steep.yaml as one pydantic model.

Every stage reads its section from here, so a typo or a wrong type is caught before anything starts,
with a message that names the key path, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_serializer,
    model_validator,
)

from steep.errors import SteepError
from steep.instruction import DEFAULT_INSTRUCTION

DEFAULT_CONFIG_FILE = "steep.yaml"
ENV_PREFIX = "STEEP__"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class ConfigError(SteepError):
    """A config problem a user can fix; the message says what and how."""


def parse_duration(value: str | int | float) -> float:
    """'90s', '15m', '4h', '2d' or a number of seconds -> seconds."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"a duration like 90s, 15m, 4h or 2d, got {value!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[str, AfterValidator(_check_duration), Field(description="a duration: 90s, 15m, 4h, 2d")]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------- sections
PROJECT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")
PROJECT_NAME_RULE = (
    "3-40 characters: lowercase letters, digits and hyphens, starting with a letter and ending with a "
    "letter or digit, e.g. acme-contracts (it names the registered model, the bento and the stack)"
)


def _check_project_name(value: str) -> str:
    if not PROJECT_NAME.fullmatch(value):
        raise ValueError(f"a project name must be {PROJECT_NAME_RULE}")
    return value


class ProjectConfig(Section):
    name: Annotated[str, AfterValidator(_check_project_name)] = Field(
        "steep",
        description="names the stack, runs and models",
        json_schema_extra={"pattern": PROJECT_NAME.pattern},
    )
    home: str = Field(
        ".steep", description="where steep keeps state: caches, tracking db, checkpoints, stack.json"
    )
    seed: int = Field(42, description="seed for splits, sampling and training")


class LocalStackConfig(Section):
    host: str = Field("127.0.0.1", description="interface the local services bind to")
    mlflow_port: int = Field(5000, ge=1024, le=65535)
    prefect_port: int = Field(4200, ge=1024, le=65535)
    ray_port: int = Field(6379, ge=1024, le=65535)
    ray_dashboard_port: int = Field(8265, ge=1024, le=65535)
    start_timeout: Duration = Field("3m", description="how long each service may take to become healthy")
    ray_worker_nodes: int = Field(
        0, ge=0, le=8,
        description="Ray worker nodes besides the head, each a raylet with its own CPUs (the head then "
        "offers none, as on a cloud stack); 0: the head alone does the work",
    )  # fmt: skip
    ray_worker_cpus: int | None = Field(
        None, ge=1, le=256,
        description="CPUs each Ray worker node offers; none: this machine's CPUs split evenly",
    )  # fmt: skip


class StackConfig(Section):
    target: Literal["local", "aws", "gcp", "azure"] = "local"
    region: str | None = Field(None, description="cloud region; ignored by the local target")
    budget_usd_per_hour: float | None = Field(
        None, gt=0, description="refuse to provision above this estimate"
    )
    ttl: Duration | None = Field(None, description="tear the stack down this long after provisioning")
    idle_timeout: Duration = Field("2h", description="tear down after this long with no training or serving")
    gpu_nodes: int = Field(0, ge=0, le=64, description="most GPU nodes; the cloud pool scales 0..this")
    cpu_nodes: int = Field(2, ge=1, le=256, description="most CPU nodes; the cloud pool scales 0..this")
    spot: bool = Field(True, description="use spot/preemptible GPU nodes where the cloud has them")
    cpu_instance_type: str | None = Field(
        None, description="CPU node machine type; none: the target's default"
    )
    gpu_instance_type: str | None = Field(
        None, description="GPU node machine type; none: the target's default"
    )
    flow_image: str | None = Field(
        None,
        description="container image flow runs use on a cloud stack (push it to a registry the cluster "
        "pulls from); none: <project>-flows:latest",
    )
    idle_check_interval: Duration = Field("1m", description="how often the idle/TTL watchdog looks")
    kube_context: str | None = Field(
        None,
        description="kubeconfig context steep port-forwards to a cloud stack's services through; none: "
        "the context of the stack's cluster (found in your kubeconfig)",
    )
    backend_config: dict[str, str] = Field(
        default_factory=dict,
        description="remote Terraform state (with locking): bucket, key, region, dynamodb_table / "
        "prefix / storage_account_name, container_name; empty keeps the state under project.home",
    )
    local: LocalStackConfig = LocalStackConfig()


class SplitConfig(Section):
    train: float = Field(0.7, gt=0, lt=1)
    validation: float = Field(
        0.15,
        ge=0,
        lt=1,
        description="what `steep tune` judges settings on; 5% of the legal set (25 rows) was too few",
    )
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must add up to 1, got {total:g}")
        return self


def _column_named(value: Any) -> Any:
    if value is None:
        raise ValueError(
            "not set: name the column of your data that holds it (`steep init --data FILE` proposes one "
            "and writes a QUESTION comment where it could not tell)"
        )
    return value


class DataConfig(Section):
    source: str = Field(
        "https://raw.githubusercontent.com/lauramanor/legal_summarization/master/all_v1.json",
        description="a local path or an http(s) URL of JSONL, JSON, CSV or Parquet",
    )
    format: Literal["auto", "jsonl", "json", "csv", "parquet"] = "auto"
    sha256: str | None = Field(
        "062e2e176b10e08e2b56c1675a64f5a5ddaac537d84bd68a92257015f46797fd",
        pattern=r"^[0-9a-f]{64}$",
        description="expected checksum of a downloaded source; checked on download and on seeding the cache",
    )
    id_column: str | None = Field("uid", description="unique row id; none means the row number")
    text_column: Annotated[str, BeforeValidator(_column_named)] = Field(
        "original_text", description="the column holding the documents to summarize"
    )
    summary_column: Annotated[str, BeforeValidator(_column_named)] = Field(
        "reference_summary", description="the column holding the reference summaries"
    )
    group_column: str | None = Field("doc", description="rows sharing this value never straddle two splits")
    split: SplitConfig = SplitConfig()


class PiiConfig(Section):
    emails: Literal["ignore", "warn", "fail"] = "warn"
    phone_numbers: Literal["ignore", "warn", "fail"] = "warn"


class ValidationConfig(Section):
    min_rows: int = Field(50, ge=1)
    text_min_chars: int = Field(20, ge=1)
    text_max_chars: int = Field(20_000, ge=1)
    summary_min_words: int = Field(4, ge=1, description="shorter summaries ('hi.') are bad rows")
    summary_max_chars: int = Field(2_000, ge=1)
    summary_shorter_than_text: bool = True
    max_duplicate_summary_fraction: float = Field(0.5, ge=0, le=1)
    pii: PiiConfig = PiiConfig()
    on_bad_rows: Literal["drop", "fail"] = "drop"

    @model_validator(mode="after")
    def _bounds(self) -> ValidationConfig:
        if self.text_min_chars > self.text_max_chars:
            raise ValueError(
                f"text_min_chars ({self.text_min_chars}) must be <= text_max_chars ({self.text_max_chars})"
            )
        return self


class ModelConfig(Section):
    source: str = Field(
        "smollm2-135m-instruct",
        description="a Hugging Face id, a local folder, or the offline default smollm2-135m-instruct",
    )
    kind: Literal["auto", "causal", "seq2seq"] = "auto"
    max_source_tokens: int = Field(384, ge=8, le=32_768)
    max_target_tokens: int = Field(64, ge=4, le=4_096)
    task_prefix: str = Field("summarize: ", description="prepended to the text for seq2seq models")
    instruction: str = Field(
        DEFAULT_INSTRUCTION,
        description="the instruction put before the text for causal models; name your kind of text "
        "(`steep init --data` proposes one from the data)",
    )


class LoraConfig(Section):
    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    layers: int | None = Field(
        None,
        ge=1,
        description="adapt only the last N transformer blocks (decoder-only models): backward stops below "
        "them, so a step costs less (on a 2-core CPU, half of SmolLM2's 30 blocks: ~25% faster); none: all",
    )


class PromptTuningConfig(Section):
    num_virtual_tokens: int = Field(20, ge=1, le=512)


class TrainingConfig(Section):
    method: Literal["lora", "prompt_tuning", "full"] = "lora"
    epochs: int = Field(2, ge=1, le=1000)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(8, ge=1, description="examples per optimizer step, over all workers")
    learning_rate: float = Field(1e-3, gt=0, lt=1)  # 2 epochs at 1e-3: `steep tune`'s best on the legal set
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    workers: int = Field(
        0,
        ge=0,
        le=1024,
        description="Ray Train workers; 0 trains in the run's own process, fastest on one machine (on 2 "
        "cores about 1.25x the tokens/s of one Ray Train worker, whose own processes share the cores; no "
        "fault tolerance). On a provisioned stack use 2 or more: Ray Train DDP across its nodes",
    )
    use_gpu: bool = False
    placement: Literal["auto", "spread", "pack"] = Field(
        "auto",
        description="where Ray puts the workers: spread forces one per node (Ray's STRICT_SPREAD), pack "
        "fills a node first; auto spreads when the cluster has a node for each worker, else packs",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="bf16 autocast (fp32 master weights); auto: on GPU, and on CPUs with native bf16 "
        "(AVX512-BF16 or AMX), else fp32",
    )
    packing: bool = Field(
        False,
        description="pack each step's examples end to end into rows of model.max_source_tokens + "
        "max_target_tokens tokens, attention kept inside each example (causal models; lora or full). "
        "Pays where padding is large or attention is variable-length (flash_attention_2, flex_attention); "
        "steep's length-grouped batches already leave little padding",
    )
    attention: Literal["sdpa", "eager", "flex_attention", "flash_attention_2"] = Field(
        "sdpa",
        description="attention kernel while training; with packing, flex_attention (GPU) and "
        "flash_attention_2 (needs the flash-attn package) skip the attention between packed examples",
    )
    max_failures: int = Field(
        1, ge=0, description="worker crashes survived by restarting from the checkpoint"
    )
    checkpoint_every_steps: int | None = Field(
        None,
        ge=1,
        description="also checkpoint every this many steps (a checkpoint is always taken each epoch)",
    )
    merge_weights: bool = Field(False, description="log merged weights instead of the adapter")
    validation_loss: bool = Field(
        False,
        description="at each epoch end, the mean loss per summary token on the validation split (the MLflow "
        "series val_loss); costs a forward pass over those rows per epoch. `steep tune` turns it on: its "
        "early stopping reads it",
    )
    lora: LoraConfig = LoraConfig()
    prompt_tuning: PromptTuningConfig = PromptTuningConfig()

    @model_validator(mode="after")
    def _packing(self) -> TrainingConfig:
        if self.packing and self.method == "prompt_tuning":
            raise ValueError(
                "packing cannot be combined with method=prompt_tuning (the soft prompt is prepended to "
                "each row, not to each packed example): set packing: false or use lora / full"
            )
        return self


# what `evaluation.must_beat` may name: the other rows of the evaluation table
GATE_OPPONENTS = ("lead-1", "base", "champion")


def _confidence_level(value: Any) -> Any:
    """`off`, `none`, false or null: the point rule. YAML reads a bare `off` as false."""
    if value is False or value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in {"off", "none", "null", ""}:
        return None
    if value is True:
        raise ValueError("give a confidence level such as 0.95, or off")
    return value


def _one_or_more(value: Any) -> Any:
    """`--set evaluation.must_beat=lead-1` names one."""
    return [value] if isinstance(value, str) else value


def _opponents(value: list[str]) -> list[str]:
    unknown = [v for v in value if v not in GATE_OPPONENTS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], GATE_OPPONENTS, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown name {unknown[0]!r}{hint}; choose from {', '.join(GATE_OPPONENTS)}")
    return list(dict.fromkeys(value))


class EvaluationConfig(Section):
    metric: Literal["rouge1", "rouge2", "rougeL"] = "rougeL"
    min_score: float = Field(0.0, ge=0, le=1, description="the challenger must reach this")
    min_improvement: float = Field(0.0, ge=-1, le=1, description="over the champion (or the base model)")
    confidence: Annotated[float | None, BeforeValidator(_confidence_level)] = Field(
        None, ge=0.5, lt=1,
        description="e.g. 0.95: promote only when the lower end of this paired bootstrap interval of the "
        "improvement exceeds min_improvement (against a champion, a negative min_improvement then means: "
        "surely not worse by more than that); off: the point estimate decides. Intervals are reported at "
        "this level (or 0.95)",
    )  # fmt: skip
    must_beat: Annotated[list[str], BeforeValidator(_one_or_more), AfterValidator(_opponents)] = Field(
        default_factory=list,
        description=f"also beat these the same way (any of {', '.join(GATE_OPPONENTS)}), e.g. [lead-1]",
    )
    bootstrap_resamples: int = Field(
        2000, ge=100, le=100_000, description="resamples of the paired bootstrap (seeded by project.seed)"
    )
    max_regression: float = Field(0.02, ge=0, le=1, description="largest drop allowed on the other metrics")
    require_approval: bool = False
    approval_timeout: Duration = "1h"
    batch_size: int = Field(16, ge=1)
    max_examples: int | None = Field(None, ge=1, description="evaluate at most this many test rows")


class ServingConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    model_alias: str = Field("champion", description="registry alias (or a version number) to serve")
    max_batch_size: int = Field(16, ge=1)
    max_latency_ms: int = Field(
        60_000,
        ge=1,
        description="a request that cannot be answered within this is refused (503); CPU generation of a "
        "full batch takes seconds, so 32 clients queue for tens of seconds",
    )
    max_texts: int = Field(64, ge=1, description="texts per request")
    max_text_chars: int = Field(20_000, ge=1)
    max_new_tokens: int = Field(
        48, ge=1, le=4096, description="summary length limit, in tokens; evaluation generates with it too"
    )
    repetition_penalty: float = Field(
        1.0, ge=1.0, le=2.0,
        description="> 1 makes tokens a summary already generated less likely (the text's own words are not "
        "penalized); evaluation generates with it too; requests may set their own",
    )  # fmt: skip
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="generation precision, for serving and for evaluation; auto: bf16 on GPU and on CPUs "
        "with native bf16 (AVX512-BF16 or AMX), else fp32",
    )
    max_tokens_limit: int = Field(
        256, ge=1, le=4096, description="the largest max_tokens an OpenAI-style request may ask for"
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    log_texts: bool = Field(False, description="store full texts in the inference log (else statistics only)")
    api_key_env: str | None = Field(
        None, description="name of the env var holding the API key; none: no auth"
    )
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_cpu_utilization: int = Field(70, ge=1, le=100)
    build_on_promote: bool = Field(
        True, description="`steep run` builds the bento of a newly promoted champion (tag v<version>)"
    )
    poll_interval: Duration = Field(
        "30s", description="how often a running server checks whether model_alias moved (hot swap)"
    )

    @model_validator(mode="after")
    def _replicas(self) -> ServingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
            )
        return self


class DriftConfig(Section):
    schedule: str = Field("0 * * * *", description="cron for the drift check")
    retrain_schedule: str | None = Field(None, description="cron for scheduled retraining; none: drift only")
    window: Duration = "24h"
    min_window_rows: int = Field(50, ge=1)
    psi_threshold: float = Field(0.2, gt=0)
    oov_threshold: float = Field(0.25, gt=0, le=1)
    js_threshold: float = Field(0.2, gt=0, le=1)
    failing_share_threshold: float = Field(0.1, gt=0, le=1)
    calibrate: bool = Field(
        True,
        description="raise each threshold to the level the training data itself reaches between held-out "
        "groups (95th percentile), so ordinary new documents are not called drift",
    )
    cooldown: Duration = "6h"


# --------------------------------------------------------------------------------------------- tune
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
# what `steep tune` may search: training settings, the prompt, and how summaries are decoded
TUNABLE_MODEL_KEYS = ("max_source_tokens", "max_target_tokens", "instruction", "task_prefix")
DECODING_KEYS = ("max_new_tokens", "repetition_penalty", "num_beams", "length_penalty")
NOT_TUNABLE = {
    "training.workers": "each trial trains in-process in one Ray task of its own (training.workers=0)",
    "training.use_gpu": "it is a property of the cluster, not a setting to search",
    "training.placement": "each trial trains in-process in one Ray task of its own",
    "training.max_failures": "a failed trial is reported and the search goes on",
    "training.checkpoint_every_steps": "it changes no result, only what a crash costs",
    "training.merge_weights": "it changes how the model is stored, not what it generates",
    "training.validation_loss": "steep tune always computes it: its early stopping reads it",
}


class Distribution(Section):
    """One key's search range: exactly one of choice / uniform / loguniform / randint."""

    choice: list[Any] | None = Field(None, min_length=1, description="one of these values")
    uniform: tuple[float, float] | None = Field(None, description="[low, high]: any number between")
    loguniform: tuple[float, float] | None = Field(
        None, description="[low, high], both > 0: uniform on a log scale (learning rates)"
    )
    randint: tuple[int, int] | None = Field(None, description="[low, high]: a whole number, both included")

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [k for k in DISTRIBUTIONS if getattr(self, k) is not None]
        if len(given) != 1:
            got = f"; got {' and '.join(given)}" if given else ""
            raise ValueError(
                f"give exactly one of {', '.join(DISTRIBUTIONS)}, e.g. {{loguniform: [1e-4, 2e-3]}} or "
                f"{{choice: [8, 16, 32]}}{got}"
            )
        if self.kind != "choice":
            low, high = self.args
            if not low < high:
                raise ValueError(f"{self.kind}: low must be below high, got [{low:g}, {high:g}]")
            if self.kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: both ends must be > 0, got [{low:g}, {high:g}]")
        return self

    @model_serializer(mode="wrap")
    def _only_the_given(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}

    @property
    def kind(self) -> str:
        return next(k for k in DISTRIBUTIONS if getattr(self, k) is not None)

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)


def default_space() -> dict[str, Distribution]:
    """What a user would tune first: the rate, how long, the LoRA rank, the batch, and decoding."""
    space: dict[str, dict[str, Any]] = {
        "training.learning_rate": {"loguniform": [1e-4, 2e-3]},
        "training.epochs": {"choice": [1, 2, 3]},
        "training.lora.r": {"choice": [8, 16, 32]},
        "training.batch_size": {"choice": [4, 8, 16]},
        "serving.max_new_tokens": {"choice": [32, 48, 64]},
    }
    if "repetition_penalty" in ServingConfig.model_fields:
        space["serving.repetition_penalty"] = {"uniform": [1.0, 1.3]}
    if "num_beams" in ServingConfig.model_fields:
        space["serving.num_beams"] = {"choice": [1, 2, 4]}
    return {key: Distribution.model_validate(value) for key, value in space.items()}


def leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every settable key under `model` as a dotted path (sections are walked, not listed)."""
    keys = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys.extend(leaf_keys(field.annotation, path + "."))
        else:
            keys.append(path)
    return keys


def tunable_keys() -> list[str]:
    """The keys `tune.space` may name."""
    out = [k for k in leaf_keys(TrainingConfig, "training.") if k not in NOT_TUNABLE]
    out += [f"model.{k}" for k in TUNABLE_MODEL_KEYS]
    return out + [f"serving.{k}" for k in DECODING_KEYS if k in ServingConfig.model_fields]


def _tunable_space(space: dict[str, Distribution]) -> dict[str, Distribution]:
    allowed = tunable_keys()
    every = leaf_keys(SteepConfig)
    for key in space:
        if key in allowed:
            continue
        if key in NOT_TUNABLE:
            raise ValueError(f"{key} cannot be tuned: {NOT_TUNABLE[key]}")
        inside = [k for k in allowed if k.startswith(key + ".")]
        if inside:
            raise ValueError(f"{key} is a section: name one of its keys, e.g. {', '.join(inside[:4])}")
        if key in every:
            raise ValueError(
                f"{key} cannot be tuned: steep tune searches training, model prompt and decoding "
                f"settings ({', '.join(allowed)})"
            )
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown key {key!r}{hint}; tunable keys: {', '.join(allowed)}")
    return space


class TuneConfig(Section):
    trials: int = Field(8, ge=1, le=10_000, description="trials to run (`steep tune --trials`)")
    time_budget: Duration = Field(
        "30m",
        description="the search stops after this long (`--time-budget`): running trials stop and no new "
        "one starts; the best finished trial so far wins",
    )
    include_defaults: bool = Field(
        True,
        description="the first trial runs this config's own values of the searched keys: the score the "
        "others have to beat",
    )
    early_stopping: bool = Field(
        True,
        description="ASHA on the validation loss: at epochs 1, 2, 4, ... a trial in the worse half of those "
        "that reached that epoch stops there",
    )
    cpus_per_trial: int | None = Field(
        None,
        ge=1,
        description="CPUs (torch threads) each trial takes; none: the CPUs of the smallest Ray node that has "
        "any, so trials spread one per node",
    )
    space: Annotated[dict[str, Distribution], AfterValidator(_tunable_space)] = Field(
        default_factory=default_space,
        description="dotted config key -> {choice: [...]} | {uniform: [low, high]} | "
        "{loguniform: [low, high]} | {randint: [low, high]}; e.g. training.learning_rate: "
        "{loguniform: [1e-4, 2e-3]}. Setting it replaces the default space",
    )


class SteepConfig(Section):
    """The whole of steep.yaml."""

    project: ProjectConfig = ProjectConfig()
    stack: StackConfig = StackConfig()
    data: DataConfig = DataConfig()
    validation: ValidationConfig = ValidationConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    serving: ServingConfig = ServingConfig()
    drift: DriftConfig = DriftConfig()
    tune: TuneConfig = TuneConfig()

    _root: Path | None = PrivateAttr(None)  # the folder of the file it was read from

    @model_validator(mode="before")
    @classmethod
    def _evaluation_length_moved(cls, data: Any) -> Any:
        """evaluation.max_new_tokens (older files) is serving.max_new_tokens now: one length for both."""
        evaluation = data.get("evaluation") if isinstance(data, dict) else None
        if not isinstance(evaluation, dict) or "max_new_tokens" not in evaluation:
            return data
        serving = data.get("serving") if isinstance(data.get("serving"), dict) else {}
        old = evaluation["max_new_tokens"]
        if old != serving.get("max_new_tokens", ServingConfig.model_fields["max_new_tokens"].default):
            raise ValueError(
                f"evaluation.max_new_tokens ({old}) moved to serving.max_new_tokens: evaluation generates "
                "exactly as the server does (same code, length limit and precision), so the gate judges what "
                "users get. Delete evaluation.max_new_tokens and set serving.max_new_tokens instead"
            )
        return {**data, "evaluation": {k: v for k, v in evaluation.items() if k != "max_new_tokens"}}

    def __eq__(self, other: object) -> bool:  # the same settings, wherever the file that held them lies
        return isinstance(other, SteepConfig) and self.model_dump() == other.model_dump()

    @property
    def home(self) -> Path:
        return Path(self.project.home)

    @property
    def root(self) -> Path:
        """The project folder: where its steep.yaml lies (the working folder for a config built in code)."""
        return self._root or Path.cwd()


# --------------------------------------------------------------------------------------------- loading
def _format_errors(err: ValidationError, model: type[BaseModel] = SteepConfig) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key{_did_you_mean(e['loc'], model)}")
            continue
        msg = e["msg"]
        for prefix in ("Value error, ", "Input should be "):
            if msg.startswith(prefix):
                msg = ("must be " if prefix == "Input should be " else "") + msg[len(prefix) :]
        msg = msg.replace("greater than or equal to", ">=").replace("less than or equal to", "<=")
        msg = msg.replace("greater than", ">").replace("less than", "<")
        shown = "" if isinstance(value, dict) or e["type"] == "missing" else f", got {value!r}"
        lines.append(f"{path}: {msg}{shown}")
    return "\n".join(lines)


def _did_you_mean(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """Walk the model along loc to find the keys allowed where the unknown key sits."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(str(part)) if hasattr(current, "model_fields") else None
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return ""
        current = field.annotation
    allowed = list(current.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; allowed: {', '.join(allowed)}"


def _parse_scalar(text: str) -> Any:
    """'3' -> 3, 'true' -> True, '[a, b]' -> list: the value is read as YAML, like the file."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set_path(data: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"{origin}: empty key; write section.key=value, e.g. training.epochs=2")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {key} is not a section, cannot set {dotted}")
        node = child
    node[keys[-1]] = value


def apply_overrides(
    data: dict[str, Any], sets: list[str] | None = None, environ: dict[str, str] | None = None
) -> None:
    """Environment variables STEEP__SECTION__KEY first, then --set section.key=value (which wins)."""
    environ = os.environ if environ is None else environ
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            dotted = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            _set_path(data, dotted, _parse_scalar(raw), f"environment variable {name}")
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write section.key=value, e.g. --set training.epochs=2")
        key, raw = item.split("=", 1)
        _set_path(data, key, _parse_scalar(raw), f"--set {item}")


def find_config(start: Path | None = None) -> Path:
    """The steep.yaml of the project the user is in: this folder's, else the nearest parent's (like git)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / DEFAULT_CONFIG_FILE).is_file():
            return folder / DEFAULT_CONFIG_FILE
    raise ConfigError(
        f"no {DEFAULT_CONFIG_FILE} in {here} or a folder above it. Create one with `steep init` "
        "(`steep init --data FILE` maps your data's columns), or pass --config FILE."
    )


def load_config(
    path: str | Path | Sequence[str | Path] | None = None,
    sets: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> SteepConfig:
    """Read steep.yaml (or defaults when it is absent and no path was asked for) plus overrides.

    Several paths: the first is the project's file, each later one an overlay merged over it in order (later
    wins, key by key; a list is replaced whole), e.g. `steep run -c steep.yaml -c tuned.yaml`. Relative paths
    in them (project.home, a local data.source or model.source) are made absolute against the first file's
    folder, so every command means the same files from wherever it is started.
    """
    files = [path] if path is None or isinstance(path, str | Path) else list(path)
    if not files:
        files = [None]
    file = Path(files[0]) if files[0] is not None else Path(DEFAULT_CONFIG_FILE)
    data: dict[str, Any] = {}
    if file.exists():
        data = _read_yaml(file)
    elif files[0] is not None:
        raise ConfigError(
            f"{file}: no such config file; create one (see `steep config show`) or pass another path"
        )
    for overlay in files[1:]:
        overlay = Path(overlay)
        if not overlay.is_file():
            raise ConfigError(f"{overlay}: no such config file (an overlay given after {file})")
        merge_config(data, _read_yaml(overlay))
    apply_overrides(data, sets, environ)
    named = " + ".join(str(f) for f in [file, *files[1:]])
    try:
        cfg = SteepConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{named}: invalid config\n{_format_errors(exc)}") from exc
    cfg = anchor_paths(cfg, file.resolve().parent if file.exists() else Path.cwd())
    cfg._root = file.resolve().parent if file.exists() else None
    return cfg


def _read_yaml(file: Path) -> dict[str, Any]:
    """A config file's mapping of sections; a clear ConfigError for text that is not one."""
    try:
        raw = file.read_text(encoding="utf-8")
        loaded = yaml.safe_load(raw)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{file}: not valid YAML{where}: {problem}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of sections, got {type(loaded).__name__}")
    return loaded


def merge_config(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Merge `overlay` into `base` in place: mappings key by key, anything else (a list too) replaced."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_config(base[key], value)
        else:
            base[key] = value
    return base


def is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def anchor_paths(cfg: SteepConfig, base: Path) -> SteepConfig:
    """The config with its relative paths resolved against `base` (the config file's folder)."""

    def absolute(value: str) -> str:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    project = cfg.project.model_copy(update={"home": absolute(cfg.project.home)})
    data = cfg.data
    if not is_url(data.source):
        data = data.model_copy(update={"source": absolute(data.source)})
    model = cfg.model
    source = model.source
    # a model folder given relative to the project; a bare name stays a Hugging Face id or the offline default
    if source.startswith((".", "~")) or (not Path(source).is_absolute() and (base / source).is_dir()):
        model = model.model_copy(update={"source": absolute(source)})
    return cfg.model_copy(update={"project": project, "data": data, "model": model})


def config_schema() -> dict[str, Any]:
    return SteepConfig.model_json_schema()


def dump_config(cfg: SteepConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
