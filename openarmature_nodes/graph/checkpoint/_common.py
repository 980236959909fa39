"""Logic the three checkpointer backends share (in-memory, SQLite, Postgres).

Pure bookkeeping with no I/O: the ``fan_out_batch_every`` save buffer
(pipeline-utilities §10.11.4), the index row a durable backend stores per
invocation, the summary read back from it, and the decode of a stored record
by its encoding. One source of truth for each, so the backends cannot drift.
"""

from __future__ import annotations

from typing import Any

from .codec import Codec, Encoding
from .records import CheckpointRecord, CheckpointSummary

__all__ = ["SaveBuffer", "decode_stored", "index_row", "summary_from_row"]


class SaveBuffer:
    """Buffered fan-out-internal saves: every ``every``-th is written (``None``: all).

    A crash loses at most ``every - 1`` buffered instance completions, which
    re-run on resume. ``pending`` holds the latest buffered record per
    invocation id; the backend writes it out with the next written save.
    """

    __slots__ = ("_count", "_every", "pending")

    def __init__(self, every: int | None) -> None:
        if every is not None and every < 1:
            raise ValueError("fan_out_batch_every must be >= 1 or None")
        self._every = every
        self._count = 0
        self.pending: dict[str, CheckpointRecord] = {}

    def hold(self, invocation_id: str, record: CheckpointRecord, fan_out_internal: bool) -> bool:
        """``True`` when this save stays buffered; ``False`` when the caller writes it
        now (together with the rest of ``pending``), its own buffered copy dropped."""
        if fan_out_internal and self._every is not None:
            self.pending[invocation_id] = record
            self._count += 1
            if self._count % self._every:
                return True
        self.pending.pop(invocation_id, None)
        return False

    def take_rows(
        self, codec: Codec, invocation_id: str | None = None, record: CheckpointRecord | None = None
    ) -> list[tuple[Any, ...]]:
        """The :func:`index_row` rows of every buffered save, then of ``record``
        (when given), emptying the buffer: what a durable backend writes next."""
        rows = [index_row(i, r, codec) for i, r in self.pending.items()]
        if invocation_id is not None and record is not None:
            rows.append(index_row(invocation_id, record, codec))
        self.pending.clear()
        return rows


def index_row(invocation_id: str, record: CheckpointRecord, codec: Codec) -> tuple[Any, ...]:
    """The row a durable backend upserts: the summary index columns, then the
    encoding and the encoded record."""
    return (
        invocation_id, record.correlation_id, record.status, record.last_saved_at,
        len(record.completed_positions), record.schema_version, codec.encoding,
        codec.encode(record),
    )


def summary_from_row(r: tuple[Any, ...]) -> CheckpointSummary:
    """The summary from the first six index columns of :func:`index_row`'s row."""
    return CheckpointSummary(
        invocation_id=r[0], correlation_id=r[1], status=r[2], last_saved_at=r[3],
        completed_node_count=r[4], schema_version=r[5],
    )


def decode_stored(
    codecs: dict[Encoding, Codec], encoding: Encoding, data: bytes, invocation_id: str
) -> CheckpointRecord:
    """Decode a stored record with the codec of the encoding it was written in
    (made once per encoding and kept in ``codecs``)."""
    codec = codecs.get(encoding)
    if codec is None:
        codec = codecs[encoding] = Codec(encoding)
    return codec.decode(bytes(data), invocation_id)
