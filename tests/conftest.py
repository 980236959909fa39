"""Shared test configuration: every async test runs on asyncio and on trio.

Mark async test modules with ``pytestmark = pytest.mark.anyio``; the
``anyio_backend`` fixture below parametrizes them over both backends.
"""

from __future__ import annotations

import pytest

# ``server`` (an in-process EmbeddedServer) and ``provider`` (an OpenAIProvider bound
# to it) for any test; a module that defines its own fixture of that name keeps it.
pytest_plugins = ["tests.embedded_fixtures"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def real_server_promised() -> None:
    """Fails a real-server test when ``$OPENARMATURE_REAL_LLM_URL`` promised a
    server that does not answer (see ``tests/real_server.py``)."""
    from tests.real_server import broken_promise

    problem = broken_promise()
    if problem is not None:
        pytest.fail(f"OPENARMATURE_REAL_LLM_URL is set but {problem}")


@pytest.fixture
def real_vllm_promised() -> None:
    """Fails a real-vLLM test when ``$OPENARMATURE_REAL_VLLM_URL`` (or the keyed
    instance's URL) promised a server that does not answer (``tests/real_vllm.py``)."""
    from tests.real_vllm import broken_promise

    problem = broken_promise()
    if problem is not None:
        pytest.fail(problem)
