"""Shared pieces of the reliability tests (issue 12) and the fault suite.

Every test here runs a real :class:`~openarmature_nodes.testing.EmbeddedServer`
on loopback and a provider over each shipped transport (``"httpx"``:
:class:`HttpxTransport` on a real socket, ``"fast"``: :class:`FastTransport`),
on asyncio and trio (``anyio_backend``). :func:`leak_check` asserts what every
fault must leave behind: no connection checked out of the pool, and no task
left running beyond the server's own per-connection tasks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from openarmature_nodes.llm import OpenAIProvider
from openarmature_nodes.llm.transport import FastTransport, HttpxTransport, Timeouts
from openarmature_nodes.testing import EmbeddedServer

__all__ = [
    "KINDS",
    "MODEL",
    "Kind",
    "checked_out",
    "kind_fixture",
    "leak_check",
    "make_provider",
    "server_and_provider",
]

Kind = Literal["httpx", "fast"]
KINDS: tuple[Kind, ...] = ("httpx", "fast")
MODEL = "embedded-model"
TIMEOUTS = Timeouts(connect=5.0, read=30.0, write=5.0, pool=30.0)


@pytest.fixture(params=KINDS, name="kind")
def kind_fixture(request: pytest.FixtureRequest) -> Kind:
    """The transport a test runs over: every test runs once per kind."""
    value: Kind = request.param
    return value


def make_provider(kind: Kind, base_url: str, **options: Any) -> OpenAIProvider:
    """A provider for ``base_url`` over the ``kind`` transport (``options``:
    the provider's own keywords, plus ``max_response_bytes`` for the transport)."""
    size = options.pop("max_response_bytes", 64 * 1024 * 1024)
    transport: Any
    if kind == "fast":
        transport = FastTransport(timeouts=TIMEOUTS, max_response_bytes=size)
    else:
        transport = HttpxTransport(timeouts=TIMEOUTS, max_response_bytes=size)
    return OpenAIProvider(base_url, MODEL, transport=transport, **options)


def checked_out(provider: OpenAIProvider) -> int:
    """Connections (or requests) the provider's transport holds right now
    that are not idle: 0 when nothing is checked out."""
    transport = provider.transport
    if isinstance(transport, FastTransport):
        return transport.connection_count - transport.idle_count
    assert isinstance(transport, HttpxTransport)
    pool = transport.client._transport._pool  # type: ignore[attr-defined]
    busy = [c for c in pool.connections if not (c.is_idle() or c.is_closed())]
    return len(busy) + len(pool._requests)


def _running_tasks() -> int:
    return len(anyio.get_running_tasks())


@asynccontextmanager
async def leak_check(server: EmbeddedServer, provider: OpenAIProvider) -> AsyncIterator[None]:
    """Around a body that runs calls to completion (or failure): afterwards no
    connection is checked out and no task is left running, other than one
    server task per open connection (the server's own)."""
    await wait_all_tasks_blocked()
    before = _running_tasks() - server.open_connections
    yield
    # A server task ends together with its connection count (no await between),
    # so the difference only grows if a task of the client side is left over.
    await wait_all_tasks_blocked()
    assert checked_out(provider) == 0, "a connection is still checked out"
    assert _running_tasks() - server.open_connections <= before, "a task is still running"


@asynccontextmanager
async def server_and_provider(
    kind: Kind, **options: Any
) -> AsyncIterator[tuple[EmbeddedServer, OpenAIProvider]]:
    """An embedded server and a provider for it over ``kind``."""
    server_options = {k: options[k] for k in ("api_key",) if k in options}
    async with EmbeddedServer(model=MODEL, **server_options) as server:
        provider = make_provider(kind, server.base_url, **options)
        try:
            yield server, provider
        finally:
            with anyio.CancelScope(shield=True):
                await provider.aclose()

