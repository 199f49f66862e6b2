#!/usr/bin/env bash
# Prints the Helm chart's manifests as `helm template` would, on stdout:
#   bash scripts/render-chart.sh [--set key=value ...] [-f values.yaml ...] [--namespace NS]
#                                [--release NAME] [--include-crds]
# Rendering is Helm's own (the Helm v4 SDK inside PyPI's helm-python-sdk: full Go-template and
# Sprig semantics; no helm binary, no cluster). Installs the package when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import helm_python, yaml' >/dev/null 2>&1; then
  python3 -m pip install -q 'helm-python-sdk==0.2.2' pyyaml >&2
fi
exec python3 deploy/render_chart.py "$@"
