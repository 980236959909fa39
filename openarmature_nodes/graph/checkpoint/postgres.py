"""``PostgresCheckpointer``: one checkpoint store shared by several processes or machines.

Needs the ``postgres`` extra (``pip install 'openarmature-nodes[postgres]'``:
psycopg 3 and psycopg-pool). Records go to one table (one row per invocation,
upserted on every save, created on first use if missing; the name is
configurable). Calls run the driver's synchronous API from a connection pool in
anyio worker threads, so the store works the same on asyncio and trio and
several saves proceed in parallel (one per pooled connection).

Durability: a ``save`` returns after its transaction commits, so it survives a
crash of the saving process (and, with the server's default ``fsync`` and
``synchronous_commit``, of the server). Concurrent writers are safe: each save
is one atomic upsert, the last commit for an invocation wins, and ``load``
never sees a half-written record.

Encoding: as :mod:`.codec` (``"json"`` by default, or ``"msgpack"``); both are
class-independent, so state migrations are supported. ``fan_out_batch_every``
buffers fan-out-internal saves (§10.11.4), as the SQLite backend does.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread

from ._common import SaveBuffer, decode_stored, summary_from_row
from .codec import Codec, Encoding
from .records import CheckpointFilter, CheckpointRecord, CheckpointSummary

try:
    import psycopg
    from psycopg import sql
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "PostgresCheckpointer needs the 'postgres' extra: "
        "pip install 'openarmature-nodes[postgres]'"
    ) from exc

__all__ = ["PostgresCheckpointer"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresCheckpointer:
    """Checkpoints in table ``table`` of the PostgreSQL database at ``url``.

    ``url`` is a libpq connection string (``postgresql://user@host:5432/db``);
    it is never echoed in errors or ``repr``. ``pool_size`` bounds the
    connections (and so the saves in flight); ``timeout`` bounds the wait for a
    connection and, as ``statement_timeout``, each statement. Use it as an
    async context manager or call :meth:`aclose`.
    """

    backend = "postgres"
    supports_migration = True

    def __init__(
        self,
        url: str,
        *,
        table: str = "openarmature_checkpoints",
        encoding: Encoding = "json",
        pool_size: int = 4,
        timeout: float = 30.0,
        fan_out_batch_every: int | None = None,
    ) -> None:
        if not _NAME.match(table):
            raise ValueError(f"table must be a plain SQL identifier, got {table!r}")
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        self._saves = SaveBuffer(fan_out_batch_every)
        self.table = table
        self._url = url
        self._codec = Codec(encoding)
        self._codecs = {encoding: self._codec}
        self._size = pool_size
        self._timeout = timeout
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self._ready = False
        t = sql.Identifier(table)
        self._sql_create = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " invocation_id text PRIMARY KEY, correlation_id text NOT NULL,"
            " status text NOT NULL, last_saved_at double precision NOT NULL,"
            " completed_node_count integer NOT NULL, schema_version text NOT NULL,"
            " encoding text NOT NULL, record bytea NOT NULL)"
        ).format(t)
        self._sql_upsert = sql.SQL(
            "INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (invocation_id) DO UPDATE SET correlation_id = EXCLUDED.correlation_id,"
            " status = EXCLUDED.status, last_saved_at = EXCLUDED.last_saved_at,"
            " completed_node_count = EXCLUDED.completed_node_count,"
            " schema_version = EXCLUDED.schema_version, encoding = EXCLUDED.encoding,"
            " record = EXCLUDED.record"
        ).format(t)
        self._sql_load = sql.SQL(
            "SELECT encoding, record FROM {} WHERE invocation_id = %s"
        ).format(t)
        self._sql_list = sql.SQL(
            "SELECT invocation_id, correlation_id, status, last_saved_at, completed_node_count,"
            " schema_version FROM {} WHERE (%s::text IS NULL OR correlation_id = %s)"
            " AND (%s::text IS NULL OR status = %s)"
            " AND (%s::float8 IS NULL OR last_saved_at >= %s)"
            " AND (%s::float8 IS NULL OR last_saved_at < %s) ORDER BY last_saved_at"
        ).format(t)
        self._sql_delete = sql.SQL("DELETE FROM {} WHERE invocation_id = %s").format(t)
        self._sql_drop = sql.SQL("DROP TABLE IF EXISTS {}").format(t)

    def __repr__(self) -> str:
        return f"PostgresCheckpointer(table={self.table!r}, encoding={self._codec.encoding!r})"

    # --- connection pool ------------------------------------------------------------------

    def _get_pool(self) -> ConnectionPool:
        pool = self._pool
        if pool is not None:
            return pool
        with self._pool_lock:  # worker threads race to open it on first use
            return self._open_pool()

    def _open_pool(self) -> ConnectionPool:
        pool = self._pool
        if pool is None:
            pool = ConnectionPool(
                self._url, min_size=1, max_size=self._size, timeout=self._timeout, open=False,
                kwargs={"autocommit": True,
                        "options": f"-c statement_timeout={int(self._timeout * 1000)}"},
            )
            try:
                pool.open(wait=True, timeout=self._timeout)
            except Exception as exc:
                pool.close()
                raise ConnectionError(
                    f"cannot connect to the PostgreSQL checkpoint store: {type(exc).__name__}"
                ) from None
            self._pool = pool
        return pool

    async def _call(self, fn: Any, *args: Any) -> Any:
        def work() -> Any:
            pool = self._get_pool()
            with pool.connection() as conn:
                if not self._ready:
                    with conn.transaction():
                        # Serialize concurrent first-use table creation across processes.
                        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
                        conn.execute(self._sql_create)
                    self._ready = True
                return fn(conn, *args)

        # anyio's default worker-thread limiter; the pool bounds the connections in use.
        return await anyio.to_thread.run_sync(work)

    async def aclose(self) -> None:
        """Write buffered saves and close the pool (it reopens on next use)."""
        if self._saves.pending:
            await self.flush()
        pool, self._pool = self._pool, None
        if pool is not None:
            await anyio.to_thread.run_sync(pool.close)

    async def __aenter__(self) -> PostgresCheckpointer:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def drop_table(self) -> None:
        """Drop the table (for tests and teardown)."""

        def drop(conn: psycopg.Connection[Any]) -> None:
            conn.execute(self._sql_drop)
            self._ready = False

        await self._call(drop)

    # --- protocol ---------------------------------------------------------------------------

    async def save(
        self, invocation_id: str, record: CheckpointRecord, *, fan_out_internal: bool = False
    ) -> None:
        """Upsert ``record``; returns once the transaction committed (or it is buffered)."""
        if self._saves.hold(invocation_id, record, fan_out_internal):
            return
        rows = self._saves.take_rows(self._codec, invocation_id, record)

        def write(conn: psycopg.Connection[Any]) -> None:
            if len(rows) == 1:
                conn.execute(self._sql_upsert, rows[0])
                return
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(self._sql_upsert, rows)

        await self._call(write)

    async def flush(self) -> None:
        """Write every buffered fan-out-internal save."""
        rows = self._saves.take_rows(self._codec)
        if not rows:
            return

        def write(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(self._sql_upsert, rows)

        await self._call(write)

    async def load(self, invocation_id: str) -> CheckpointRecord | None:
        """The latest committed record of ``invocation_id`` (states as builtins), or ``None``."""

        def read(conn: psycopg.Connection[Any]) -> tuple[str, bytes] | None:
            row: tuple[str, bytes] | None = conn.execute(
                self._sql_load, (invocation_id,)
            ).fetchone()
            return row

        row = await self._call(read)
        if row is None:
            return None
        encoding, data = row
        return decode_stored(self._codecs, encoding, data, invocation_id)

    async def list(self, filter: CheckpointFilter | None = None) -> Sequence[CheckpointSummary]:
        """Summaries passing ``filter``, oldest save first."""
        f = filter or CheckpointFilter()
        args = (f.correlation_id, f.correlation_id, f.status, f.status,
                f.saved_after, f.saved_after, f.saved_before, f.saved_before)

        def read(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(self._sql_list, args).fetchall()

        rows = await self._call(read)
        return [summary_from_row(r) for r in rows]

    async def delete(self, invocation_id: str) -> None:
        """Delete the row of ``invocation_id`` (nothing happens when there is none)."""
        self._saves.pending.pop(invocation_id, None)

        def delete(conn: psycopg.Connection[Any]) -> None:
            conn.execute(self._sql_delete, (invocation_id,))

        await self._call(delete)
