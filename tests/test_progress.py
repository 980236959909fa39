"""Fan-out progress: counts (done / degraded / failed), log lines when the stream
is not a terminal, and the enrichment example's live bar under a pseudo-terminal
versus its log lines when piped."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import subprocess
import sys
import termios
from typing import Annotated, Any

import pytest

from openarmature_nodes.graph import END, GraphBuilder, State, append
from openarmature_nodes.middleware import FailureIsolationMiddleware
from openarmature_nodes.observability.progress import FanOutProgress, format_line
from tests.test_examples import EXAMPLES

pytestmark = pytest.mark.anyio


class One(State):
    n: int = 0
    out: int = 0


class Many(State):
    ns: list[int] = []
    outs: Annotated[list[int], append] = []
    errors: Annotated[list[Any], append] = []


async def work(state: One) -> dict[str, Any]:
    if state.n % 5 == 3:
        raise ValueError("degrade me")
    if state.n % 5 == 4:
        raise KeyError("fail me")
    return {"out": state.n * 2}


def fan_graph() -> Any:
    one = GraphBuilder(One).add_node("work", work).add_edge("work", END).set_entry("work")
    isolate = FailureIsolationMiddleware(
        degraded_update={"out": -1}, event_name="degraded",
        predicate=lambda exc: "degrade me" in str(exc),
    )
    return (
        GraphBuilder(Many)
        .add_fan_out_node("fan", one.compile(), items_field="ns", item_field="n",
                          collect_field="out", target_field="outs", error_policy="collect",
                          errors_field="errors", instance_middleware=[isolate])
        .add_edge("fan", END).set_entry("fan").compile()
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.5  # each reading half a second later
        return self.now


async def test_counts_and_log_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = FanOutProgress(stream=out, interval=0, clock=Clock())
    assert progress.bar is False
    final = await fan_graph().invoke(Many(ns=list(range(10))), observers=[progress])
    assert len(final.errors) == 2
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # interval 0: one line per instance
    assert lines[-1].startswith("fan: 10/10 (100%) done=6 degraded=2 failed=2 rate=")
    assert lines[-1].endswith("eta=0s")


async def test_lines_are_periodic_and_other_observers_see_no_new_events() -> None:
    out = io.StringIO()
    progress = FanOutProgress("fan", stream=out, interval=3600)
    seen: list[Any] = []

    async def plain(event: Any) -> None:
        seen.append(type(event).__name__)

    await fan_graph().invoke(Many(ns=list(range(10))), observers=[progress, plain])
    assert out.getvalue().splitlines() == [
        line for line in out.getvalue().splitlines() if line.startswith("fan: 10/10")
    ]
    assert len(out.getvalue().splitlines()) == 1  # only the completion line
    assert "FanOutInstanceEvent" not in seen  # opt-in: a plain observer never gets it


def test_format_line_rate_and_eta() -> None:
    assert format_line("x", 25, 100, 20, 3, 2, 5.0) == (
        "x: 25/100 (25%) done=20 degraded=3 failed=2 rate=5.0/s eta=15s"
    )
    assert format_line("x", 0, 4, 0, 0, 0, 0.0).endswith("rate=0.0/s eta=?")


def _example(*args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / "fanout_enrichment.py"), "--records", "20",
            "--rate-limited", "0", *args]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENARMATURE_")}
    env["COLUMNS"] = "120"
    return env


def test_the_example_draws_a_bar_on_a_terminal() -> None:
    pytest.importorskip("tqdm")
    master, slave = os.openpty()
    # a terminal 100 columns wide (a fresh pseudo-terminal reports 0 x 0)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(_example(), stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL, env=_env())
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    tty = b"".join(chunks).decode(errors="replace")
    assert "enrich: 100%" in tty and "20/20" in tty  # tqdm's bar, desc and count
    assert "\r" in tty  # redrawn in place
    assert "done=20 degraded=0 failed=0" in tty
    assert "enrich: 20/20 (100%)" not in tty  # no log lines on a terminal
    assert b"done in" in stdout


def test_the_example_logs_lines_when_piped() -> None:
    done = subprocess.run(_example("--progress-every", "0"), capture_output=True, text=True,
                          timeout=120, env=_env(), check=False)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("enrich: ")]
    assert len(lines) == 20
    assert lines[-1].startswith("enrich: 20/20 (100%) done=20 degraded=0 failed=0 rate=")
    assert "\r" not in done.stderr
