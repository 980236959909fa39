"""The sans-IO wire package imports alone, and what it took to keep it so.

``openarmature_nodes.llm.wire`` is the pure OpenAI mapping; importing it must
load no I/O library, so a caller (or a test) can drive every wire rule with
plain bytes. Each check runs in a fresh interpreter: this process has long
since imported httpx and anyio.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from openarmature_nodes.llm.wire.error_reply import http_date, parse_retry_after

IO_MODULES = {"httpx", "anyio", "socket", "ssl", "httptools"}


def _loaded_after(statement: str) -> set[str]:
    code = f"{statement}; import sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import openarmature_nodes.llm.wire",
        "import openarmature_nodes.llm",
        "from openarmature_nodes.llm import UserMessage, RuntimeConfig, HTTPErrorReply",
    ],
)
def test_importing_the_wire_layer_loads_no_io_library(statement: str) -> None:
    assert IO_MODULES & _loaded_after(statement) == set()


def test_the_provider_and_transports_still_import_from_the_package() -> None:
    loaded = _loaded_after("from openarmature_nodes.llm import OpenAIProvider, HttpxTransport")
    assert {"httpx", "anyio"} <= loaded


def test_the_lazy_names_are_the_real_objects() -> None:
    import openarmature_nodes.llm as llm
    from openarmature_nodes.llm.provider import OpenAIProvider
    from openarmature_nodes.llm.transport import HttpxTransport, Timeouts

    assert llm.OpenAIProvider is OpenAIProvider
    assert llm.HttpxTransport is HttpxTransport
    assert llm.Timeouts is Timeouts
    assert {"OpenAIProvider", "HttpxTransport"} <= set(dir(llm))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = llm.Nope  # type: ignore[attr-defined]


# --- HTTP-date (parsed here rather than by email.utils, which imports socket) ---

SUNDAY = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example


@pytest.mark.parametrize(
    "raw",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # obsolete asctime
        "Sun, 06 Nov 1994 08:49:37 +0000",
    ],
)
def test_http_date_forms(raw: str) -> None:
    assert http_date(raw) == SUNDAY


@pytest.mark.parametrize(
    "raw",
    ["", "yesterday", "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
     "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 +0200"],
)
def test_http_date_rejects(raw: str) -> None:
    assert http_date(raw) is None


def test_retry_after_date_round_trips_formatted_dates() -> None:
    from email.utils import formatdate

    now = float(int(time.time()))
    for offset in (0, 1, 59, 3600, 86400 * 400):
        raw = formatdate(now + offset, usegmt=True)
        assert parse_retry_after({"retry-after": raw}, now=now) == offset
