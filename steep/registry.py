"""The MLflow model registry: versions, the `challenger` and `champion` aliases, the promotion rule.

The champion moves only through `promote()` (one alias write, after the gate and any approval), so a failed
or interrupted run can never leave it half-moved. Each promotion is appended to a history kept on the
registered model, which is what `rollback()` walks back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, get_args

from steep.config import EvaluationConfig, SteepConfig
from steep.errors import SteepError
from steep.significance import Interval

CHAMPION = "champion"
CHALLENGER = "challenger"
# the ROUGE metrics evaluation scores and the gate compares: the choices of `evaluation.metric`
METRICS: tuple[str, ...] = get_args(EvaluationConfig.model_fields["metric"].annotation)
METRIC_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
_HISTORY_TAG = "steep.champion_history"

if TYPE_CHECKING:  # mlflow costs most of a second to import: commands that never reach a registry skip it
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


class RegistryError(SteepError):
    """A registry request that cannot be done (unknown version, nothing to roll back to)."""


def model_name(cfg: SteepConfig) -> str:
    return f"{cfg.project.name}-summarizer"


# --------------------------------------------------------------------------------------------- promotion
@dataclass(frozen=True)
class GateDecision:
    promote: bool
    metric: str
    challenger: float
    reference: float
    reference_name: str  # "champion vN" or "base model"
    reasons: list[str] = field(default_factory=list)
    confidence: float | None = None  # the level the gate required; None: the point rule decided
    # the challenger minus each opponent on `metric`, by the opponent's name ("base model", "lead-1")
    intervals: dict[str, Interval] = field(default_factory=dict)

    def summary(self) -> str:
        verdict = "promote" if self.promote else "keep the champion"
        because = "; ".join(self.reasons)
        scores = f"{self.metric} {self.challenger:.4f} vs {self.reference_name} {self.reference:.4f}"
        return f"{verdict}: {scores} ({because})"


@dataclass(frozen=True)
class _Opponent:
    key: str  # as in must_beat and the MLflow keys: champion, base, lead-1
    label: str  # as in the decision text: "champion v3", "base model", "lead-1"
    scores: Mapping[str, float] | None
    threshold: float  # the gain (or the interval's lower end) must reach this
    strict: bool  # ... and exceed it


def promotion_decision(
    rules: EvaluationConfig,
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    base: Mapping[str, float],
    champion_label: str = "champion",
    *,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    intervals: Mapping[str, Mapping[str, Interval]] | None = None,
) -> GateDecision:
    """The gate: decide promotion from scores (0..1) against the champion, or the base model without one,
    and against every opponent in `rules.must_beat`.

    `baselines` holds the scores of reference lines such as lead-1; `intervals` the challenger-minus-opponent
    intervals per opponent key (champion, base, lead-1) and metric. With `rules.confidence` set, an opponent
    is beaten only when the lower end of its interval on the gate metric exceeds the threshold; otherwise the
    point estimate decides and the interval, when there is one, is only reported.
    """
    metric = rules.metric
    baselines, intervals = baselines or {}, intervals or {}
    # against a champion, min_improvement may be 0 (ties keep the newer data); against the base model or a
    # baseline a fine-tuned model must be strictly better, or fine-tuning did nothing worth serving
    strict_floor = max(rules.min_improvement, 0.0)
    known = {
        "champion": _Opponent("champion", champion_label, champion, rules.min_improvement, False),
        "base": _Opponent("base", "base model", base, strict_floor, True),
        **{k: _Opponent(k, k, v, strict_floor, True) for k, v in baselines.items()},
    }
    reference = known["champion"] if champion is not None else known["base"]
    opponents = [reference, *(known.get(k) or _Opponent(k, k, None, 0.0, True) for k in rules.must_beat)]
    opponents = list({o.key: o for o in opponents}.values())  # once each, the reference first
    score = challenger[metric]
    reasons, ok = [], True
    if score < rules.min_score:
        ok = False
        reasons.append(f"{metric} {score:.4f} is below evaluation.min_score {rules.min_score:.4f}")
    shown: dict[str, Interval] = {}
    for opp in opponents:
        if opp.scores is None:
            if opp.key == "champion":
                continue  # must_beat: [champion] with no champion yet: nothing to beat
            ok = False
            reasons.append(f"evaluation.must_beat names {opp.key}, but it was not evaluated")
            continue
        interval = intervals.get(opp.key, {}).get(metric)
        if interval is not None:
            shown[opp.label] = interval
        beaten, reason = _beats(rules, metric, score - opp.scores[metric], interval, opp)
        ok = ok and beaten
        reasons.append(reason)
    ref_scores = reference.scores or {}
    for other in METRICS:
        if other == metric or other not in challenger or other not in ref_scores:
            continue
        drop = ref_scores[other] - challenger[other]
        if drop > rules.max_regression:
            ok = False
            reasons.append(
                f"{other} regressed by {drop:.4f} > evaluation.max_regression {rules.max_regression:.4f}"
            )
    return GateDecision(
        ok, metric, score, ref_scores[metric], reference.label, reasons, rules.confidence, shown
    )


def _beats(
    rules: EvaluationConfig, metric: str, gain: float, interval: Interval | None, opp: _Opponent
) -> tuple[bool, str]:
    """Whether the challenger beats one opponent, and the reason that says so with the numbers."""
    over = f"over the {opp.label}" if opp.key in ("champion", "base") else f"over {opp.label}"
    threshold = (
        f"evaluation.min_improvement {rules.min_improvement:+.4f}"
        if opp.threshold == rules.min_improvement
        else "zero"  # min_improvement < 0 lowers the bar over a champion only
    )

    def clears(value: float, strict: bool) -> bool:
        return value > opp.threshold if strict else value >= opp.threshold

    if rules.confidence is None:  # the point rule; the interval, when there is one, says how sure it is
        sure = f", {interval_text(metric, interval)} at {interval.confidence:.0%}" if interval else ""
        if clears(gain, opp.strict):
            return True, f"{metric} gain {gain:+.4f} {over}{sure}"
        return False, f"{metric} gain {gain:+.4f} {over}{sure}: does not meet {threshold}"
    level = f"{rules.confidence:.0%}"
    if interval is None or not interval.defined:
        why = "too few test documents to resample" if interval else "no per-row scores"
        return False, f"{metric} gain {gain:+.4f} {over}: no {level} interval ({why}) to be sure of it"
    if abs(interval.confidence - rules.confidence) > 1e-9:
        raise ValueError(
            f"the interval over {opp.label} is at {interval.confidence:.0%}, the gate asks {level}: "
            "compute the intervals at evaluation.confidence"
        )
    text = f"{interval_text(metric, interval)} {over}"
    if clears(interval.low, strict=True):  # the lower end must exceed it: sure of a gain, not of a tie
        return True, text
    return False, f"{text}: at {level} the lower end does not clear {threshold}"


def interval_text(metric: str, interval: Interval) -> str:
    """`+3.1 ROUGE-L [+1.2, +5.0]`: the difference in ROUGE points (F1 x 100) and its interval."""
    point, _, rest = interval.format().partition(" ")
    return f"{point} {METRIC_LABELS.get(metric, metric)} {rest}"


# --------------------------------------------------------------------------------------------- registry
class Registry:
    """steep's view of one registered model. Every call is a plain MLflow client call."""

    def __init__(self, name: str, client: MlflowClient | None = None):
        from mlflow import MlflowClient

        self.name = name
        self.client = client or MlflowClient()

    @staticmethod
    def _found(call: Callable[..., Any], *args: Any) -> Any:
        """What the client returns, or None where MLflow says there is no such thing."""
        from mlflow.exceptions import MlflowException

        try:
            return call(*args)
        except MlflowException:
            return None

    def ensure(self) -> None:
        if self._found(self.client.get_registered_model, self.name) is None:
            self.client.create_registered_model(
                self.name,
                description="Summarizer fine-tuned by steep; the `champion` alias is what is served.",
            )

    def register(self, model_uri: str, run_id: str, tags: dict[str, Any]) -> ModelVersion:
        """A new version from a run's model, tagged, with alias `challenger`. The champion is not touched."""
        self.ensure()
        # a tracking server (unlike the sqlite store) refuses a models:/m-... source without its model id
        version = self.client.create_model_version(
            self.name,
            model_uri,
            run_id=run_id,
            tags={k: _tag(v) for k, v in tags.items()},
            model_id=logged_model_id(model_uri),
        )
        self.client.set_registered_model_alias(self.name, CHALLENGER, version.version)
        return version

    def alias(self, alias: str) -> ModelVersion | None:
        return self._found(self.client.get_model_version_by_alias, self.name, alias)

    def version(self, version: str | int) -> ModelVersion:
        found = self._found(self.client.get_model_version, self.name, str(version))
        if found is None:
            raise RegistryError(
                f"model {self.name} has no version {version}; `steep models list` shows the versions"
            )
        return found

    def versions(self) -> list[ModelVersion]:
        found = self._found(self.client.search_model_versions, f"name='{self.name}'") or []
        return sorted(found, key=lambda v: int(v.version))

    def tag(self, version: str | int, **tags: Any) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, str(version), key, _tag(value))

    def history(self) -> list[dict[str, Any]]:
        model = self._found(self.client.get_registered_model, self.name)
        return json.loads(model.tags.get(_HISTORY_TAG, "[]")) if model is not None else []

    def promote(self, version: str | int, reason: str, *, rollback: bool = False) -> ModelVersion:
        """Move `champion` to `version` (one alias write) and record the move for rollback."""
        target = self.version(version)
        previous = self.alias(CHAMPION)
        history = self.history()
        history.append(
            {
                "version": str(target.version),
                "previous": str(previous.version) if previous else None,
                "reason": reason,
                "rollback": rollback,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        self.client.set_registered_model_alias(self.name, CHAMPION, target.version)
        self.client.set_registered_model_tag(self.name, _HISTORY_TAG, json.dumps(history[-50:]))
        self.tag(target.version, **{"steep.promoted_at": history[-1]["at"], "steep.promotion_reason": reason})
        return target

    def champion_stack(self) -> list[str]:
        """The champions in promotion order, rollbacks popped: the last is the current one."""
        stack: list[str] = []
        for entry in self.history():
            if entry.get("rollback") and stack:
                stack.pop()
            else:
                stack.append(entry["version"])
        return stack

    def rollback(self) -> tuple[str, str]:
        """Move `champion` back to the version it replaced; returns (from, to). Repeated, it goes further."""
        current = self.alias(CHAMPION)
        if current is None:
            raise RegistryError(f"model {self.name} has no champion to roll back from")
        now = str(current.version)
        stack = self.champion_stack()
        if len(stack) < 2 or stack[-1] != now:
            raise RegistryError(
                f"champion v{now} of {self.name} replaced no earlier champion; nothing to roll back to. "
                "Promote a version by hand with `steep models promote VERSION`."
            )
        self.promote(stack[-2], f"rollback from v{now}", rollback=True)
        return now, stack[-2]


def logged_model_id(model_uri: str) -> str | None:
    """`models:/m-abc` (what log_model returns) -> "m-abc"; a registry URI (`models:/name/1`) -> None."""
    rest = model_uri.removeprefix("models:/")
    return rest if rest != model_uri and rest and "/" not in rest and "@" not in rest else None


def _tag(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, sort_keys=True)
