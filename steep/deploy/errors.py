"""The error of `steep deploy`, shared by reading prefect.yaml, registering it, and starting the worker."""

from steep.errors import SteepError


class DeployError(SteepError):
    """Deployments cannot be registered; the message says what is missing and how to fix it."""
