"""The summarizer service: `steep serve` (by hand: `bentoml serve steep.bentos.summarizer.service`)."""
