"""Renders deploy/helm/verdict like `helm template` (scripts/render-chart.sh is the entry point).

Helm's own engine does the work (the Helm v4 SDK in helm-python-sdk); this adds the command
line: --set/-f values (Helm's own parsers), the release name and namespace, and CRDs on request.
"""

import argparse
import pathlib
import sys

import helm_python
import yaml

CHART = pathlib.Path(__file__).resolve().parent / "helm" / "verdict"


def merge(base, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


def render(sets=(), files=(), release="verdict", namespace="verdict", include_crds=False):
    """The rendered manifests as one YAML stream (documents in file-name order)."""
    values = {}
    for f in files:
        merge(values, yaml.safe_load(pathlib.Path(f).read_text()) or {})
    for s in sets:
        merge(values, helm_python.parse_set_string(s))
    chart = helm_python.Chart.load(str(CHART))
    try:
        out = chart.render(values, name=release, namespace=namespace, is_install=True)
    finally:
        chart.close()
    docs = []
    if include_crds:
        for crd in sorted((CHART / "crds").glob("*.yaml")):
            docs.append(f"# Source: verdict/crds/{crd.name}\n{crd.read_text().strip()}\n")
    for name in sorted(out):
        text = out[name]
        if name.endswith("NOTES.txt") or not text.strip():
            continue
        for part in text.split("\n---"):
            if any(l.strip() and not l.lstrip().startswith("#") for l in part.splitlines()):
                docs.append(f"# Source: {name}\n{part.strip()}\n")
    return "---\n" + "---\n".join(docs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-f", "--values", action="append", default=[], metavar="FILE")
    p.add_argument("--release", default="verdict")
    p.add_argument("--namespace", default="verdict")
    p.add_argument("--include-crds", action="store_true")
    a = p.parse_args(argv)
    try:
        sys.stdout.write(render(a.set, a.values, a.release, a.namespace, a.include_crds))
    except helm_python.HelmError as e:
        sys.exit(f"render-chart: {e}")


if __name__ == "__main__":
    main()
