"""An LLM-call cache: the same request twice, one round trip.

A call-level middleware. Off unless you add it: ``default_onion(provider,
cache=CacheMiddleware(provider, MemoryCache(), ttl=3600))`` puts it just
inside the span (so a hit is still one span, marked as a hit), outside retry
(so a hit skips the warm-up gate, the cooldown and every attempt)::

    cache = CacheMiddleware(provider, SqliteCache("llm-cache.sqlite3"), ttl=24 * 3600)
    node = LLMNode(provider, prompt, update, middleware=default_onion(provider, cache=cache))

The key is a SHA-256 over the encoded request: the provider's base URL and
model, the messages, tools, tool choice, sampling config (extras included) and
response schema. ``stream`` is not part of it: a streamed call and a plain one
get the same response. A hit returns the stored response whole, so a streamed
call served from the cache emits no token events.

What is never stored: a call that raised (any error category), and a reply
with ``finish_reason == "error"`` (a degraded reply, possibly partial).

Hits and misses are counted twice: on the current span (attribute
``openarmature.llm.cache.hit``, true or false, when a span is recording) and on
the OpenTelemetry counter ``openarmature.llm.cache.lookups`` (attribute
``openarmature.llm.cache.result`` = ``hit`` / ``miss``), through the OTel API
(a no-op until an SDK meter provider is installed). ``hits`` / ``misses`` on the
middleware count too, for tests and quick looks.

Backends: :class:`MemoryCache` (a bounded LRU dict, per process) and
:class:`SqliteCache` (a file shared across runs and processes; stdlib
:mod:`sqlite3`, each query in a worker thread so the event loop never blocks).
Anything with the two async methods of :class:`CacheBackend` works.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio.to_thread
import msgspec
from opentelemetry import metrics, trace

from openarmature_nodes.llm.request import CompletionRequest
from openarmature_nodes.llm.response import Response

__all__ = ["CacheBackend", "CacheMiddleware", "MemoryCache", "SqliteCache", "request_key"]

HIT_ATTRIBUTE = "openarmature.llm.cache.hit"
COUNTER_NAME = "openarmature.llm.cache.lookups"
RESULT_ATTRIBUTE = "openarmature.llm.cache.result"
_KEY_VERSION = b"openarmature-llm-cache-v1\0"


class CacheBackend(Protocol):
    """Where entries live: opaque string keys to bytes, with an expiry time."""

    async def get(self, key: str, now: float) -> bytes | None:
        """The stored value, or ``None`` when absent or expired at ``now``."""
        ...

    async def set(self, key: str, value: bytes, expires_at: float | None, now: float) -> None:
        """Store ``value`` until ``expires_at`` (``None``: no expiry); ``now`` is the
        middleware clock's time (for purging expired entries)."""
        ...


class MemoryCache:
    """A per-process LRU cache of at most ``max_entries`` entries."""

    def __init__(self, *, max_entries: int = 1024) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str, now: float) -> bytes | None:
        """See :class:`CacheBackend`."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and now >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, expires_at: float | None, now: float) -> None:
        """See :class:`CacheBackend`; evicts the least recently used entry when full."""
        self._entries[key] = (value, expires_at)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class SqliteCache:
    """Entries in an SQLite file (``":memory:"`` for a private in-memory one).

    One connection, serialized by a lock, used from worker threads
    (:func:`anyio.to_thread.run_sync`). Expired rows are skipped on read and
    purged on write. Call :meth:`close` when done (or use ``with``).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS llm_cache "
                "(key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL)"
            )

    def __enter__(self) -> SqliteCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def _get(self, key: str, now: float) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM llm_cache WHERE key = ? AND (expires_at IS NULL OR "
                "expires_at > ?)",
                (key, now),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def _set(self, key: str, value: bytes, expires_at: float | None, now: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO llm_cache (key, value, expires_at) VALUES (?, ?, ?)",
                (key, value, expires_at),
            )
            self._db.execute(
                "DELETE FROM llm_cache WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (now,),
            )

    async def get(self, key: str, now: float) -> bytes | None:
        """See :class:`CacheBackend`."""
        return await anyio.to_thread.run_sync(self._get, key, now)

    async def set(self, key: str, value: bytes, expires_at: float | None, now: float) -> None:
        """See :class:`CacheBackend`."""
        await anyio.to_thread.run_sync(self._set, key, value, expires_at, now)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, type) and issubclass(obj, msgspec.Struct):
        return msgspec.json.schema(obj)  # a Struct response schema, by its JSON Schema
    return repr(obj)  # anything else by value where its repr shows it; at worst a miss


_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook, order="deterministic")


def request_key(request: CompletionRequest, *, model: str, endpoint: str = "") -> str:
    """The cache key of ``request`` sent to ``model`` at ``endpoint`` (hex SHA-256)."""
    body = (
        endpoint,
        model,
        request.messages,
        request.tools,
        request.tool_choice,
        request.config,
        request.response_schema,
    )
    return hashlib.sha256(_KEY_VERSION + _ENCODER.encode(body)).hexdigest()


Next = Callable[[CompletionRequest], Awaitable[Response]]


class CacheMiddleware:
    """Serve repeated requests from ``backend``; see the module docstring.

    ``provider``: supplies ``model`` and ``base_url`` for the key (or pass
    ``model=`` / ``endpoint=`` directly). ``ttl``: seconds an entry lives
    (``None``: until evicted). ``clock``: wall-clock seconds (tests pass a
    fake one).
    """

    def __init__(
        self,
        provider: Any = None,
        backend: CacheBackend | None = None,
        *,
        ttl: float | None = None,
        model: str | None = None,
        endpoint: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.model = model if model is not None else str(getattr(provider, "model", ""))
        self.endpoint = (
            endpoint if endpoint is not None else str(getattr(provider, "base_url", ""))
        )
        if not self.model:
            raise TypeError("CacheMiddleware needs the model: pass provider= or model=")
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        self.backend: CacheBackend = backend if backend is not None else MemoryCache()
        self.ttl = ttl
        self.clock = clock
        self.hits = 0
        self.misses = 0
        self._counter = metrics.get_meter("openarmature_nodes").create_counter(
            COUNTER_NAME, unit="{lookup}", description="LLM-call cache lookups, by result"
        )

    def __repr__(self) -> str:
        return (
            f"CacheMiddleware(model={self.model!r}, backend={type(self.backend).__name__}, "
            f"ttl={self.ttl!r})"
        )

    async def __call__(self, request: CompletionRequest, nxt: Next) -> Response:
        key = request_key(request, model=self.model, endpoint=self.endpoint)
        now = self.clock()
        stored = await self.backend.get(key, now)
        if stored is not None:
            response = self._decode(stored, request)
            if response is not None:
                self._count(hit=True)
                return response
        self._count(hit=False)
        response = await nxt(request)  # an error propagates: nothing is stored
        if response.finish_reason != "error":
            expires_at = None if self.ttl is None else now + self.ttl
            await self.backend.set(key, msgspec.json.encode(response), expires_at, now)
        return response

    def _decode(self, data: bytes, request: CompletionRequest) -> Response | None:
        try:
            response = msgspec.json.decode(data, type=Response)
            schema = request.response_schema
            if response.parsed is not None and isinstance(schema, type):
                parsed: Any = msgspec.convert(response.parsed, schema)
                response = msgspec.structs.replace(response, parsed=parsed)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None  # an entry from an incompatible version: a miss
        return response

    def _count(self, *, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(HIT_ATTRIBUTE, hit)
        self._counter.add(1, {RESULT_ATTRIBUTE: "hit" if hit else "miss"})
