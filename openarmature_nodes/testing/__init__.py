"""A development and test aid: an OpenAI-compatible server that runs in your event loop.

:class:`EmbeddedServer` listens on a free loopback port (``127.0.0.1``), runs as
tasks of the caller's asyncio or trio loop, and answers ``GET /v1/models`` and
``POST /v1/chat/completions`` with deterministic replies: an echo of the last
user message, tool calls whose arguments satisfy the tool's JSON Schema, and
``response_format`` JSON that satisfies the requested schema. Its knobs reproduce
what real servers do to clients: latency, 429 with ``Retry-After`` (seconds,
HTTP-date or ``retry-after-ms``), 5xx, a model that is still loading, malformed
bodies, wrong API keys, closed keep-alive connections.

The examples use it when no base URL is given; the test suites use its knobs.
It is not meant to serve real traffic::

    from openarmature_nodes.testing import EmbeddedServer

    async with EmbeddedServer(model="embedded-model") as srv:
        print(srv.base_url)       # http://127.0.0.1:PORT (no /v1)
        ...                       # point a client at it
        print(srv.counts)         # requests per path
"""

from ._http import ReceivedRequest
from .faults import MalformedKind, RetryAfterForm
from .replies import ToolPolicy, completion_body
from .schema import example_from_schema
from .script import RawBytes, Reply, ScriptEntry, ScriptFunction
from .server import CHAT_PATH, MODELS_PATH, EmbeddedServer

__all__ = [
    "CHAT_PATH",
    "MODELS_PATH",
    "EmbeddedServer",
    "MalformedKind",
    "RawBytes",
    "ReceivedRequest",
    "Reply",
    "RetryAfterForm",
    "ScriptEntry",
    "ScriptFunction",
    "ToolPolicy",
    "completion_body",
    "example_from_schema",
]
