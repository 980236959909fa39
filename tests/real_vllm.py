"""Where the real vLLM servers are, and whether their tests run, skip or fail.

The integration tests marked ``real_vllm`` talk to vLLM's own OpenAI-compatible
API server: vLLM 0.32 on the CPU serving Gemma 3 270M, started by
``../shared/tools/real-vllm-server.sh start 18400`` (see
``shared/tools/real-vllm-server.md``). The 401 tests need an instance started
with ``--api-key`` (``VLLM_SRV_API_KEY=... real-vllm-server.sh start 18401``).
One keyed instance can play both parts: when ``$OPENARMATURE_REAL_VLLM_URL``
and ``$OPENARMATURE_REAL_VLLM_KEYED_URL`` name the same server, every test
sends the key (:data:`MAIN_KEY`) and the 401 tests leave it out. ``.ci/run``
does that, to start one vLLM instead of two (each costs minutes and ~5 GB).

- Nothing configured and nothing answering at the default address: the tests
  skip, with the reason and the command that starts the server.
- ``$OPENARMATURE_REAL_VLLM_URL`` (``$OPENARMATURE_REAL_VLLM_KEYED_URL`` for the
  keyed one) set, as ``.ci/run`` does once the server has started: the server
  is *expected*, so one that does not answer makes the tests fail instead of
  skip. A failure is never hidden as a skip.
"""

from __future__ import annotations

import os

import httpx
import pytest

__all__ = [
    "API_KEY",
    "KEYED_URL",
    "MAIN_KEY",
    "MODEL",
    "URL",
    "broken_promise",
    "requires_keyed_vllm",
    "requires_vllm",
]

SCRIPT = "../shared/tools/real-vllm-server.sh"
MODEL = os.environ.get("OPENARMATURE_REAL_VLLM_MODEL", "gemma-3-270m")
API_KEY = os.environ.get("OPENARMATURE_REAL_VLLM_API_KEY", "sk-openarmature-vllm-test")


class _Server:
    """One expected server: its URL, whether it was promised, and what is wrong."""

    def __init__(self, env: str, default: str, start: str, headers: dict[str, str]) -> None:
        self.env = env
        self.promised = bool(os.environ.get(env))
        self.url = (os.environ.get(env) or default).rstrip("/")
        self.start = start
        self.problem = self._check(headers)

    def _check(self, headers: dict[str, str]) -> str | None:
        try:  # /v1/models answers at once on vLLM (requests are batched, never queued behind it)
            r = httpx.get(f"{self.url}/v1/models", headers=headers, timeout=15.0)
        except httpx.HTTPError as exc:
            return f"no vLLM server answers at {self.url} ({type(exc).__name__})"
        if r.status_code != 200:
            return f"{self.url}/v1/models answered HTTP {r.status_code}"
        if '"owned_by":"vllm"' not in r.text.replace(" ", ""):
            return f"the server at {self.url} is not vLLM (its /v1/models says {r.text[:120]!r})"
        return None

    def marks(self, fixture: str) -> list[pytest.MarkDecorator]:
        marks = [pytest.mark.real_vllm]
        if self.problem is not None:
            if self.promised:
                marks.append(pytest.mark.usefixtures(fixture))
            else:
                reason = f"{self.problem}; start one with {self.start}"
                marks.append(pytest.mark.skip(reason=reason))
        return marks


def _url(env: str, default: str) -> str:
    return (os.environ.get(env) or default).rstrip("/")


URL = _url("OPENARMATURE_REAL_VLLM_URL", "http://127.0.0.1:18400")
KEYED_URL = _url("OPENARMATURE_REAL_VLLM_KEYED_URL", "http://127.0.0.1:18401")
MAIN_KEY = API_KEY if URL == KEYED_URL else None
"""The key every test sends to the main server: set only when it is the keyed one."""

_AUTH = {"authorization": f"Bearer {API_KEY}"}
_MAIN = _Server(
    "OPENARMATURE_REAL_VLLM_URL", URL, f"{SCRIPT} start 18400", _AUTH if MAIN_KEY else {}
)
_KEYED = _Server(
    "OPENARMATURE_REAL_VLLM_KEYED_URL",
    KEYED_URL,
    f"VLLM_SRV_API_KEY={API_KEY} {SCRIPT} start 18401",
    _AUTH,
)


def requires_vllm() -> list[pytest.MarkDecorator]:
    """Marks for a test module that needs the vLLM server: ``real_vllm``, plus a
    skip when none answers and none was promised, or the failing fixture
    ``real_vllm_promised`` (``tests/conftest.py``) when one was."""
    return _MAIN.marks("real_vllm_promised")


def requires_keyed_vllm() -> list[pytest.MarkDecorator]:
    """The same for a test that needs the ``--api-key`` instance."""
    return _KEYED.marks("real_vllm_promised")


def broken_promise() -> str | None:
    """Why a promised vLLM server is missing (``None`` when every promised one answers)."""
    for server in (_MAIN, _KEYED):
        if server.promised and server.problem is not None:
            return f"{server.env} is set but {server.problem}"
    return None
