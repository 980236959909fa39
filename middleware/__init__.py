"""Middleware layers for openarmature-nodes.

Every layer has the one shape of :mod:`openarmature_nodes.onion`:
``async (value, next) -> result``. At node level ``value`` is the node's input
state and the result its partial update; at call level ``value`` is a
:class:`~openarmature_nodes.llm.request.CompletionRequest` and the result a
``Response``. Compose with :func:`compose` (first = outermost).

The LLM call onion, from the outside in::

    provider = OpenAIProvider(base_url, model)
    call = compose(
        [
            SpanMiddleware(provider),                     # one span per call
            RetryMiddleware(max_attempts=4, deadline=30), # transient failures, Retry-After
            CooldownMiddleware(Cooldown.for_endpoint(provider)),
            WarmupGate(provider),                         # one warm-up, then free
            StructuredOutputMiddleware(Person, reask=fix),
        ],
        provider.call,
    )
    response = await call(CompletionRequest(messages=[UserMessage("...")]))

:class:`CacheMiddleware` (off by default) serves repeated calls from a memory or
SQLite cache. Node-level layers: :class:`RetryMiddleware` (the same class),
:class:`TimingMiddleware` and :class:`FailureIsolationMiddleware` (put it *outside*
retry). The §6.4 cause-chain primitive is :func:`classify_causes`.
"""

from openarmature_nodes.onion import Middleware, compose
from openarmature_nodes.retrying import RetryConfig

from .cache import CacheBackend, CacheMiddleware, MemoryCache, SqliteCache
from .causes import CauseChain, CauseLink, classify_causes, derived_category
from .cooldown import Cooldown, CooldownMiddleware
from .degraded import DegradedResponseMiddleware
from .isolation import FailureIsolationEvent, FailureIsolationMiddleware, Lineage
from .retry import RetryMiddleware
from .spans import SpanMiddleware
from .structured import StructuredOutputMiddleware
from .timing import TimingMiddleware, TimingMiddlewareFactory, TimingRecord
from .warmup import WarmupGate

__all__ = [
    "CacheBackend",
    "CacheMiddleware",
    "MemoryCache",
    "SqliteCache",
    "CauseChain",
    "CauseLink",
    "Cooldown",
    "CooldownMiddleware",
    "DegradedResponseMiddleware",
    "FailureIsolationEvent",
    "FailureIsolationMiddleware",
    "Lineage",
    "Middleware",
    "RetryConfig",
    "RetryMiddleware",
    "SpanMiddleware",
    "StructuredOutputMiddleware",
    "TimingMiddleware",
    "TimingMiddlewareFactory",
    "TimingRecord",
    "WarmupGate",
    "classify_causes",
    "compose",
    "derived_category",
]
