"""Discovery and loading of the spec's YAML conformance fixtures.

Fixtures are read from ``$OPENARMATURE_SPEC_DIR`` (default: the
``openarmature-spec`` folder beside the repository, ``../shared/openarmature-spec``)
and never copied into this repository. Each fixture file yields one or more
cases: a file with a ``cases:`` list gives one case per entry; any other file
is a single case named ``main``. Test ids are ``<capability>/<fixture>[<case>]``.

Failures the adapters raise for the fixture itself (conformance-adapter §9):
:class:`UnknownDirective` (``fixture_directive_unknown``) for a directive no
adapter interprets, :class:`FixtureSchemaInvalid` (``fixture_schema_invalid``)
for a required key that is missing (:func:`need`), never a raw ``KeyError``.

Spec-drift mode: with ``OPENARMATURE_CONFORMANCE_UNKNOWN=warn`` a
*fixture-specific* invariant predicate no adapter interprets (§5.9: they live
in each fixture's prose) is skipped with a :class:`ConformanceDriftWarning`
instead of failing the case; every other assertion still runs. Adapters report
such a predicate through :func:`unknown_predicate`. The canonical §5.9
predicates and every other directive stay failures in both modes. The default
(and CI) is ``strict``.
"""

from __future__ import annotations

import os
import re
import tomllib
import warnings
from contextvars import ContextVar
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


OWN_CASES = Path(__file__).with_name("own_cases")


def load_cases(capability: str, folder: Path | None = None) -> list[Case]:
    """All cases of one capability, in fixture-file order (from the spec's
    ``conformance/`` folder, or from ``folder``: our own cases)."""
    if folder is None:
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
    """``fixture_directive_unknown``: a fixture uses a directive no adapter implements."""


class FixtureSchemaInvalid(AssertionError):
    """``fixture_schema_invalid``: a directive lacks a key it requires (or has a bad shape)."""


class FixtureVersionUnsupported(AssertionError):
    """``fixture_version_unsupported``: the fixture targets a newer adapter (§4.4, §8.5)."""


def adapter_version() -> tuple[int, ...]:
    """The spec version the adapter targets: ``[tool.openarmature]`` in ``pyproject.toml``."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return _version(str(data["tool"]["openarmature"]["openarmature_spec_version"]))


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.strip().lstrip("v").split("."))
    except ValueError:
        raise FixtureSchemaInvalid(
            f"fixture_schema_invalid: conformance_version {text!r} is not a version") from None


def check_version(case: Case) -> None:
    """Refuse a case whose ``conformance_version`` is above the adapter's (§4.4)."""
    declared = case.data.get("conformance_version", case.document.get("conformance_version"))
    if declared is None:
        return
    if _version(str(declared)) > adapter_version():
        ours = ".".join(map(str, adapter_version()))
        raise FixtureVersionUnsupported(
            f"fixture_version_unsupported: {case.test_id} declares conformance_version "
            f"{declared}; this adapter targets {ours}")


class ConformanceDriftWarning(UserWarning):
    """A fixture-specific invariant predicate was skipped in spec-drift mode."""


def need(mapping: Any, key: str, where: str) -> Any:
    """``mapping[key]``, or a :class:`FixtureSchemaInvalid` naming the directive."""
    if not isinstance(mapping, dict):
        raise FixtureSchemaInvalid(f"fixture_schema_invalid: {where} must be a mapping, got "
                                   f"{type(mapping).__name__}")
    if key not in mapping:
        raise FixtureSchemaInvalid(f"fixture_schema_invalid: {where} requires {key!r}")
    return mapping[key]


def as_schema_error(exc: KeyError, where: str) -> BaseException:
    """A ``KeyError`` raised by adapter code reading the fixture, as a
    :class:`FixtureSchemaInvalid` naming the key and the adapter function (the
    directive's handler) that needed it. A ``KeyError`` from deeper down (the
    implementation under test) is returned unchanged: it is not the fixture's."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None or "/tests/conformance/" not in last.tb_frame.f_code.co_filename:
        return exc
    code = last.tb_frame.f_code
    handler = f"{Path(code.co_filename).name}:{last.tb_lineno} {code.co_name}"
    err = FixtureSchemaInvalid(f"fixture_schema_invalid: {where}: the directive read by "
                               f"{handler} requires the key {exc.args[0]!r}, which is missing")
    err.__cause__ = exc
    return err


UNKNOWN_ENV = "OPENARMATURE_CONFORMANCE_UNKNOWN"


def drift_mode() -> bool:
    """``True`` when unknown fixture-specific predicates are warnings (spec-drift mode)."""
    mode = os.environ.get(UNKNOWN_ENV, "strict").strip().lower()
    if mode not in ("strict", "warn"):
        raise ValueError(f"{UNKNOWN_ENV} must be 'strict' or 'warn', not {mode!r}")
    return mode == "warn"


# The canonical predicates of conformance-adapter §5.9: unknown ones fail in both modes.
CANONICAL_PREDICATES = re.compile(
    r"^(inner_event_count|inner_fan_out_indices_seen|inner_branch_names_seen"
    r"|\w+_node_events_count|\w+_node_fan_out_index_absent|inner_event_identities_unique"
    r"|started_followed_by_suspended_in_order|no_completed_event_for_suspending_node"
    r"|drain_returned_within_timeout|workers_not_cancelled_on_per_invocation_drain_timeout)$"
)

skipped_predicates: ContextVar[list[tuple[str, str]] | None] = ContextVar(
    "conformance_skipped_predicates", default=None
)
"""Set by the test around one case: ``(predicate, where)`` of each predicate skipped."""


def unknown_predicate(name: str, where: str) -> None:
    """Report an invariant predicate no adapter interprets.

    Strict mode (default) and canonical §5.9 names: raise :class:`UnknownDirective`.
    Spec-drift mode: record it for the summary, warn, and return so the caller
    skips this one predicate and carries on with the rest of the case.
    """
    if not drift_mode() or CANONICAL_PREDICATES.match(name):
        raise UnknownDirective(
            f"fixture_directive_unknown: invariant predicate {name!r} in {where}"
        )
    sink = skipped_predicates.get()
    if sink is not None:
        sink.append((name, where))
    warnings.warn(ConformanceDriftWarning(f"skipped unknown fixture-specific predicate {name!r} "
                                          f"in {where}"), stacklevel=2)


def check_directives(mapping: Any, known: set[str] | frozenset[str], where: str) -> None:
    """Fail, naming the directive, when ``mapping`` has a key outside ``known``.

    Adapters call this on every mapping they interpret, so a new directive in a
    fixture is never silently ignored.
    """
    if not isinstance(mapping, dict):
        return
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise UnknownDirective(f"fixture_directive_unknown: {unknown} in {where}")
