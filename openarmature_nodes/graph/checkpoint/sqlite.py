"""``SQLiteCheckpointer``: the embedded default. One file, WAL mode, durable across crashes.

Records go to one table (one row per invocation, upserted on every save)
through the standard library's :mod:`sqlite3`, called in an anyio worker
thread so the event loop never blocks; it therefore works the same on
asyncio and trio. Calls are serialized on one connection (SQLite allows one
writer at a time anyway); several processes may share the file (WAL lets
readers run beside the writer; a writer waits up to ``busy_timeout``).

Durability: ``synchronous="NORMAL"`` (the default) in WAL mode survives a
process crash (SIGKILL included): a ``save`` that returned is on disk for the
next process. It can lose the last commits on an OS crash or power loss;
pass ``synchronous="FULL"`` to survive those too, at a fsync per save.

Encoding: ``encoding="json"`` (default; portable, any JSON-native state) or
``"msgpack"`` (faster, smaller): see :mod:`.codec`. Both are
class-independent, so state migrations (§10.12) are supported.

``fan_out_batch_every=N`` buffers fan-out-internal saves and writes every N-th
(§10.11.4); a crash loses up to N-1 buffered instance completions, which then
re-run on resume. Default: no batching.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.to_thread

from ._common import SaveBuffer, decode_stored, summary_from_row
from .codec import Codec, Encoding
from .records import CheckpointFilter, CheckpointRecord, CheckpointSummary

__all__ = ["SQLiteCheckpointer"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS openarmature_checkpoints (
    invocation_id TEXT PRIMARY KEY,
    correlation_id TEXT NOT NULL,
    status TEXT NOT NULL,
    last_saved_at REAL NOT NULL,
    completed_node_count INTEGER NOT NULL,
    schema_version TEXT NOT NULL,
    encoding TEXT NOT NULL,
    record BLOB NOT NULL
)
"""
_UPSERT = """
INSERT INTO openarmature_checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(invocation_id) DO UPDATE SET
    correlation_id = excluded.correlation_id, status = excluded.status,
    last_saved_at = excluded.last_saved_at,
    completed_node_count = excluded.completed_node_count,
    schema_version = excluded.schema_version, encoding = excluded.encoding,
    record = excluded.record
"""


class SQLiteCheckpointer:
    """Checkpoints in the SQLite file ``path`` (see the module documentation).

    Use it as an async context manager, or call :meth:`aclose` when done; the
    connection opens on first use.
    """

    backend = "sqlite"
    supports_migration = True

    def __init__(
        self,
        path: str | Path,
        *,
        encoding: Encoding = "json",
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 30.0,
        fan_out_batch_every: int | None = None,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        self._saves = SaveBuffer(fan_out_batch_every)
        self.path = str(path)
        self._codec = Codec(encoding)
        self._codecs = {encoding: self._codec}
        self._sync = synchronous
        self._busy_ms = int(busy_timeout * 1000)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteCheckpointer({self.path!r}, encoding={self._codec.encoding!r})"

    # --- connection --------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_ms / 1000, check_same_thread=False,
                isolation_level=None,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._sync}")
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            conn.execute(_SCHEMA)
            self._conn = conn
        return conn

    async def _call(self, fn: Any, *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                return fn(self._connect(), *args)

        # anyio's default worker-thread limiter: the store may serve several event loops
        # (one after another, asyncio or trio), so it holds no loop-bound primitive.
        return await anyio.to_thread.run_sync(locked)

    async def aclose(self) -> None:
        """Write buffered saves and close the connection (it reopens on next use)."""
        if self._saves.pending:
            await self.flush()

        def close(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = None

        if self._conn is not None:
            await self._call(close)

    async def __aenter__(self) -> SQLiteCheckpointer:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- protocol ------------------------------------------------------------------------

    async def save(
        self, invocation_id: str, record: CheckpointRecord, *, fan_out_internal: bool = False
    ) -> None:
        """Upsert ``record``; returns once it is committed (or buffered: see batching)."""
        if self._saves.hold(invocation_id, record, fan_out_internal):
            return
        rows = self._saves.take_rows(self._codec, invocation_id, record)
        await self._call(_write, rows)

    async def flush(self) -> None:
        """Write every buffered fan-out-internal save."""
        rows = self._saves.take_rows(self._codec)
        if rows:
            await self._call(_write, rows)

    async def load(self, invocation_id: str) -> CheckpointRecord | None:
        """The latest committed record of ``invocation_id`` (states as builtins), or ``None``."""
        row = await self._call(_read, invocation_id)
        if row is None:
            return None
        encoding, data = row
        return decode_stored(self._codecs, encoding, data, invocation_id)

    async def list(self, filter: CheckpointFilter | None = None) -> Sequence[CheckpointSummary]:
        """Summaries passing ``filter``, oldest save first (read from the index columns)."""
        rows = await self._call(_summaries, filter or CheckpointFilter())
        return [summary_from_row(r) for r in rows]

    async def delete(self, invocation_id: str) -> None:
        """Delete the row of ``invocation_id`` (nothing happens when there is none)."""
        self._saves.pending.pop(invocation_id, None)
        await self._call(_delete, invocation_id)


def _write(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    if len(rows) == 1:
        conn.execute(_UPSERT, rows[0])
        return
    with conn:
        conn.execute("BEGIN")
        conn.executemany(_UPSERT, rows)


def _read(conn: sqlite3.Connection, invocation_id: str) -> tuple[str, bytes] | None:
    cur = conn.execute(
        "SELECT encoding, record FROM openarmature_checkpoints WHERE invocation_id = ?",
        (invocation_id,),
    )
    row: tuple[str, bytes] | None = cur.fetchone()
    return row


def _summaries(conn: sqlite3.Connection, f: CheckpointFilter) -> list[tuple[Any, ...]]:
    where: list[str] = ["1=1"]
    args: list[Any] = []
    if f.correlation_id is not None:
        where.append("correlation_id = ?")
        args.append(f.correlation_id)
    if f.status is not None:
        where.append("status = ?")
        args.append(f.status)
    if f.saved_after is not None:
        where.append("last_saved_at >= ?")
        args.append(f.saved_after)
    if f.saved_before is not None:
        where.append("last_saved_at < ?")
        args.append(f.saved_before)
    sql = (
        "SELECT invocation_id, correlation_id, status, last_saved_at, completed_node_count, "
        f"schema_version FROM openarmature_checkpoints WHERE {' AND '.join(where)} "
        "ORDER BY last_saved_at"
    )
    return conn.execute(sql, args).fetchall()


def _delete(conn: sqlite3.Connection, invocation_id: str) -> None:
    conn.execute("DELETE FROM openarmature_checkpoints WHERE invocation_id = ?", (invocation_id,))
