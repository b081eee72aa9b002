"""Generated documentation stays in sync with the code (`make docs` regenerates it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gen_docs():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_settings_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    assert _gen_docs().readme_with_table(readme) == readme, "README settings table is stale: run `make docs`"


def test_metrics_reference_is_current() -> None:
    current = (ROOT / "docs" / "metrics.md").read_text()
    assert _gen_docs().metrics_doc() == current, "docs/metrics.md is stale: run `make docs`"


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [["make", "run"], ["make", "test"]]
