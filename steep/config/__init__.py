"""steep.yaml: the package's public face. Import from here (`from steep.config import SteepConfig,
load_config`); the modules behind it each hold one job:

- sections: the sections the stages read (project, stack, data, ..., drift) and their shared types
- space: what `steep tune` may search and how a key's range is written
- schema: SteepConfig, the whole file (with the tune section), its JSON Schema and YAML
- loading: find, read, overlay (-c), override (STEEP__ variables, --set), validate, anchor paths
- paths: dotted keys (`training.lora.r`) read and set in nested mappings
"""

from steep.config.errors import ConfigError
from steep.config.loading import (
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    anchor_paths,
    apply_overrides,
    find_config,
    format_errors,
    is_url,
    load_config,
    merge_config,
)
from steep.config.paths import get_path, leaf_keys, set_path
from steep.config.schema import SteepConfig, TuneConfig, config_schema, dump_config
from steep.config.sections import (
    GATE_OPPONENTS,
    PROJECT_NAME,
    PROJECT_NAME_RULE,
    DataConfig,
    DriftConfig,
    Duration,
    EvaluationConfig,
    LocalStackConfig,
    LoraConfig,
    ModelConfig,
    PiiConfig,
    ProjectConfig,
    PromptTuningConfig,
    Section,
    ServingConfig,
    SplitConfig,
    StackConfig,
    TrainingConfig,
    ValidationConfig,
    parse_duration,
)
from steep.config.space import (
    DECODING_KEYS,
    DISTRIBUTIONS,
    NOT_TUNABLE,
    TUNABLE_MODEL_KEYS,
    Distribution,
    default_space,
    tunable_keys,
    tunable_space,
)

__all__ = [
    "DECODING_KEYS",
    "DEFAULT_CONFIG_FILE",
    "DISTRIBUTIONS",
    "ENV_PREFIX",
    "GATE_OPPONENTS",
    "NOT_TUNABLE",
    "PROJECT_NAME",
    "PROJECT_NAME_RULE",
    "TUNABLE_MODEL_KEYS",
    "ConfigError",
    "DataConfig",
    "Distribution",
    "DriftConfig",
    "Duration",
    "EvaluationConfig",
    "LocalStackConfig",
    "LoraConfig",
    "ModelConfig",
    "PiiConfig",
    "ProjectConfig",
    "PromptTuningConfig",
    "Section",
    "ServingConfig",
    "SplitConfig",
    "StackConfig",
    "SteepConfig",
    "TrainingConfig",
    "TuneConfig",
    "ValidationConfig",
    "anchor_paths",
    "apply_overrides",
    "config_schema",
    "default_space",
    "dump_config",
    "find_config",
    "format_errors",
    "get_path",
    "is_url",
    "leaf_keys",
    "load_config",
    "merge_config",
    "parse_duration",
    "set_path",
    "tunable_keys",
    "tunable_space",
]
