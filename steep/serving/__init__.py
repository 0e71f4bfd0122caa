"""Serving: the champion behind POST /summarize, in modules the BentoML service (bentos/summarizer) wires up.

Everything is a plain function or class that tests drive without a server:

- `handoff`: the resolved config handed to the server process (an environment variable or a bento argument)
- `schema`: the request and response types; validation runs per request, before adaptive batching
- `model_slot`: the served registry version and its hot swap
- `engine`: one batch: generate with one model snapshot, answer, append to the inference log
- `auth`: the API-key rule; `middleware`: the web page, /docs and the key check in front of BentoML's app
- `process`: `bentoml serve` in a child process; `package`: the bento, its image context and manifests
"""

from steep.errors import SteepError


class ServingError(SteepError):
    """The server cannot start or serve as configured; the message says what to change."""
