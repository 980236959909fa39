"""Shared fixtures: an in-process ``EmbeddedServer`` and a provider bound to it.

``tests/conftest.py`` loads this module as a plugin, so every test can ask
for ``server`` and ``provider``; a module that defines its own fixture of the
same name keeps its own. Both run on asyncio and trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openarmature_nodes.llm import OpenAIProvider
from openarmature_nodes.testing import EmbeddedServer

__all__ = ["MODEL", "provider", "server"]

MODEL = "embedded-model"


@pytest.fixture
async def server() -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer(model=MODEL) as srv:
        yield srv


@pytest.fixture
async def provider(server: EmbeddedServer) -> AsyncIterator[OpenAIProvider]:
    async with OpenAIProvider(server.base_url, MODEL) as p:
        yield p
