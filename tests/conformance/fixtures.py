"""Discovery and loading of the spec's YAML conformance fixtures.

Fixtures are read from ``$OPENARMATURE_SPEC_DIR`` (default: the
``openarmature-spec`` folder beside the repository, ``../shared/openarmature-spec``)
and never copied into this repository. Each fixture file yields one or more
cases: a file with a ``cases:`` list gives one case per entry; any other file
is a single case named ``main``. Test ids are ``<capability>/<fixture>[<case>]``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPEC_DIR = REPO.parent / "shared" / "openarmature-spec"
DEFERRAL_FILE = Path(__file__).with_name("deferred.toml")


def spec_dir() -> Path:
    return Path(os.environ.get("OPENARMATURE_SPEC_DIR", str(DEFAULT_SPEC_DIR)))


@dataclass(frozen=True)
class Case:
    capability: str
    fixture: str  # file stem, e.g. "005-openai-wire-mapping"
    name: str  # case name, "main" for single-case files
    data: dict[str, Any]  # the case mapping (for single-case files: the whole document)
    document: dict[str, Any] = field(repr=False)  # the whole fixture document
    path: Path = field(repr=False)

    @property
    def test_id(self) -> str:
        return f"{self.capability}/{self.fixture}[{self.name}]"


def load_cases(capability: str) -> list[Case]:
    """All cases of one capability, in fixture-file order."""
    folder = spec_dir() / "spec" / capability / "conformance"
    out: list[Case] = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        cases = doc.get("cases")
        if isinstance(cases, list):
            for i, c in enumerate(cases):
                name = str(c.get("name") or f"case{i}")
                out.append(Case(capability, path.stem, name, c, doc, path))
        else:
            out.append(Case(capability, path.stem, "main", doc, doc, path))
    return out


def load_deferrals() -> dict[str, str]:
    """``{"<capability>/<fixture>" or "<capability>/<fixture>[<case>]": reason}``."""
    if not DEFERRAL_FILE.exists():
        return {}
    data = tomllib.loads(DEFERRAL_FILE.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in data.get("deferred", {}).items()}


def deferral_reason(case: Case, deferrals: dict[str, str]) -> str | None:
    return deferrals.get(case.test_id) or deferrals.get(f"{case.capability}/{case.fixture}")


class UnknownDirective(AssertionError):
    """A fixture uses a directive this adapter does not implement."""


def check_directives(mapping: Any, known: set[str] | frozenset[str], where: str) -> None:
    """Fail, naming the directive, when ``mapping`` has a key outside ``known``.

    Adapters call this on every mapping they interpret, so a new directive in a
    fixture is never silently ignored.
    """
    if not isinstance(mapping, dict):
        return
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise UnknownDirective(f"unknown directive(s) {unknown} in {where}")
