"""What travels between the parent and a worker, as msgspec messages.

A chunk task carries instance *indices* and their projected input states (the
subgraph's state structs, msgpack-encoded), nothing else; the subgraph, its
providers and pools already live on the worker (:mod:`.runtime`). A reply carries
each instance's contribution (msgpack, decoded on the parent with the subgraph's
field types, so a struct comes back as that struct), each failure (category,
message and, where it pickles, the exception), and, for an observed run, each
instance's events (pickled: events hold states and exceptions).
"""

from __future__ import annotations

import pickle
from typing import Any

import msgspec

__all__ = ["ChunkReply", "ChunkTask", "Failure", "decode_reply", "decode_task", "encode"]


class ChunkTask(msgspec.Struct, frozen=True, kw_only=True):
    """One chunk of one fan-out run."""

    run_id: str
    chunk: int
    indices: list[int]
    states: msgspec.Raw  # msgpack list of the subgraph's state structs, one per index
    keys: list[str]  # contribution fields (collect_field first)
    fail_fast: bool
    observed: bool
    limit: int | None  # per-worker instance concurrency
    middleware_digest: str  # "" when the fan-out has no instance middleware
    state_class: str  # "module:qualname" of the parent's subgraph state class


class Failure(msgspec.Struct, frozen=True, array_like=True):
    index: int
    category: str
    type_name: str
    message: str
    pickled: bytes  # b"" when the exception does not pickle


class ChunkReply(msgspec.Struct, frozen=True, kw_only=True):
    """A finished chunk: per index, a contribution or a failure (or neither: an
    instance cancelled by a fail-fast sibling)."""

    run_id: str
    chunk: int
    worker: str
    ok: list[tuple[int, msgspec.Raw]]
    failed: list[Failure]
    events: list[tuple[int, bytes]]  # (index, pickled list of events), observed runs only
    elapsed_s: float  # wall time on the worker, for the dispatch-overhead figure


_encoder = msgspec.msgpack.Encoder()
_task_decoder = msgspec.msgpack.Decoder(ChunkTask)
_reply_decoder = msgspec.msgpack.Decoder(ChunkReply)


def encode(obj: Any) -> bytes:
    """msgpack-encode ``obj`` (a message, a state list, a contribution)."""
    return _encoder.encode(obj)


def decode_task(data: bytes) -> ChunkTask:
    return _task_decoder.decode(data)


def decode_reply(data: bytes) -> ChunkReply:
    return _reply_decoder.decode(data)


def failure(index: int, exc: BaseException) -> Failure:
    """An instance failure for the reply; the exception is pickled when it can be."""
    category = getattr(exc, "category", None)
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
    except Exception:
        blob = b""
    return Failure(
        index,
        category if isinstance(category, str) and category else "node_exception",
        type(exc).__name__,
        str(exc),
        blob,
    )


def failure_exception(f: Failure) -> Exception:
    """The parent-side exception of a worker failure."""
    if f.pickled:
        try:
            exc = pickle.loads(f.pickled)
        except Exception:
            exc = None
        if isinstance(exc, Exception):
            return exc
    from .errors import RemoteInstanceError

    return RemoteInstanceError(
        f"{f.type_name}: {f.message}", category=f.category, type_name=f.type_name
    )
