"""Where the real LLM server is, and whether its tests run, skip or fail.

The integration tests (marker ``real_server``) talk to a real OpenAI-compatible
server: llama.cpp serving Gemma 3 270M, started by
``../shared/tools/real-llm-server.sh start 18188``.

- Nothing configured and nothing answering at the default address: the tests
  skip, with the reason and the command that starts the server.
- ``$OPENARMATURE_REAL_LLM_URL`` set (``.ci/run`` sets it only once the server
  has started): the server is *expected*, so a server that does not answer
  makes the tests fail instead of skip. A failure is never hidden as a skip.
"""

from __future__ import annotations

import os

import httpx
import pytest

__all__ = ["MODEL", "SCRIPT", "URL", "requires_real_server"]

_CONFIGURED = os.environ.get("OPENARMATURE_REAL_LLM_URL")
URL = (_CONFIGURED or "http://127.0.0.1:18188").rstrip("/")
MODEL = os.environ.get("OPENARMATURE_REAL_LLM_MODEL", "gemma-3-270m")
SCRIPT = "../shared/tools/real-llm-server.sh"


def _problem() -> str | None:
    # The server handles one request at a time: allow for one in progress.
    try:
        r = httpx.get(f"{URL}/v1/models", timeout=15.0)
    except httpx.HTTPError as exc:
        return f"no LLM server answers at {URL} ({type(exc).__name__})"
    return None if r.status_code == 200 else f"{URL}/v1/models answered HTTP {r.status_code}"


_PROBLEM = _problem()


def requires_real_server() -> list[pytest.MarkDecorator]:
    """The marks for a real-server test module: ``real_server``, plus a skip
    when no server is there and none was promised, or a failing fixture
    (``real_server_promised``, in ``tests/conftest.py``) when one was."""
    marks = [pytest.mark.real_server]
    if _PROBLEM is not None:
        if _CONFIGURED:
            marks.append(pytest.mark.usefixtures("real_server_promised"))
        else:
            reason = f"{_PROBLEM}; start one with {SCRIPT} start 18188"
            marks.append(pytest.mark.skip(reason=reason))
    return marks


def broken_promise() -> str | None:
    """Why a promised server is missing (``None`` when it answers)."""
    return _PROBLEM if _CONFIGURED else None
