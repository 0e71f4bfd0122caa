"""What a command or a flow needs besides the config, resolved once: the stack, tracking, registry, Prefect.

`Runtime.of(cfg)` reads the stack record (`.steep/stack.json`, or none: the embedded default) and answers
every "where is ..." question the same way for the CLI, the flows and the server, so no caller repeats
`stack.mlflow_tracking_uri if stack else None`. `stack` is the stack as this machine reaches it (through
port-forwards on a cloud, opened on first use: steep.stack.port_forward); `record` is it as recorded, with
the in-cluster addresses that pods are given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from steep import tracking
from steep.config import SteepConfig
from steep.quiet import quiet_third_parties
from steep.registry import Registry, model_name
from steep.stack import Stack, current, port_forward

# the embedded default starts a temporary Prefect API in-process: a busy 2-core machine needs the time
EPHEMERAL_STARTUP_TIMEOUT_S = "180"


@dataclass(frozen=True)
class Runtime:
    cfg: SteepConfig
    record: Stack | None  # as recorded: on a cloud, in-cluster addresses (what pods are given)

    @classmethod
    def of(cls, cfg: SteepConfig) -> Runtime:
        return cls(cfg, current(cfg))

    @cached_property
    def stack(self) -> Stack | None:
        """The stack as this machine reaches it: the one door (`port_forward.reachable`) every client here
        goes through; on a cloud its URLs are port-forwards, opened on first use."""
        return port_forward.reachable(self.record, kube_context=self.cfg.stack.kube_context,
                               region=self.cfg.stack.region)  # fmt: skip

    @property
    def tracking_uri(self) -> str | None:
        """The stack's server, else MLFLOW_TRACKING_URI (a container's setting); None: the embedded db.

        MLflow itself exports MLFLOW_TRACKING_URI once a process set a tracking URI, so the embedded db's
        own URI found there still means the embedded db.
        """
        if self.stack is not None:
            return self.stack.mlflow_tracking_uri
        given = os.environ.get("MLFLOW_TRACKING_URI")
        return given if given and given != tracking.default_tracking_uri(self.cfg) else None

    @property
    def ray_address(self) -> str | None:
        return self.stack.ray_address if self.stack else None

    @property
    def prefect_api_url(self) -> str | None:
        return self.stack.prefect_api_url if self.stack else None

    def setup_tracking(self) -> str:
        """Point MLflow at this project's store; -> the experiment id."""
        return tracking.setup(self.cfg, self.tracking_uri)

    def registry(self) -> Registry:
        self.setup_tracking()
        return Registry(model_name(self.cfg))

    def use_prefect(self, *, stack_api: bool = True) -> None:
        """Prefect's settings for this project, before Prefect is imported (it reads them once).

        State under project.home (not ~/.prefect); the stack's API when one is provisioned. `stack_api=False`
        runs on the embedded temporary API even with a stack: the teardown destroys the stack's own server.
        """
        quiet_third_parties()
        home = (self.cfg.home / "prefect").resolve()
        home.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("PREFECT_HOME", str(home))
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S)
        if self.record is None:
            return
        if stack_api:
            os.environ.setdefault("PREFECT_API_URL", self.stack.prefect_api_url)  # type: ignore[union-attr]
        elif os.environ.get("PREFECT_API_URL") in self._stack_api_urls():
            os.environ.pop("PREFECT_API_URL")

    def _stack_api_urls(self) -> set[str]:
        """The stack's Prefect API as recorded and as forwarded (if it is): without opening forwards."""
        urls = {self.record.prefect_api_url} if self.record else set()
        reached = self.__dict__.get("stack") or port_forward.opened(self.record)
        return urls | ({reached.prefect_api_url} if reached else set())
