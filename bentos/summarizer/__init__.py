"""The summarizer service: `bentoml serve bentos.summarizer.service:Summarizer` (or `steep serve`)."""
