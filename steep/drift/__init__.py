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

- `statistics`: samples (lengths and hashed words) and the metrics between two of them
- `report`: the decision for one window, the reference it is made against, the report and its plot
- `traffic`: shifted inputs and the HTTP client of `steep drift simulate` (imported from its module)

The check's names are re-exported here; the simulator and its client are `steep drift simulate`'s alone.
"""

from steep.drift.report import DriftError, DriftReport, Reference, compare, drift_plot, thresholds
from steep.drift.statistics import (
    METRICS,
    Sample,
    js_divergence,
    measure,
    natural_levels,
    oov_share,
    psi,
    vocabulary_js,
    words,
)

__all__ = [
    "METRICS",
    "DriftError",
    "DriftReport",
    "Reference",
    "Sample",
    "compare",
    "drift_plot",
    "js_divergence",
    "measure",
    "natural_levels",
    "oov_share",
    "psi",
    "thresholds",
    "vocabulary_js",
    "words",
]
