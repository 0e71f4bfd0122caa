"""The sections of steep.yaml that the stages read: project, stack, data, validation, model, training,
evaluation, serving and drift, with the types they share (a section that refuses unknown keys, a duration).

Each field carries its default, its bounds and a description (the JSON Schema of `steep config schema`), so a
typo or a wrong type is caught when the file is read, with a message that names the key and what is allowed.
The tune section is in steep.config.schema: what it may search is checked against these sections.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from steep.engines import EngineName
from steep.instruction import DEFAULT_INSTRUCTION

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


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
    """A part of steep.yaml: an unknown key is an error (a typo is not silently ignored), and so is a bad
    value assigned in code."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
        1, ge=0, description="worker crashes survived by restarting from the checkpoint (errors only)"
    )
    max_preemptions: int = Field(
        -1,
        ge=-1,
        description="spot reclaims survived by restarting from the checkpoint taken on the reclaim notice, "
        "counted apart from max_failures; -1: unlimited (Ray's default)",
    )
    placement_timeout: Duration = Field(
        "10m",
        description="how long training may wait for nodes to place its workers on (at the start, or after "
        "a node was lost) before the run fails",
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
    max_batch_size: int = Field(
        32, ge=1, description="rows generating together in the server: 32 clients all decode at once"
    )
    prefills_per_step: int = Field(
        4,
        ge=1,
        description="new requests the server prefills between two decoding steps while others decode: a "
        "burst of arrivals starts within a few steps without stalling the rows already streaming",
    )
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
    precision: Literal["auto", "fp32", "bf16", "int8", "int4"] = Field(
        "auto",
        description="generation precision, for serving and for evaluation; auto: bf16 on GPU and on CPUs "
        "with native bf16 (AVX512-BF16 or AMX), else fp32; int8/int4: weights quantized by the onnxruntime "
        "engine (the gate evaluates the quantized model)",
    )
    engine: EngineName = Field(
        "auto",
        description="what generates, for serving and for evaluation alike: auto picks onnxruntime (the model "
        "exported once per version) for causal LMs on a CPU at fp32/int8/int4, else transformers, the "
        "reference (see docs/engines.md)",
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
