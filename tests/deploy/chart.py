"""Render charts/adwatch offline (helm-python-sdk, no helm binary) and load what it renders.

Also the one way to refresh the committed examples:
    .venv/bin/python tests/deploy/chart.py --write     # rewrites charts/adwatch/examples/*/rendered/
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "adwatch"
EXAMPLES = CHART / "examples"
# read-only CRD schemas, beside the repo (never copied in); ADWATCH_CRDS_DIR for a git worktree elsewhere
CRDS = Path(os.environ.get("ADWATCH_CRDS_DIR") or REPO.parent / "shared" / "crds")
RELEASE = "adwatch"
NAMESPACE = "adwatch"

# Example case -> the values files it renders with (the environments, plus one with every switch on).
CASES: dict[str, list[Path]] = {
    "default": [],
    "kind": [REPO / "helm" / "values-kind.yaml"],
    "cloud": [REPO / "helm" / "values-cloud.yaml"],
    "all-features": [EXAMPLES / "all-features" / "values.yaml"],
}


def load_values(files: list[Path]) -> dict[str, Any]:
    """Values files merged left to right, maps deeply (as `helm -f a -f b` does)."""
    merged: dict[str, Any] = {}
    for path in files:
        merged = _merge(merged, yaml.safe_load(path.read_text()) or {})
    return merged


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template file name -> rendered text (empty files and NOTES.txt dropped); raises helm.HelmError on bad values."""
    return {k: v for k, v in _render_all(values).items() if k != NOTES}


def render_notes(values: dict[str, Any]) -> str:
    """What `helm install` prints after the install (templates/NOTES.txt)."""
    return _render_all(values)[NOTES]


NOTES = "NOTES.txt"


def _render_all(values: dict[str, Any]) -> dict[str, str]:
    helm.disable_logging()
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return {Path(k).name: v.strip() + "\n" for k, v in sorted(rendered.items()) if v.strip()}


# The passwords the chart generates (templates/secrets.yaml) are random at each render: the
# committed examples hold this placeholder instead, so that they stay comparable.
PLACEHOLDER = base64.b64encode(b"generated-at-install").decode()
_GENERATED = re.compile(r"(?m)^(  password: ).+$")


def stable(rendered: dict[str, str]) -> dict[str, str]:
    """The rendered templates with the generated passwords replaced by PLACEHOLDER."""
    return {k: _GENERATED.sub(rf"\g<1>{PLACEHOLDER}", v) if k == "secrets.yaml" else v for k, v in rendered.items()}


def render_case(case: str) -> dict[str, str]:
    return render(load_values(CASES[case]))


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object in the rendered templates."""
    return [doc for text in rendered.values() for doc in yaml.safe_load_all(text) if doc]


def write_examples() -> list[Path]:
    """Re-render every case into examples/<case>/rendered/ (stale files removed)."""
    written = []
    for case in CASES:
        out = EXAMPLES / case / "rendered"
        out.mkdir(parents=True, exist_ok=True)
        for old in [*out.glob("*.yaml"), out / NOTES]:
            old.unlink(missing_ok=True)
        files = {**stable(render_case(case)), NOTES: render_notes(load_values(CASES[case]))}
        for name, text in files.items():
            (out / name).write_text(text)
            written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite charts/adwatch/examples/*/rendered/")
    parser.add_argument("--case", choices=sorted(CASES), help="print one case's rendered manifests")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_examples():
            print(path.relative_to(REPO))
    elif args.case:
        sys.stdout.write("---\n".join(render_case(args.case).values()))
    else:
        parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
