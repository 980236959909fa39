"""The example scripts run to completion on the embedded endpoint, on both backends.

Each example runs in a subprocess exactly as a newcomer would run it (no
``--base-url``: the script starts the embedded endpoint itself), and the test
checks its exit status and the lines that show it did its job.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "graphs"
BACKENDS = ["asyncio", "trio"]


def run_example(
    script: str, *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENARMATURE_")}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_agent_example(backend: str) -> None:
    done = run_example("agent.py", "--backend", backend)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "[embedded endpoint] no --base-url given" in out
    assert f"backend {backend}" in out
    assert "warm-up: the model answered" in out
    # the two tool calls, both results (in call order), and the final answer
    assert '-> get_weather({"city":"Paris"})' in out
    assert '-> get_time({"city":"Tokyo"})' in out
    weather = out.index('<- {"city":"Paris"')
    clock = out.index('<- {"city":"Tokyo"')
    assert weather < clock
    assert "assistant | Here is what I found - Paris: light rain, 14 °C" in out
    assert "2 LLM turns, 2 tool results, stop reason: answer" in out
    assert "[embedded endpoint] stopped after 4 requests" in out  # models, warm-up, 2 turns


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["native", "fallback", "json-object"])
def test_extraction_example(backend: str, mode: str) -> None:
    done = run_example("extraction.py", "--backend", backend, "--structured", mode)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Ada Lovelace <ada@analytical.example> company='Analytical Engines Ltd'" in out
    assert "intent=meeting -> queue sales" in out
    assert "intent=invoice -> queue accounting" in out
    assert "3/3 extracted; 4 completions (re-asks: 1)" in out


def test_extraction_gives_up_after_the_reask_budget() -> None:
    done = run_example("extraction.py", "--max-reasks", "0")
    assert done.returncode == 0, done.stderr
    assert "failed: structured_output_invalid" in done.stdout
    assert "2/3 extracted; 3 completions (re-asks: 0)" in done.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_readiness_example(backend: str) -> None:
    done = run_example("readiness.py", "--backend", backend)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for step in ("ok   ready", "ok   warm-up", "ok   first call"):
        assert step in out
    for category in (
        "-> provider_invalid_model",
        "-> provider_authentication",
        "-> provider_unavailable",
        "-> provider_model_not_loaded",
    ):
        assert category in out
    assert "the warm-up gate polls through it  -> open after 4 probes" in out
    assert "verdict: ready" in out


def test_agent_against_a_closed_port_fails_with_the_category() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    done = run_example(
        "agent.py", "--base-url", url, "--model", "m", "--warmup-deadline", "0.2"
    )
    assert done.returncode == 1
    assert "error: provider_unavailable" in done.stderr


def test_readiness_against_a_closed_port_is_not_ready() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    done = run_example("readiness.py", "--base-url", url, "--model", "m")
    assert done.returncode == 1
    assert "FAIL ready" in done.stdout and "provider_unavailable" in done.stdout
    assert "verdict: NOT ready" in done.stdout


def test_a_base_url_ending_in_v1_is_refused_with_advice() -> None:
    done = run_example("agent.py", "--base-url", "http://127.0.0.1:9/v1", "--model", "m")
    assert done.returncode == 2
    assert "ends in /v1" in done.stderr


def test_base_url_without_model_is_a_usage_error() -> None:
    done = run_example("agent.py", "--base-url", "http://127.0.0.1:9")
    assert done.returncode != 0
    assert "--model" in done.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_approval_agent_suspends_then_resumes_in_another_process(
    backend: str, tmp_path: Path
) -> None:
    db = str(tmp_path / "approvals.db")
    first = run_example("approval_agent.py", "--db", db, "--backend", backend)
    assert first.returncode == 0, first.stderr
    assert 'awaits approval of get_weather({"city":"Paris"})' in first.stdout
    invocation = first.stdout.split("suspended: invocation ")[1].split()[0]
    done = run_example("approval_agent.py", "--db", db, "--resume", invocation, "--approve",
                       "--backend", backend)
    assert done.returncode == 0, done.stderr
    assert f"--- resumed invocation {invocation} (approve) ---" in done.stdout
    assert '<- {"city":"Paris","sky":"light rain","celsius":14}' in done.stdout
    assert "assistant | In Paris: light rain, 14 °C." in done.stdout
    again = run_example("approval_agent.py", "--db", db, "--resume", invocation, "--deny")
    assert again.returncode == 1  # already resumed: suspension_record_invalid
    assert "SuspensionRecordInvalid" in again.stderr


@pytest.mark.dask
@pytest.mark.parametrize("backend", BACKENDS)
def test_distributed_enrichment_example(backend: str) -> None:
    pytest.importorskip("distributed")
    done = run_example("distributed_enrichment.py", "--backend", backend, "--records", "60")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "cluster: a LocalCluster of 2 worker processes" in out
    assert f"workers on {backend}" in out
    assert "60 taglines in record order" in out
    assert "first 20 identical to a local run: yes" in out
