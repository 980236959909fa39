"""Shared fixtures of the durable-run tests: the PostgreSQL store.

``postgres_url`` skips (with the reason) when no server is promised
(``OPENARMATURE_POSTGRES_URL`` unset; ``.ci/run`` and ``.ci/postgres.sh start``
provide one) and fails when one is promised but does not answer.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("OPENARMATURE_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server promised: set OPENARMATURE_POSTGRES_URL "
                    "(e.g. .ci/postgres.sh start 55432 /tmp/pg)")
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(f"OPENARMATURE_POSTGRES_URL is set but the server does not answer: {exc}")
    return url
