"""The conformance harness itself: spec-drift mode, named schema failures, value
matchers, CI behaviour and the summary. Cases here are made up in the fixture
schema (conformance-adapter §4) and run through the real adapters."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .adapters import graph_engine, pipeline_utilities
from .fixtures import (
    UNKNOWN_ENV,
    Case,
    ConformanceDriftWarning,
    FixtureSchemaInvalid,
    UnknownDirective,
    skipped_predicates,
)
from .matchers import Bindings, fresh_bindings, reset_bindings, value_matches
from .test_conformance import run_named

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


def graph_case(expected: dict[str, Any], **extra: Any) -> Case:
    data: dict[str, Any] = {
        "state": {"fields": {"n": {"type": "int", "default": 0}}},
        "entry": "a",
        "nodes": {"a": {"update": {"n": 1}}},
        "edges": [{"from": "a", "to": "END"}],
        "initial_state": {},
        "observers": [{"name": "rec", "attach": "invocation", "behavior": "record"}],
        "expected": expected,
        **extra,
    }
    return Case("graph-engine", "900-made-up", "main", data, data, Path("made-up.yaml"))


async def run_graph(case: Case) -> list[tuple[str, str]]:
    skipped: list[tuple[str, str]] = []
    token = skipped_predicates.set(skipped)
    table = fresh_bindings()
    try:
        await run_named(case)
    finally:
        reset_bindings(table)
        skipped_predicates.reset(token)
    return skipped


# --- spec-drift mode ------------------------------------------------------------------------


async def test_unknown_fixture_predicate_fails_in_strict_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(UNKNOWN_ENV, raising=False)
    case = graph_case({"final_state": {"n": 1}, "invariants": {"made_up_predicate": True}})
    with pytest.raises(UnknownDirective, match="made_up_predicate"):
        await run_graph(case)


async def test_unknown_fixture_predicate_is_skipped_with_a_warning_in_drift_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(UNKNOWN_ENV, "warn")
    case = graph_case({"final_state": {"n": 1}, "invariants": {"made_up_predicate": True},
                       "observer_event_invariants": {"made_up_event_predicate": 3}})
    with pytest.warns(ConformanceDriftWarning, match="made_up_predicate"):
        skipped = await run_graph(case)
    assert [name for name, _ in skipped] == ["made_up_event_predicate", "made_up_predicate"]


async def test_drift_mode_still_runs_every_other_assertion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(UNKNOWN_ENV, "warn")
    case = graph_case({"final_state": {"n": 2}, "invariants": {"made_up_predicate": True}})
    with pytest.raises(AssertionError, match="final_state"):
        await run_graph(case)


@pytest.mark.parametrize("mode", ["strict", "warn"])
async def test_canonical_names_stay_failures_in_both_modes(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv(UNKNOWN_ENV, mode)
    # a canonical §5.9 predicate this adapter leaves to issue 15
    case = graph_case({"observer_event_invariants":
                       {"started_followed_by_suspended_in_order": True}})
    with pytest.raises(UnknownDirective, match="started_followed_by_suspended_in_order"):
        await run_graph(case)
    # an unknown directive (not a predicate)
    odd = graph_case({"final_state": {"n": 1}})
    odd.data["nodes"]["a"]["teleport"] = {"to": "b"}
    with pytest.raises(UnknownDirective, match="teleport"):
        await run_graph(odd)


def test_a_bad_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from .fixtures import drift_mode

    monkeypatch.setenv(UNKNOWN_ENV, "lenient")
    with pytest.raises(ValueError, match="strict"):
        drift_mode()


# --- missing keys fail naming the directive, never a raw KeyError -----------------------------


async def test_missing_keys_fail_as_fixture_schema_invalid() -> None:
    no_category = graph_case({"outcome": "errored", "error": {}})
    no_category.data["nodes"]["a"] = {"raises": "boom"}
    with pytest.raises(FixtureSchemaInvalid, match=r"expected\.error requires 'category'"):
        await run_graph(no_category)
    no_to = graph_case({"final_state": {"n": 1}})
    no_to.data["edges"] = [{"from": "a"}]
    with pytest.raises(FixtureSchemaInvalid, match="'to'"):
        await run_graph(no_to)
    unknown_observer = graph_case({"observer_events": {"nobody": []}})
    with pytest.raises(FixtureSchemaInvalid, match="nobody"):
        await run_graph(unknown_observer)


async def test_a_keyerror_from_adapter_code_is_named() -> None:
    data: dict[str, Any] = {
        "state": {"fields": {"x": {"type": "int", "default": 0}}},
        "entry": "a",
        "nodes": {"a": {"update": {"x": 1}}},
        "middleware": {"per_node": {"a": [{"type": "failure_isolation"}]}},
        "edges": [{"from": "a", "to": "END"}],
        "initial_state": {},
        "expected": {"final_state": {"x": 1}},
    }
    case = Case("pipeline-utilities", "901-made-up", "main", data, data, Path("x.yaml"))
    with pytest.raises(FixtureSchemaInvalid, match="requires 'degraded_update'"):
        await run_named(case)
    assert pipeline_utilities.run_case is not None and graph_engine.run_case is not None


async def test_a_newer_conformance_version_is_refused() -> None:
    from .fixtures import FixtureVersionUnsupported, adapter_version

    assert adapter_version() == (0, 109, 0)
    older = graph_case({"final_state": {"n": 1}}, conformance_version="0.48.0")
    await run_graph(older)
    newer = graph_case({"final_state": {"n": 1}}, conformance_version="0.110.0")
    with pytest.raises(FixtureVersionUnsupported, match=r"0\.110\.0"):
        await run_graph(newer)


async def test_wrap_with_middleware_records_markers_in_nesting_order() -> None:
    import yaml

    from .adapters import graph_build as gb
    from .fixtures import OWN_CASES

    path = OWN_CASES / "graph-engine" / "003-wrapped-node-markers.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    ctx = gb.BuildContext(Case("graph-engine", path.stem, "main", data, data, path))
    token = gb.bind_context(ctx)
    try:
        await graph_engine.run_graph_case(ctx)
    finally:
        gb._CTX.reset(token)
    assert ctx.scratch["middleware_log"] == ["outer-in", "inner-in", "inner-out", "outer-out"]


# --- value matchers (§5.10) -------------------------------------------------------------------


def test_value_matchers() -> None:
    table = Bindings()
    uuid = "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
    value_matches({"id": "<uuid>", "hex": "<uuid-hex-1>", "s": "<any-string>"},
                  {"id": uuid, "hex": "0" * 32, "s": "x"}, "v", table)
    for expected, actual in (("<uuid>", "not-a-uuid"), ("<uuid-hex>", "ABC"),
                             ("<any-string>", ""), ({"non_empty_string": True}, ""),
                             ({"harness_parameterized": "implementation_name"}, "other"),
                             ({"a": 1}, {"a": 1, "b": 2}), ([1], [1, 2]), (True, 1)):
        with pytest.raises(AssertionError):
            value_matches(expected, actual, "v", table)
    value_matches({"harness_parameterized": "implementation_name"}, "openarmature-nodes", "v",
                  table)
    value_matches("<trace_a>", "t1", "v", table)
    value_matches("<trace_a>", "t1", "v", table)
    value_matches("<trace_b>", "t1", "v", table)  # a distinct token binds on its own
    with pytest.raises(AssertionError, match="bound to <trace_a>"):
        value_matches("<trace_a>", "t2", "v", table)
    with pytest.raises(FixtureSchemaInvalid, match="no harness parameter"):
        value_matches({"harness_parameterized": "nope"}, "x", "v", table)


# --- CI and the summary (subprocesses: they need their own environment) -----------------------


def _pytest(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         *args],
        cwd=REPO, env=full, capture_output=True, text=True, timeout=300, check=False,
    )


def test_missing_spec_fails_under_ci_and_skips_otherwise(tmp_path: Path) -> None:
    target = "tests/conformance/test_conformance.py"
    ci = _pytest({"OPENARMATURE_SPEC_DIR": str(tmp_path), "CI": "true"}, target)
    assert ci.returncode == 1 and "spec directory not found" in ci.stdout, ci.stdout
    local = _pytest({"OPENARMATURE_SPEC_DIR": str(tmp_path), "CI": ""}, target)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout


def test_ci_script_refuses_a_missing_spec(tmp_path: Path) -> None:
    run = subprocess.run(["bash", str(REPO / ".ci" / "run")], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=False,
                         env={**os.environ, "OPENARMATURE_SPEC_DIR": str(tmp_path),
                              "CI": "true"})
    assert run.returncode == 1 and "no spec at" in run.stderr, (run.stdout, run.stderr)


def test_summary_lists_warned_cases_and_their_skipped_predicates(tmp_path: Path) -> None:
    folder = tmp_path / "spec" / "graph-engine" / "conformance"
    folder.mkdir(parents=True)
    (folder / "950-drifted.yaml").write_text(textwrap.dedent("""\
        state: {fields: {n: {type: int, default: 0}}}
        entry: a
        nodes: {a: {update: {n: 1}}}
        edges: [{from: a, to: END}]
        initial_state: {}
        expected:
          final_state: {n: 1}
          invariants: {predicate_from_a_newer_spec: true}
        """))
    env = {"OPENARMATURE_SPEC_DIR": str(tmp_path), "CI": "", UNKNOWN_ENV: "warn"}
    out = _pytest(env, "tests/conformance/test_conformance.py").stdout
    assert "graph-engine         asyncio  1 passed, 0 deferred, 1 warned" in out, out
    assert "graph-engine         trio     1 passed, 0 deferred, 1 warned" in out, out
    assert "graph-engine/950-drifted[main]: predicate_from_a_newer_spec" in out, out
    strict = _pytest({**env, UNKNOWN_ENV: "strict"}, "tests/conformance/test_conformance.py")
    assert strict.returncode == 1 and "predicate_from_a_newer_spec" in strict.stdout
