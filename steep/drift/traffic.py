"""Traffic for `steep drift simulate`: inputs unlike the training data, and the HTTP client that sends them
through the running summarizer, so the next drift check has something to find.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from steep.config import SteepConfig
from steep.drift.report import DriftError
from steep.stack import current, reachable

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
