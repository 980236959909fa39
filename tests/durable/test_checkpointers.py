"""The checkpoint stores: round trip, list / delete, encodings, corruption, concurrency."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from openarmature_nodes.graph import State
from openarmature_nodes.graph.checkpoint import (
    CheckpointFilter,
    CheckpointRecord,
    CheckpointRecordInvalid,
    InMemoryCheckpointer,
    NodePosition,
    SQLiteCheckpointer,
)

pytestmark = pytest.mark.anyio


class Doc(State):
    title: str = ""
    tags: list[str] = []


def _record(inv: str, n: int = 1, corr: str = "c", status: Any = "running") -> CheckpointRecord:
    return CheckpointRecord(
        invocation_id=inv, correlation_id=corr, state=Doc(title=f"t{n}", tags=["a"] * n),
        completed_positions=tuple(
            NodePosition(namespace=(), node_name=f"n{i}", step=i, attempt_index=0)
            for i in range(n)
        ),
        last_saved_at=float(n), schema_version="v1", status=status,
    )


async def _round_trip(cp: Any) -> None:
    assert await cp.load("nope") is None
    await cp.delete("nope")  # tolerated
    await cp.save("a", _record("a", 1))
    await cp.save("a", _record("a", 3))  # the latest wins
    await cp.save("b", _record("b", 2, corr="other", status="completed"))
    got = await cp.load("a")
    assert got is not None
    assert got.completed_positions == _record("a", 3).completed_positions
    state = got.state if isinstance(got.state, dict) else {"title": got.state.title,
                                                             "tags": got.state.tags}
    assert state == {"title": "t3", "tags": ["a", "a", "a"]}
    assert [s.invocation_id for s in await cp.list()] == ["b", "a"]
    only = await cp.list(CheckpointFilter(correlation_id="other"))
    assert [(s.invocation_id, s.completed_node_count, s.status) for s in only] == [
        ("b", 2, "completed")]
    assert [s.invocation_id for s in await cp.list(CheckpointFilter(saved_after=2.5))] == ["a"]
    await cp.delete("a")
    assert await cp.load("a") is None


async def test_in_memory_round_trip() -> None:
    await _round_trip(InMemoryCheckpointer())


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_sqlite_round_trip(tmp_path: Path, encoding: Any) -> None:
    async with SQLiteCheckpointer(tmp_path / "c.db", encoding=encoding) as cp:
        await _round_trip(cp)
    mode = sqlite3.connect(tmp_path / "c.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_sqlite_corrupt_record_is_record_invalid(tmp_path: Path) -> None:
    async with SQLiteCheckpointer(tmp_path / "c.db") as cp:
        await cp.save("a", _record("a"))
    conn = sqlite3.connect(tmp_path / "c.db")
    conn.execute("UPDATE openarmature_checkpoints SET record = x'7b7b'")
    conn.commit()
    async with SQLiteCheckpointer(tmp_path / "c.db") as cp:
        with pytest.raises(CheckpointRecordInvalid, match="cannot be decoded"):
            await cp.load("a")


async def test_sqlite_batching_buffers_only_fan_out_internal_saves(tmp_path: Path) -> None:
    async with SQLiteCheckpointer(tmp_path / "c.db", fan_out_batch_every=3) as cp:
        await cp.save("a", _record("a", 1), fan_out_internal=True)
        await cp.save("a", _record("a", 2), fan_out_internal=True)
        assert await cp.load("a") is None  # buffered
        await cp.save("a", _record("a", 3), fan_out_internal=True)  # the 3rd flushes
        got = await cp.load("a")
        assert got is not None and len(got.completed_positions) == 3
        await cp.save("a", _record("a", 4), fan_out_internal=True)
        await cp.save("a", _record("a", 5))  # not internal: written at once
        got = await cp.load("a")
        assert got is not None and len(got.completed_positions) == 5


async def test_postgres_round_trip_and_schema_on_first_use(postgres_url: str) -> None:
    from openarmature_nodes.graph.checkpoint.postgres import PostgresCheckpointer

    for encoding in ("json", "msgpack"):
        cp = PostgresCheckpointer(postgres_url, table=f"t_{uuid.uuid4().hex[:10]}",
                                  encoding=encoding)  # type: ignore[arg-type]
        try:
            await _round_trip(cp)
            assert "postgresql://" not in repr(cp)
        finally:
            await cp.drop_table()
            await cp.aclose()


async def test_postgres_concurrent_writers(postgres_url: str) -> None:
    """Three stores (three pools, as three processes would have) write one table at once:
    40 invocations, each saved 5 times, 10 of them by two writers racing."""
    from openarmature_nodes.graph.checkpoint.postgres import PostgresCheckpointer

    table = f"t_{uuid.uuid4().hex[:10]}"
    stores = [PostgresCheckpointer(postgres_url, table=table, pool_size=3) for _ in range(3)]
    try:
        async with anyio.create_task_group() as tg:
            for k in range(40):
                for w in ([0, 1] if k < 10 else [k % 3]):

                    async def write(k: int = k, w: int = w) -> None:
                        for n in range(1, 6):
                            await stores[w].save(f"inv-{k}", _record(f"inv-{k}", n))

                    tg.start_soon(write)
        summaries = await stores[2].list()
        assert len(summaries) == 40
        for k in range(40):
            got = await stores[k % 3].load(f"inv-{k}")
            assert got is not None and len(got.completed_positions) == 5
            assert got.state["tags"] == ["a"] * 5  # never a torn or mixed record
    finally:
        await stores[0].drop_table()
        for s in stores:
            await s.aclose()


def test_one_sqlite_store_serves_asyncio_then_trio(tmp_path: Path) -> None:
    """Made outside any loop, used by two loops in turn: it holds no loop-bound primitive."""
    cp = SQLiteCheckpointer(tmp_path / "c.db")

    async def save_then_load(inv: str) -> int:
        await cp.save(inv, _record(inv, 2))
        got = await cp.load(inv)
        assert got is not None
        return len(got.completed_positions)

    assert anyio.run(save_then_load, "a", backend="asyncio") == 2
    assert anyio.run(save_then_load, "b", backend="trio") == 2
    anyio.run(cp.aclose, backend="trio")
