"""The service as BentoML sees it, imported without a server: the path steep serves it by, its name, and
what stands in front of it."""

from __future__ import annotations

import importlib

from steep.config import SteepConfig
from steep.serving.handoff import CONFIG_ENV, config_env
from steep.serving.middleware import ApiKeyMiddleware, BodyLimitMiddleware, WebPageMiddleware
from steep.serving.process import SERVICE


def service_class(monkeypatch):
    monkeypatch.setenv(CONFIG_ENV, config_env(SteepConfig()))
    module, _, attr = SERVICE.partition(":")
    return getattr(importlib.import_module(module), attr)


def test_the_service_path_names_the_summarizer_service(monkeypatch):
    service = service_class(monkeypatch)
    assert SERVICE == "steep.bentos.summarizer.service:SummarizerService"
    assert service.name == "summarizer"  # BentoML's name: metrics and the OpenAPI page say "summarizer"
    assert service.apis == {}  # every route is steep's own FastAPI app, mounted at "/"
    [(app, path, _)] = service.mount_apps
    assert path == "/"
    routes = {(r.path, method) for r in app.routes for method in getattr(r, "methods", ())}
    assert {("/summarize", "POST"), ("/v1/models", "GET"), ("/v1/completions", "POST"),
            ("/v1/chat/completions", "POST")} <= routes  # fmt: skip


def test_the_page_the_api_key_check_and_the_body_cap_stand_in_front(monkeypatch):
    added = [cls for cls, _ in service_class(monkeypatch).middlewares]
    assert added == [WebPageMiddleware, ApiKeyMiddleware, BodyLimitMiddleware]
