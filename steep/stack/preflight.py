"""Checks that run before Terraform touches anything: credentials, region, ports.

A provision that cannot succeed fails here with the fix in the message, not half-way through an apply.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from steep.stack import daemons, prices
from steep.stack.contract import StackError

_CREDENTIALS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    # target: (any of these env vars, any of these files under $HOME, how to fix)
    "aws": (
        (
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ),
        (".aws/credentials", ".aws/config"),
        "run `aws configure` or set AWS_PROFILE / AWS_ACCESS_KEY_ID",
    ),
    "gcp": (
        ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CREDENTIALS", "CLOUDSDK_AUTH_ACCESS_TOKEN"),
        (".config/gcloud/application_default_credentials.json",),
        "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS",
    ),
    "azure": (
        ("ARM_CLIENT_ID", "ARM_USE_MSI", "ARM_USE_OIDC"),
        (".azure/azureProfile.json",),
        "run `az login` or set ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID and ARM_SUBSCRIPTION_ID",
    ),
}


def check_credentials(
    target: str, environ: dict[str, str] | None = None, user_home: Path | None = None
) -> None:
    """Fail before Terraform when the cloud has no credentials this machine could use."""
    if target == "local":
        return
    environ = os.environ if environ is None else environ
    user_home = user_home or Path.home()
    names, files, fix = _CREDENTIALS[target]
    if any(environ.get(n) for n in names) or any((user_home / f).exists() for f in files):
        return
    raise StackError(
        f"no {target} credentials found (looked for {', '.join(names)} and ~/{', ~/'.join(files)}); {fix}"
    )


def resolve_region(target: str, region: str | None) -> str | None:
    """The region to use (the target's default when unset); an unknown one is refused with close matches."""
    if target == "local":
        return None
    region = region or prices.DEFAULT_REGION[target]
    known = prices.REGIONS[target]
    if region not in known:
        close = difflib.get_close_matches(region, known, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise StackError(
            f"stack.region: {region!r} is not a region of {target}{hint}; known: {', '.join(known)}"
        )
    return region


def check_ports(host: str, ports: dict[str, int], running: set[str]) -> None:
    """Refuse before apply when a port of a service that is not already ours is taken."""
    key = {"serving": "serving.port"}
    for name, port in ports.items():
        if name == "serving" or name.split("_")[0] in running:
            continue
        if not daemons.port_free(host, port):
            field_name = key.get(name, f"stack.local.{name}_port")
            raise StackError(
                f"port {port} on {host} ({name}) is already in use by another program; stop that program or "
                f"set {field_name} to a free port in steep.yaml (or --set {field_name}=PORT)"
            )
    if len(set(ports.values())) != len(ports):
        raise StackError(f"two services share a port: {ports}; give each its own port in steep.yaml")
