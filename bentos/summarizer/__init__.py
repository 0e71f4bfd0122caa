"""The summarizer service: `bentoml serve bentos.summarizer.service:SummarizerService` (or `steep serve`)."""
