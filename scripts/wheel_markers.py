"""Requirements of a wheelhouse that a given Python version needs and the wheelhouse lacks.

``python scripts/wheel_markers.py DIR 3.11.2`` prints them, space-separated (nothing when
complete). pip evaluates environment markers for the interpreter running it; an image's
interpreter can be older (Debian bookworm's 3.11.2), and e.g. redis then needs async-timeout.
"""

from __future__ import annotations

import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def missing(wheelhouse: Path, python_full_version: str) -> list[str]:
    env = {"python_full_version": python_full_version, "python_version": ".".join(python_full_version.split(".")[:2])}
    have = {canonicalize_name(w.name.split("-")[0]) for w in wheelhouse.glob("*.whl")}
    wanted: dict[str, str] = {}
    for whl in sorted(wheelhouse.glob("*.whl")):
        with zipfile.ZipFile(whl) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            headers = HeaderParser().parsestr(zf.read(meta).decode())
        for line in headers.get_all("Requires-Dist") or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env | {"extra": ""}):
                continue
            name = canonicalize_name(req.name)
            if name not in have:
                wanted[name] = f"{req.name}{req.specifier}"
    return sorted(wanted.values())


if __name__ == "__main__":
    print(" ".join(missing(Path(sys.argv[1]), sys.argv[2])))
