"""What the service does per batch: generate with one model snapshot, answer, append to the inference log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from steep.config import SteepConfig
from steep.inference_log import InferenceLog, record
from steep.serving.model_slot import ModelSlot, registry_slot
from steep.serving.schema import Item, Summary, as_items

log = logging.getLogger("steep.serving")


class Engine:
    """The served model slot and the inference log; the BentoML service calls `summarize` once per batch."""

    def __init__(self, cfg: SteepConfig, slot: ModelSlot, inference_log: InferenceLog | None = None) -> None:
        self.cfg = cfg
        self.slot = slot
        self.inference_log = inference_log or InferenceLog.for_config(cfg)

    @classmethod
    def from_config(cls, cfg: SteepConfig) -> Engine:
        """Load the model the config selects and start watching the registry for a new one."""
        slot = registry_slot(cfg)
        slot.refresh()
        slot.start()
        return cls(cfg, slot)

    def summarize(self, texts: Iterable[Item | str]) -> list[Summary]:
        items = as_items(texts)
        if not items:
            return []
        model = self.slot.current  # one snapshot for the whole batch: a swap mid-batch changes nothing here
        serving = self.cfg.serving
        summaries = model.summarizer.summarize(
            [i.text for i in items], max_new_tokens=serving.max_new_tokens, batch_size=serving.max_batch_size
        )
        done = time.perf_counter()
        rows = [
            record(
                item.text,
                summary,
                model_name=model.name,
                model_version=model.version,
                run_id=model.run_id,
                request_id=item.request_id,
                latency_ms=(done - item.received) * 1000,
                log_texts=serving.log_texts,
                salt=self.inference_log.salt,
            )
            for item, summary in zip(items, summaries, strict=True)
        ]
        try:
            self.inference_log.append(rows)
        except OSError:
            log.exception(
                "could not append %d rows to the inference log at %s", len(rows), self.inference_log.root
            )
        return [
            Summary(
                summary=summary,
                model_name=model.name,
                model_version=model.version,
                run_id=model.run_id,
                request_id=item.request_id,
            )
            for item, summary in zip(items, summaries, strict=True)
        ]

    def close(self) -> None:
        self.slot.stop()
