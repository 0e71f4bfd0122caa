"""Where a cloud target keeps its Terraform state: the working copy, or the cloud's bucket with a lock."""

from __future__ import annotations

from pathlib import Path

from steep.stack.contract import StackError

_BACKENDS = {"aws": "s3", "gcp": "gcs", "azure": "azurerm"}


def write_backend(workdir: Path, target: str, backend_config: dict[str, str]) -> None:
    """With stack.backend_config, state goes to the cloud's bucket (S3+DynamoDB, GCS, Blob lease lock)."""
    file = workdir / "steep_backend.tf"
    if not backend_config:
        file.unlink(missing_ok=True)
        return
    if target == "local":
        raise StackError(
            "stack.backend_config: the local target keeps its state under project.home; remove it"
        )
    if target == "aws" and "dynamodb_table" not in backend_config:
        raise StackError("stack.backend_config: add dynamodb_table so the S3 state is locked")
    file.write_text(f'terraform {{\n  backend "{_BACKENDS[target]}" {{}}\n}}\n')
