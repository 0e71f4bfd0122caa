"""steep.yaml as one pydantic model: SteepConfig, made of the stages' sections and the tune section; its
JSON Schema (`steep config schema`) and its YAML (`steep config show`).

Every stage reads its section from here, so a typo or a wrong type is caught before anything starts, with a
message that names the key path, the bad value and what is allowed. The tune section lives here rather than
in steep.config.space because its check names every key of the file (SteepConfig's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, Field, PrivateAttr, model_validator

from steep.config.paths import leaf_keys
from steep.config.sections import (
    DataConfig,
    DriftConfig,
    Duration,
    EvaluationConfig,
    ModelConfig,
    ProjectConfig,
    Section,
    ServingConfig,
    StackConfig,
    TrainingConfig,
    ValidationConfig,
)
from steep.config.space import Distribution, default_space, tunable_space


def _tunable_space(space: dict[str, Distribution]) -> dict[str, Distribution]:
    return tunable_space(space, leaf_keys(SteepConfig))


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


def config_schema() -> dict[str, Any]:
    return SteepConfig.model_json_schema()


def dump_config(cfg: SteepConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
