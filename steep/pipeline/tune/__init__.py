"""`steep tune`: the package's public face (`from steep.pipeline.tune import tune`). The modules behind it,
in the order a search uses them:

- space: `tune.space` checked against the config before any trial runs; how Ray Tune samples it
- trial: what one trial ships and runs in its Ray task (train, generate on validation, report)
- ray_tune: the search on Ray Tune (callbacks, ASHA); imports Ray, so only the search loads it
- outcomes: how each trial ended, the best of them, the line per trial
- overlay: the best settings as tuned.yaml and as `--set` arguments
- mlflow_runs: the parent run and the closing of stopped trials' child runs
- plot: the trials' scores and validation losses, on the parent run
- search: `tune`, all of the above in order, with the search injectable (`search=`)
"""

from steep.pipeline.tune.mlflow_runs import KIND_TAG, trials_table
from steep.pipeline.tune.outcomes import Status, TrialOutcome, best_trial, progress_line, short_keys
from steep.pipeline.tune.overlay import OVERLAY_MARK, check_output, overlay_yaml, set_lines
from steep.pipeline.tune.plot import trials_plot
from steep.pipeline.tune.search import Search, TuneResult, ray_search, tune
from steep.pipeline.tune.space import SpacePlan, TuneError, plan_space, settle
from steep.pipeline.tune.trial import (
    GENERATED_TAG,
    OUTCOME_TAG,
    SCORED_TAG,
    TRIAL_TAG,
    TrialContext,
    run_trial,
    short_error,
    trial_config,
    trial_context,
)

__all__ = [
    "GENERATED_TAG",
    "KIND_TAG",
    "OUTCOME_TAG",
    "OVERLAY_MARK",
    "SCORED_TAG",
    "TRIAL_TAG",
    "Search",
    "SpacePlan",
    "Status",
    "TrialContext",
    "TrialOutcome",
    "TuneError",
    "TuneResult",
    "best_trial",
    "check_output",
    "overlay_yaml",
    "plan_space",
    "progress_line",
    "ray_search",
    "run_trial",
    "set_lines",
    "settle",
    "short_error",
    "short_keys",
    "trial_config",
    "trial_context",
    "trials_plot",
    "trials_table",
    "tune",
]
