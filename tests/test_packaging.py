"""The package's layout: what ``pip install`` ships and under which names.

The middleware's source lives in the repository's top-level ``middleware/``
folder and installs as ``openarmature_nodes.middleware`` (a setuptools
``package-dir`` mapping), so ``pyproject.toml`` lists the packages by hand: a
new subpackage missing from that list would import in a checkout and be absent
from the wheel. These tests catch that, and a top-level ``middleware`` creeping
back in.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setuptools_config() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        config: dict[str, object] = tomllib.load(f)["tool"]["setuptools"]
    return config


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    listed = set(_setuptools_config()["packages"])  # type: ignore[call-overload]
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "openarmature_nodes").rglob("__init__.py")
        if "middleware" not in init.relative_to(ROOT).parts  # the link to middleware/
    }
    on_disk |= {
        "openarmature_nodes.middleware" + "".join(f".{p}" for p in init.parent.relative_to(
            ROOT / "middleware").parts)
        for init in (ROOT / "middleware").rglob("__init__.py")
    }
    assert on_disk == listed


def test_middleware_installs_under_the_package_name_only() -> None:
    config = _setuptools_config()
    assert config["package-dir"] == {"openarmature_nodes.middleware": "middleware"}
    packages = config["packages"]
    assert isinstance(packages, list)
    assert not [p for p in packages if p == "middleware" or p.startswith("middleware.")]


def test_middleware_imports_under_the_package_name() -> None:
    from openarmature_nodes import middleware
    from openarmature_nodes.middleware import RetryMiddleware

    assert RetryMiddleware.__module__ == "openarmature_nodes.middleware.retry"
    assert Path(middleware.__file__ or "").resolve().parent == (ROOT / "middleware").resolve()
