"""The pins install where the README says they do: every pinned distribution accepts the oldest
Python the package declares (3.11.0; Debian 12 ships 3.11.2), so `make` cannot fail with
ResolutionImpossible on a Python the package claims to support."""

from __future__ import annotations

import importlib.metadata as metadata
import tomllib

from packaging.specifiers import SpecifierSet

from tests.conftest import ROOT


def declared_floor() -> str:
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert spec.startswith(">="), spec
    floor = spec[2:].strip()
    return floor if floor.count(".") == 2 else f"{floor}.0"


def test_every_pin_accepts_the_declared_oldest_python() -> None:
    floor = declared_floor()
    refused = []
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" not in line:
            continue
        name, version = line.split("==", 1)
        try:
            dist = metadata.metadata(name)
        except metadata.PackageNotFoundError:
            continue  # pinned for another platform or extra; pip checks it where it installs
        if dist["Version"] != version:
            continue  # not what is installed here: its metadata is not at hand
        requires = dist.get("Requires-Python")
        if requires and not SpecifierSet(requires).contains(floor, prereleases=True):
            refused.append(f"{name}=={version} requires Python {requires}")
    assert not refused, f"pins that cannot install on Python {floor}: {refused}"
