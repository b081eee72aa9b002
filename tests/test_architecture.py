"""The shape of the house: runtime packages ship only what the services run.

`make lint` enforces the import direction (import-linter contracts in pyproject.toml); this
test checks the other half: every module of a runtime package is reached from a service's
entry point, so nothing test- or benchmark-only ships inside the images.
"""

from __future__ import annotations

import grimp

SERVICES = ("adwatch_generator", "adwatch_detector", "adwatch_notifier")
RUNTIME = ("adwatch", *SERVICES)


def test_every_runtime_module_is_reached_from_a_service_entry_point() -> None:
    graph = grimp.build_graph(*RUNTIME, "adwatch_dev")
    # each service's command line, and the detector's spark-submit launcher (SparkApplication)
    entry_points = {f"{service}.__main__" for service in SERVICES} | {"adwatch_detector.launcher"}
    reached = set(entry_points)
    for entry in entry_points:
        reached |= graph.find_upstream_modules(entry)
    runtime_modules = {m for m in graph.modules if m.split(".")[0] in RUNTIME}
    packages = {m for m in runtime_modules if graph.find_children(m)} | set(RUNTIME)
    unreached = sorted(runtime_modules - reached - packages)
    assert not unreached, f"runtime modules no service runs (move them to adwatch_dev or benchmarks/): {unreached}"


def test_the_rules_package_needs_no_type_ignore() -> None:
    """Pure logic types cleanly under mypy --strict: a cast says what a checker cannot follow, once."""
    from pathlib import Path

    import adwatch_detector.rules

    folder = Path(adwatch_detector.rules.__file__).parent
    found = [
        f"{path.name}:{n}"
        for path in sorted(folder.glob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "type: ignore" in line
    ]
    assert not found, f"type: ignore in adwatch_detector.rules (use a cast or a precise type): {found}"


def test_each_service_main_is_a_few_lines() -> None:
    """The commands live in modules (cli.py, runner.py...); ``__main__`` only names the entry point."""
    import importlib
    from pathlib import Path

    for service in SERVICES:
        path = Path(importlib.import_module(service).__file__ or "").parent / "__main__.py"
        code = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        assert len(code) <= 12, f"{path}: {len(code)} lines; move the command bodies into a module"
