"""Shared test configuration: every async test runs on asyncio and on trio.

Mark async test modules with ``pytestmark = pytest.mark.anyio``; the
``anyio_backend`` fixture below parametrizes them over both backends.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# The fuzzers (tests/test_fuzz.py) run 2,000 examples each by default, in CI
# too; HYPOTHESIS_PROFILE=dev runs 200 for a quick local pass.
settings.register_profile(
    "ci",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)
settings.register_profile("dev", parent=settings.get_profile("ci"), max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suite's summary line (faults x layers x loops x transports,
    failures), printed at the end of the run when the suite ran."""
    from tests.fault_results import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.write_sep("=", "fault suite")
        for line in lines:
            terminalreporter.write_line(line)
