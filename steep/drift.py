"""Drift: is what the server sees still like what the champion was trained on?

Three views of the recent inference window against the champion's training split:
- input length: population stability index (PSI) over the training data's length quintiles,
- vocabulary: the share of words never seen in training (OOV) and the Jensen-Shannon divergence of word
  frequencies over the training data's most frequent words,
- quality: the share of inference rows failing the GX inference-batch suite.

Words are compared as salted hashes (`steep.inference_log.hash_word`), because that is all the inference log
keeps unless `serving.log_texts` is on; both sides count each distinct word once per row.

Documents differ from each other: new documents of the very same kind move these metrics too (lengths
cluster by document). With `drift.calibrate`, each threshold is raised to the level the training data itself
reaches between held-out groups, so only a shift beyond that is drift. Too few rows is "insufficient",
never a decision.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from steep.config import DriftConfig, SteepConfig
from steep.errors import SteepError
from steep.inference_log import hash_word, words
from steep.stack import current, reachable

if TYPE_CHECKING:
    import pandas as pd

EPS = 1e-4
LENGTH_BINS = 5  # quintiles: at min_window_rows=50 each bin still expects 10 rows
TOP_WORDS = 300  # JS over the reference's most frequent words plus one "other" bucket
CALIBRATION_ROUNDS = 40
CALIBRATION_QUANTILE = 0.95
CALIBRATION_MAX_ROWS = 2_000
METRICS = ("length_psi", "oov_share", "word_js")


class DriftError(SteepError):
    """The drift check cannot run; the message says what is missing and how to provide it."""


# --------------------------------------------------------------------------------------------- samples
@dataclass(frozen=True)
class Sample:
    """Rows reduced to what drift compares: length in words and the set of (hashed) distinct words."""

    lengths: list[int]
    vocab: list[frozenset[str]]
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_texts(cls, texts: Iterable[str], salt: str, groups: Sequence[str] | None = None) -> Sample:
        lengths, vocab = [], []
        for text in texts:
            tokens = words(text)
            lengths.append(len(tokens))
            vocab.append(frozenset(hash_word(w, salt) for w in tokens))
        return cls(lengths, vocab, [str(g) for g in groups] if groups is not None else None)

    @classmethod
    def from_log(cls, frame: pd.DataFrame) -> Sample:
        """An inference-log window (`InferenceLog.window`): `n_words` and `word_hashes` are always logged."""
        lengths = [int(n) for n in frame["n_words"].fillna(0)]
        vocab = [frozenset(h) if isinstance(h, list | tuple) else frozenset() for h in frame["word_hashes"]]
        return cls(lengths, vocab)

    def subset(self, index: Sequence[int]) -> Sample:
        groups = [self.groups[i] for i in index] if self.groups is not None else None
        return Sample([self.lengths[i] for i in index], [self.vocab[i] for i in index], groups)

    def counts(self) -> Counter:
        """Document frequency: in how many rows each word occurs."""
        counts: Counter = Counter()
        for row in self.vocab:
            counts.update(row)
        return counts


# --------------------------------------------------------------------------------------------- metrics
def psi(reference: Iterable[float], current: Iterable[float], bins: int = LENGTH_BINS) -> float:
    """Population stability index of `current` against `reference`, on the reference's quantile bins."""
    ref = np.asarray(list(reference), dtype=float)
    cur = np.asarray(list(current), dtype=float)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("psi needs values on both sides")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_share = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1) / ref.size
    cur_share = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1) / cur.size
    ref_share, cur_share = np.clip(ref_share, EPS, None), np.clip(cur_share, EPS, None)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def oov_share(reference: Mapping[str, int], current: Mapping[str, int]) -> float:
    """The share of current word occurrences whose word never occurs in the reference."""
    total = sum(current.values())
    if total == 0:
        return 0.0
    return sum(n for w, n in current.items() if w not in reference) / total


def js_divergence(reference: Mapping[str, int], current: Mapping[str, int]) -> float:
    """Jensen-Shannon divergence (base 2, so 0..1) of two word-frequency distributions."""
    vocab = set(reference) | set(current)
    if not vocab:
        return 0.0
    rt, ct = sum(reference.values()) or 1, sum(current.values()) or 1
    js = 0.0
    for w in vocab:
        p, q = reference.get(w, 0) / rt, current.get(w, 0) / ct
        m = (p + q) / 2
        if p:
            js += 0.5 * p * math.log2(p / m)
        if q:
            js += 0.5 * q * math.log2(q / m)
    return max(0.0, min(1.0, js))


def vocabulary_js(reference: Counter, current: Mapping[str, int], top: int = TOP_WORDS) -> float:
    """JS divergence over the reference's `top` words plus one bucket for all others.

    Rare words are too sparse to compare at window sizes of tens to thousands of rows (two samples of the
    same text would already differ); new words are what `oov_share` measures.
    """
    keep = [w for w, _ in reference.most_common(top)]
    ref = {w: reference[w] for w in keep}
    cur = {w: current.get(w, 0) for w in keep}
    ref["\0other"] = sum(reference.values()) - sum(ref.values())
    cur["\0other"] = sum(current.values()) - sum(cur.values())
    return js_divergence(ref, cur)


def measure(reference: Sample, current: Sample) -> dict[str, float]:
    """The three distribution metrics of `current` against `reference`."""
    ref_counts, cur_counts = reference.counts(), current.counts()
    return {
        "length_psi": psi(reference.lengths, current.lengths),
        "oov_share": oov_share(ref_counts, cur_counts),
        "word_js": vocabulary_js(ref_counts, cur_counts),
    }


def natural_levels(
    reference: Sample,
    rows: int,
    *,
    rounds: int = CALIBRATION_ROUNDS,
    quantile: float = CALIBRATION_QUANTILE,
    holdout: float = 0.2,
    seed: int = 0,
) -> dict[str, float]:
    """What each metric reads for a window of `rows` rows from groups the rest of the reference never saw.

    That is the level unseen documents of the training data's own kind reach, so a threshold below it would
    call ordinary new documents drift. Rows without groups count as their own group. {} when there are too
    few groups to hold some out.
    """
    groups = reference.groups or [str(i) for i in range(len(reference))]
    unique = sorted(set(groups))
    if len(unique) < 5 or rows < 1:
        return {}
    rows = min(rows, CALIBRATION_MAX_ROWS)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    rng = random.Random(seed)
    seen: dict[str, list[float]] = {k: [] for k in METRICS}
    for _ in range(rounds):
        order = unique[:]
        rng.shuffle(order)
        held = order[: max(1, round(len(order) * holdout))]
        rest = [i for g in order[len(held) :] for i in members[g]]
        pool = [i for g in held for i in members[g]]
        window = [rng.choice(pool) for _ in range(rows)]
        for key, value in measure(reference.subset(rest), reference.subset(window)).items():
            seen[key].append(value)
    return {k: float(np.quantile(v, quantile)) for k, v in seen.items()}


# --------------------------------------------------------------------------------------------- decision
@dataclass
class DriftReport:
    status: str  # "drift" | "ok" | "insufficient"
    window_rows: int
    metrics: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)  # as configured
    natural: dict[str, float] = field(default_factory=dict)  # the training data's own between-group level
    reasons: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)  # champion, window, digests, cool-down, event
    checked_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def drifted(self) -> bool:
        return self.status == "drift"

    @property
    def limits(self) -> dict[str, float]:
        """The thresholds in force: configured, raised to the natural level where that is higher."""
        return {k: max(v, self.natural.get(k, 0.0)) for k, v in self.thresholds.items()}

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "limits": self.limits}


def thresholds(cfg: DriftConfig) -> dict[str, float]:
    return {
        "length_psi": cfg.psi_threshold,
        "oov_share": cfg.oov_threshold,
        "word_js": cfg.js_threshold,
        "failing_share": cfg.failing_share_threshold,
    }


def compare(cfg: DriftConfig, reference: Sample, current: Sample, failing_share: float) -> DriftReport:
    """Decide drift for one window: any metric over its limit is drift."""
    configured = thresholds(cfg)
    n = len(current)
    if n < cfg.min_window_rows:
        return DriftReport(
            "insufficient",
            n,
            thresholds=configured,
            reasons=[
                f"only {n} rows in the window; drift.min_window_rows is {cfg.min_window_rows}: no decision"
            ],
        )
    if len(reference) == 0:
        raise DriftError("the reference (the champion's training split) has no rows; check data.source")
    metrics = {**measure(reference, current), "failing_share": float(failing_share)}
    natural = natural_levels(reference, n) if cfg.calibrate else {}
    report = DriftReport("ok", n, metrics, configured, natural)
    limits = report.limits
    over = []
    for key, value in metrics.items():
        if value > limits[key]:
            raised = (
                f" (drift.{_KEYS[key]} {configured[key]:.3f}, raised to what unseen training documents reach)"
                if limits[key] > configured[key]
                else ""
            )
            over.append(f"{key} {value:.3f} > {limits[key]:.3f}{raised}")
    report.status = "drift" if over else "ok"
    report.reasons = over or ["every metric under its threshold"]
    return report


_KEYS = {
    "length_psi": "psi_threshold",
    "oov_share": "oov_threshold",
    "word_js": "js_threshold",
    "failing_share": "failing_share_threshold",
}


# --------------------------------------------------------------------------------------------- reference
@dataclass(frozen=True)
class Reference:
    """The champion's training split, rebuilt from the configured data, and whether it is the same data.

    `steep.pipeline.drift_check.champion_reference` builds it (load, validate, split as `steep run` did).
    """

    sample: Sample
    champion_version: str | None
    digest: str
    champion_digest: str | None

    @property
    def matches(self) -> bool:
        return self.champion_digest is None or self.digest == self.champion_digest

    def describe(self) -> str:
        who = f"champion v{self.champion_version}" if self.champion_version else "no champion"
        if self.champion_digest is None:
            return f"train split {self.digest[:12]} ({who}; no digest recorded on it)"
        if self.matches:
            return f"train split {self.digest[:12]} of {who} (digest matches)"
        return (
            f"train split {self.digest[:12]} of the configured data, which differs from {who}'s "
            f"{self.champion_digest[:12]}: the data changed since the champion was trained"
        )


# --------------------------------------------------------------------------------------------- plot
def drift_plot(reference: Sample, current: Sample, report: DriftReport, path: Path) -> Path:
    """Input-length histograms (training vs window) and each metric against its limit."""
    import matplotlib  # heavy, and only a report with metrics draws; the backend is set before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    ref, cur = reference.lengths or [0], current.lengths or [0]
    top = max(np.percentile(ref, 99), np.percentile(cur, 99), 1)
    bins = np.linspace(0, top, 30)
    left.hist(ref, bins=bins, density=True, alpha=0.6, label="training")
    left.hist(cur, bins=bins, density=True, alpha=0.6, label="inference window")
    left.set_xlabel("input length (words)")
    left.legend(frameon=False, fontsize=8)
    limits = report.limits
    names = [k for k in report.metrics if limits.get(k)]
    values = [report.metrics[k] / limits[k] for k in names]
    right.barh(names, values, color=["tab:red" if v > 1 else "tab:green" for v in values])
    right.axvline(1.0, color="black", lw=1, ls="--")
    right.set_xlabel("metric / threshold in force")
    fig.suptitle(f"drift check: {report.status} ({report.window_rows} rows)")
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- simulation
_CLINICAL = {
    "who": ["patient", "the patient", "a 54-year-old male", "a 67-year-old female", "the infant", "resident"],
    "verb": ["presents with", "reports", "was admitted for", "denies", "was treated for", "complains of"],
    "what": ["acute myocardial infarction", "chest pain radiating to the left arm", "productive cough",
             "elevated troponin", "shortness of breath on exertion", "bilateral pedal edema", "hyperglycemia",
             "atrial fibrillation with rapid ventricular response", "a displaced radial fracture"],
    "then": ["ecg shows st elevation", "chest x-ray reveals consolidation", "started on iv heparin",
             "metoprolol titrated", "discharged on aspirin and statin", "cardiology consulted",
             "follow-up echocardiogram in six weeks", "cultures pending", "orthopedics to reduce and cast"],
}  # fmt: skip


def shifted_texts(base: Sequence[str], rows: int, shift: str = "domain", seed: int = 0) -> list[str]:
    """Inputs unlike the training data, for `steep drift simulate`.

    "domain": clinical notes (another vocabulary, other lengths); "noise": training texts with most words
    garbled and several texts run together (new words, longer inputs); "none": training texts as they are
    (an in-distribution window, which the check should call ok).
    """
    rng = random.Random(seed)
    if shift == "domain":
        out = []
        for _ in range(rows):
            parts = [
                " ".join(rng.choice(_CLINICAL[k]) for k in ("who", "verb", "what"))
                for _ in range(rng.randint(1, 3))
            ]
            parts += rng.sample(_CLINICAL["then"], rng.randint(1, 4))
            out.append(". ".join(parts) + ".")
        return out
    if not base:
        raise DriftError("no training texts to build simulated inputs from; check data.source")
    if shift == "none":
        return [rng.choice(base) for _ in range(rows)]
    if shift == "noise":
        out = []
        for _ in range(rows):
            tokens = " ".join(rng.choice(base) for _ in range(rng.randint(2, 4))).split()
            out.append(" ".join(_garble(t, rng) if rng.random() < 0.6 else t for t in tokens))
        return out
    raise DriftError(f"unknown shift {shift!r}; use domain, noise or none")


def _garble(token: str, rng: random.Random) -> str:
    letters = "bcdfghjklmnpqrstvwxz"
    return "".join(rng.choice(letters) for _ in range(max(3, len(token))))


def serving_url(cfg: SteepConfig) -> str:
    """Where the summarizer listens: the stack's serving_url (forwarded on a cloud), else serving.port."""
    stack = reachable(current(cfg), kube_context=cfg.stack.kube_context, region=cfg.stack.region)
    if stack is not None and stack.serving_url.startswith(("http://", "https://")):
        return stack.serving_url.rstrip("/")
    host = "127.0.0.1" if cfg.serving.host in ("0.0.0.0", "::") else cfg.serving.host
    return f"http://{host}:{cfg.serving.port}"


@dataclass
class Sent:
    texts: int = 0
    requests: int = 0
    versions: set[str] = field(default_factory=set)


def send_texts(
    url: str, texts: Sequence[str], batch_size: int, api_key: str | None = None, timeout: float = 300.0
) -> Sent:
    """POST the texts to `<url>/summarize` in batches of `batch_size`; any failed request stops with why."""
    headers = {"X-API-Key": api_key} if api_key else {}
    sent = Sent()
    with httpx.Client(base_url=url, timeout=timeout, headers=headers) as client:
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            try:
                resp = client.post("/summarize", json={"texts": batch})
            except httpx.HTTPError as exc:
                raise DriftError(
                    f"cannot reach the summarizer at {url} ({exc.__class__.__name__}); start it with "
                    "`steep serve` or pass --url"
                ) from exc
            if resp.status_code >= 400:
                raise DriftError(
                    f"the summarizer at {url} answered {resp.status_code} after {sent.texts} texts: "
                    f"{resp.text[:300]}"
                    + (
                        " (set the API key's variable, serving.api_key_env)"
                        if resp.status_code == 401
                        else ""
                    )
                )
            sent.texts += len(batch)
            sent.requests += 1
            body = (
                resp.json() if resp.headers.get("content-type", "").startswith("application/json") else None
            )
            if isinstance(body, list):
                sent.versions |= {
                    str(r["model_version"]) for r in body if isinstance(r, dict) and "model_version" in r
                }
    return sent
