"""A real crash: SIGKILL a process mid-fan-out, resume it in a fresh process.

The child (``crash_child.py``) runs a 24-instance fan-out on the SQLite
checkpointer; instance 10 announces itself and hangs, and the parent kills the
child with SIGKILL on that announcement (an event, not a timer). What the dead
process had saved decides the rest: a fresh process resumes the invocation,
and the test checks that the final state equals an uninterrupted run's, that
every instance recorded ``completed`` at the kill ran exactly once in total
(counted in the request log every instance body writes first), and that every
instance ran at least once. Both event loops, for both processes.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from openarmature_nodes.graph import SQLiteCheckpointer

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[2]
N = 24


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_sigkill_mid_fan_out_then_resume_in_a_fresh_process(tmp_path: Path, loop: str) -> None:
    db, counts = str(tmp_path / "ckpt.db"), str(tmp_path / "requests.log")
    first = _child(db, counts, loop, "10")
    try:
        assert first.stdout is not None
        line = first.stdout.readline()  # blocks until instance 10 is running
        assert line.startswith("READY "), (line, first.stderr.read() if first.stderr else "")
        invocation_id = line.split()[1]
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL

    record = anyio.run(_load, db, invocation_id)
    assert record is not None, "the killed process saved nothing"
    (progress,) = record.fan_out_progress
    done_at_kill = {i for i, e in enumerate(progress.instances) if e.state == "completed"}
    assert done_at_kill, "no instance had completed before the kill"
    assert 10 not in done_at_kill

    second = _child(db, counts, loop, "-1", invocation_id)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final == {"items": list(range(N)), "results": [i * i for i in range(N)]}

    runs = collections.Counter(int(x) for x in Path(counts).read_text().split())
    assert set(runs) == set(range(N))
    for i in done_at_kill:
        assert runs[i] == 1, f"instance {i} completed before the kill but ran {runs[i]} times"
    assert runs[10] == 2  # in flight at the kill: re-run on resume


async def _load(db: str, invocation_id: str) -> object:
    async with SQLiteCheckpointer(db) as cp:
        return await cp.load(invocation_id)
