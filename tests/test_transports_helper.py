"""The test helper of ``tests/transports.py`` checks what it promises to check."""

from __future__ import annotations

import httpx
import pytest

from openarmature_nodes.llm import OpenAIProvider, ProviderUnavailable
from tests.transports import LoopbackFastTransport, loopback_transports

pytestmark = pytest.mark.anyio


async def test_the_handler_sees_the_original_url_over_real_sockets() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})

    async with loopback_transports("fast") as factory:
        transport = factory.transport(handler)
        assert isinstance(transport, LoopbackFastTransport)
        async with OpenAIProvider("https://gw.example:8443/api", "m", transport=transport) as p:
            await p.ready()
            await p.ready()
        assert transport.server.connections == 1  # kept alive and reused
    assert [str(r.url) for r in seen] == ["https://gw.example:8443/api/v1/models"] * 2
    assert seen[0].headers["host"] == "gw.example:8443"
    assert not any(name.startswith("x-loopback") for name in seen[0].headers)


async def test_an_unexpected_handler_exception_fails_the_test() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise ZeroDivisionError("handler bug")

    with pytest.raises(ZeroDivisionError, match="handler bug"):
        async with loopback_transports("fast") as factory:
            provider = OpenAIProvider("http://x.test", "m", transport=factory.transport(handler))
            async with provider:
                with pytest.raises(ProviderUnavailable):
                    await provider.ready()


async def test_a_connection_left_open_is_reported() -> None:
    with pytest.raises(AssertionError, match="still has open connections"):
        async with loopback_transports("fast") as factory:
            transport = factory.transport(lambda request: httpx.Response(200, content=b"x"))
            opened = transport.stream("GET", "http://x.test/", (), None)  # type: ignore[attr-defined]
            response = await opened.__aenter__()  # never left
            assert response.status == 200
