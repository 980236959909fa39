"""``EmbeddedServer``: an OpenAI-compatible HTTP server inside your event loop.

A development and test aid, not a production server. It listens on a free
loopback port, runs as tasks of the caller's event loop (asyncio or trio, through
anyio), answers ``/v1/models`` and ``/v1/chat/completions`` deterministically, and
lets a test inject the failures real servers produce::

    async with EmbeddedServer(model="embedded-model") as srv:
        provider = OpenAIProvider(srv.base_url, "embedded-model")
        srv.rate_limit(1, retry_after=1)        # next chat request: 429 + Retry-After: 1
        srv.fail_5xx(2, status=503)             # then two 503s
        ...
        assert srv.counts["/v1/chat/completions"] == 4

Every request is answered in this order: record it (``requests``, ``counts``,
in-flight counters); sleep ``latency`` seconds; wait while :meth:`hold` is on;
check the bearer token when ``api_key`` is set (401); fire the first matching
injected fault (:meth:`rate_limit`, :meth:`fail_5xx`, :meth:`drop`; :meth:`malformed`
spoils the answer computed below); answer "loading" during :meth:`slow_load`; take
the next scripted reply (``script`` / :meth:`enqueue`, chat path only); else the
default answer (see :mod:`openarmature_nodes.testing.replies`).

Knobs that are plain attributes (``latency``, ``tool_policy``, ``model_status``,
``api_key``, ``close_after``...) may be changed at any time, from any task or
thread. Fault methods are thread-safe too. :meth:`hold`, :meth:`release`, the
``wait_*`` methods and :meth:`finish_loading` belong to the server's event loop.
"""

from __future__ import annotations

import collections
import email.utils
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import httptools

from . import _app
from ._http import BodyTooLarge, ReceivedRequest, RequestParser, render_response
from .faults import malform
from .script import Reply
from .state import CHAT_PATH, MODELS_PATH, ServerState

__all__ = ["CHAT_PATH", "MODELS_PATH", "EmbeddedServer"]


class EmbeddedServer(ServerState):
    """An in-process OpenAI-compatible server on ``127.0.0.1`` and a free port.

    Use it as ``async with EmbeddedServer(...) as srv``; ``srv.base_url`` is the
    host root (``http://127.0.0.1:PORT``, no ``/v1``). Leaving the block cancels
    every server task and closes the listener and all connections.

    Constructor knobs (all but ``model`` also settable later as attributes):

    * ``model``: the served model id; ``extra_models`` lists more ids.
    * ``api_key``: when set, requests need ``Authorization: Bearer <key>``, else
      401 in ``auth_style`` (``"openai"`` error body, or llama-cpp-python's
      ``"fastapi"`` ``{"detail": ...}``).
    * ``latency``: seconds slept server-side before each answer.
    * ``script``: canned replies (see :mod:`.script`) for the chat endpoint.
    * ``tool_policy``: ``"auto"`` / ``"always"`` / ``"never"`` (see :mod:`.replies`).
    * ``model_status``: a ``status`` value for the model entry (``"loaded"``,
      ``"not_loaded"``...); ``None`` omits the field, like llama.cpp and vLLM.
    * ``slow_load``: start loading: ``True`` until :meth:`finish_loading`, or an
      int ``N`` so that the first ``N`` ``/v1/models`` probes report loading.
    * ``strict_model``: answer 404 ``model_not_found`` for an unknown ``model``
      (OpenAI and vLLM do; llama.cpp answers anyway: set ``False``).
    * ``json_schema_support``: ``"native"``, or act like a server without it:
      ``"error_400"``, ``"error_500"`` (llama-cpp-python) or ``"ignore"``.
    * ``detect_prompt_schema``: answer a JSON Schema found in a system message
      with matching JSON (the prompt-augmentation fallback).
    * ``close_after``: close each connection after that many responses, with
      ``Connection: close`` (``close_style="announce"``) or without warning
      (``"silent"``, the stale keep-alive case); ``idle_timeout`` closes idle
      keep-alive connections.
    """

    # Set while running; class-level defaults keep the constructor in ServerState.
    _port: int | None = None
    _tg: anyio.abc.TaskGroup | None = None
    _listener: anyio.abc.Listener[Any] | None = None
    _changed: anyio.Event | None = None
    _held: anyio.Event | None = None

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "not started"
        return f"EmbeddedServer(model={self.model!r}, {where})"

    # -- lifecycle -------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not running (use `async with`)")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: the host root, without ``/v1``."""
        return f"http://{self._host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._tg is not None

    async def __aenter__(self) -> EmbeddedServer:
        if self._tg is not None:
            raise RuntimeError("this EmbeddedServer is already running")
        self._changed = anyio.Event()
        listener = await anyio.create_tcp_listener(
            local_host=self._host, local_port=self._want_port
        )
        self._port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        tg.start_soon(listener.serve, self._on_connection, tg)
        self._listener, self._tg = listener, tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, listener = self._tg, self._listener
        self._tg = None
        if tg is None or listener is None:
            return
        tg.cancel_scope.cancel()
        try:
            await tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await listener.aclose()
            self._port = None
            self._notify()  # wake wait_for() callers: they now raise RuntimeError
            self._changed = None

    # -- waiting (for tests; never a sleep) ------------------------------------

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; re-checked whenever a request
        starts or ends or a connection opens or closes. Wrap in
        ``anyio.fail_after`` to bound it."""
        while not predicate():
            if self._changed is None:
                raise RuntimeError("the server is not running")
            await self._changed.wait()

    async def wait_in_flight(self, count: int) -> None:
        """Return once ``count`` requests are being answered at the same time."""
        await self.wait_for(lambda: self.in_flight >= count)

    def hold(self) -> None:
        """Make every request wait (after ``latency``) until :meth:`release`."""
        if self._held is None:
            self._held = anyio.Event()

    def release(self) -> None:
        """Let held requests go on."""
        held, self._held = self._held, None
        if held is not None:
            held.set()

    def reset_counters(self) -> None:
        """Forget recorded requests and counts and restart ``max_in_flight`` from
        the current ``in_flight`` (after a test's setup, before what it measures)."""
        with self._lock:
            self.requests.clear()
            self.counts.clear()
            self.max_in_flight = self.in_flight

    # -- serving ---------------------------------------------------------------

    async def _on_connection(self, stream: anyio.abc.SocketStream) -> None:
        self.connections_opened += 1
        self.open_connections += 1
        conn_id = self.connections_opened
        self._notify()
        try:
            async with stream:
                await self._serve(stream, conn_id)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        except Exception as exc:  # a bug in this module: keep it for the test to see
            self.errors.append(exc)
        finally:
            self.open_connections -= 1
            self._notify()

    async def _receive(self, stream: anyio.abc.SocketStream, idle: bool) -> bytes:
        timeout = self.idle_timeout if idle else None
        with anyio.move_on_after(timeout):
            try:
                return await stream.receive(65536)
            except anyio.EndOfStream:
                return b""
        return b""

    async def _serve(self, stream: anyio.abc.SocketStream, conn_id: int) -> None:
        parser = RequestParser(conn_id)
        pending: collections.deque[ReceivedRequest] = collections.deque()
        served = 0
        while True:
            if not pending:
                data = await self._receive(stream, idle=not parser.busy)
                if not data:
                    return
                try:
                    pending.extend(parser.feed(data))
                    if parser.take_expect_continue():
                        await stream.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                except BodyTooLarge:
                    await self._send_error(stream, 413, "Request body too large")
                    return
                except httptools.HttpParserError:
                    await self._send_error(stream, 400, "Malformed HTTP request")
                    return
                continue
            request = pending.popleft()
            seq = self._begin(request)
            try:
                started = time.monotonic()
                try:
                    reply = await self._respond(request, seq)
                except Exception as exc:  # a failing script, or a bug here
                    self.errors.append(exc)
                    reply = Reply(500, f"embedded server error: {exc!r}")
                if reply.delay:
                    await anyio.sleep(reply.delay)
                if reply.connection == "drop":
                    return
                served += 1
                close = reply.connection == "close" or not request.keep_alive
                limit = self.close_after
                silent = limit is not None and served >= limit and self.close_style == "silent"
                close = close or (limit is not None and served >= limit and not silent)
                status, headers, body = reply.render()
                headers.extend(self._extra_headers(started, seq))
                await stream.send(render_response(status, headers, body, close=close))
            finally:
                self.in_flight -= 1
                self._notify()
            if close or silent:
                return

    async def _send_error(self, stream: anyio.abc.SocketStream, status: int, text: str) -> None:
        reply = _app.error_reply(status, text, "invalid_request_error")
        status, headers, body = reply.render()
        await stream.send(render_response(status, headers, body, close=True))

    def _begin(self, request: ReceivedRequest) -> int:
        with self._lock:
            self._seq += 1
            seq = self._seq
            self.requests.append(request)
            self.counts[request.path] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._notify()
        return seq

    def _extra_headers(self, started: float, seq: int) -> list[tuple[str, str]]:
        elapsed = round((time.monotonic() - started) * 1000)
        return [
            ("date", email.utils.formatdate(usegmt=True)),
            ("server", "openarmature-embedded"),
            ("x-request-id", f"req-{seq}"),
            ("openai-processing-ms", str(elapsed)),
        ]

    async def _respond(self, request: ReceivedRequest, seq: int) -> Reply:
        if self.latency > 0:
            await anyio.sleep(self.latency)
        while self._held is not None:
            await self._held.wait()
        if self.api_key is not None and request.bearer_token() != self.api_key:
            return _app.auth_reply(self.auth_style)
        route = self._route(request)
        if isinstance(route, Reply):
            return route
        fault = self._fire_fault(request.path)
        if isinstance(fault, Reply):
            return fault
        reply = await self._answer(request, route, seq)
        return malform(reply, fault) if fault is not None and reply.status < 400 else reply

    def _route(self, request: ReceivedRequest) -> str | Reply:
        """The endpoint name for a request, or a 404/405 reply."""
        path, method = request.path.rstrip("/") or "/", request.method
        if path == MODELS_PATH or path.startswith(MODELS_PATH + "/"):
            if method != "GET":
                return _app.error_reply(405, "Method Not Allowed", "invalid_request_error")
            return "models"
        if path == CHAT_PATH:
            if method != "POST":
                return _app.error_reply(405, "Method Not Allowed", "invalid_request_error")
            return "chat"
        return _app.error_reply(
            404, f"Unknown request URL: {method} {path}", "invalid_request_error", "unknown_url"
        )

    async def _answer(self, request: ReceivedRequest, route: str, seq: int) -> Reply:
        models = [self.model, *self.extra_models]
        if route == "models":
            status = "loading" if self._loading_now(probe=True) else self.model_status
            model_id = request.path.rstrip("/")[len(MODELS_PATH) + 1 :]
            if model_id:
                return _app.model_entry_reply(model_id, models, status)
            return _app.models_reply(models, status)
        if self._loading_now(probe=False):
            return _app.loading_reply()
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        return _app.chat_reply(
            request.body,
            models=models,
            strict_model=self.strict_model,
            seq=seq,
            tool_policy=self.tool_policy,
            detect_prompt_schema=self.detect_prompt_schema,
            json_schema_support=self.json_schema_support,
        )
