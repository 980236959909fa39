"""The embedded server's state and knobs (the base of :class:`EmbeddedServer`).

Everything a test reads (``requests``, ``counts``, in-flight and connection
counters) and everything it turns (plain attributes and the fault, script and
loading methods) lives here; sockets and serving live in ``server.py``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal

from . import _app
from ._http import ReceivedRequest
from .faults import (
    FaultQueue,
    FaultRule,
    MalformedKind,
    RetryAfterForm,
    rate_limit_reply,
    server_error_reply,
)
from .replies import ToolPolicy
from .script import RawBytes, Reply, ScriptEntry, ScriptFunction, as_reply

__all__ = ["CHAT_PATH", "MODELS_PATH", "ServerState"]

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"


class ServerState:
    """Knobs and counters; see :class:`~openarmature_nodes.testing.EmbeddedServer`."""

    def __init__(
        self,
        model: str = "embedded-model",
        api_key: str | None = None,
        *,
        latency: float = 0.0,
        script: Sequence[ScriptEntry] | ScriptFunction | None = None,
        tool_policy: ToolPolicy = "auto",
        model_status: str | None = None,
        slow_load: bool | int = False,
        strict_model: bool = True,
        auth_style: _app.AuthStyle = "openai",
        json_schema_support: _app.JsonSchemaSupport = "native",
        detect_prompt_schema: bool = True,
        close_after: int | None = None,
        close_style: Literal["announce", "silent"] = "announce",
        idle_timeout: float | None = None,
        extra_models: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.model = model
        self.extra_models = list(extra_models)
        self.api_key = api_key
        self.latency = latency
        self.tool_policy: ToolPolicy = tool_policy
        self.model_status = model_status
        self.strict_model = strict_model
        self.auth_style: _app.AuthStyle = auth_style
        self.json_schema_support: _app.JsonSchemaSupport = json_schema_support
        self.detect_prompt_schema = detect_prompt_schema
        self.close_after = close_after
        self.close_style = close_style
        self.fault_filter: Callable[[ReceivedRequest], bool] | None = None
        """When set, only requests it returns ``True`` for may take an injected
        fault (the others are answered normally and leave the faults pending):
        a test can pick exactly which requests fail."""
        self.idle_timeout = idle_timeout
        self._host, self._want_port = host, port
        self._lock = threading.Lock()
        self._faults = FaultQueue()
        self._queue: collections.deque[Reply] = collections.deque()
        self._script_fn: ScriptFunction | None = None
        self.set_script(script)
        self._loading = False
        self._probes_left: int | None = None
        if slow_load is True:
            self.slow_load()
        elif slow_load is not False and slow_load > 0:
            self.slow_load(slow_load)
        #: Every request received, in arrival order.
        self.requests: list[ReceivedRequest] = []
        #: Requests per path (query string excluded).
        self.counts: collections.Counter[str] = collections.Counter()
        #: Exceptions raised by the server's own code (a bug); tests may assert it is empty.
        self.errors: list[BaseException] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.open_connections = 0
        self.connections_opened = 0
        self._seq = 0

    # -- knobs -----------------------------------------------------------------

    def set_script(self, script: Sequence[ScriptEntry] | ScriptFunction | None) -> None:
        """Replace the chat script: a sequence (queued) or a callable (asked each time)."""
        with self._lock:
            self._queue.clear()
            self._script_fn = None
            if callable(script):
                self._script_fn = script
            elif script is not None:
                self._queue.extend(as_reply(e) for e in script)

    def enqueue(self, *entries: ScriptEntry) -> None:
        """Append canned replies for the next chat requests."""
        replies = [as_reply(e) for e in entries]
        with self._lock:
            self._queue.extend(replies)

    def rate_limit(
        self,
        count: int | None = 1,
        *,
        retry_after: float | None = 1.0,
        form: RetryAfterForm = "seconds",
        window: float | None = None,
        path: str = CHAT_PATH,
    ) -> None:
        """Answer 429 to the next ``count`` requests, or to every request for
        ``window`` seconds (then ``retry_after=None`` advertises the time left).
        ``form`` picks the header (see :func:`.faults.rate_limit_reply`)."""
        until = None if window is None else time.monotonic() + window
        remaining = None if window is not None else count
        rule = FaultRule("rate_limit", path, remaining, until, retry_after, form)
        self._faults.add(rule)

    def fail_5xx(
        self,
        count: int = 1,
        *,
        status: int = 500,
        style: Literal["openai", "text"] = "openai",
        path: str = CHAT_PATH,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (500/502/503...),
        OpenAI-shaped JSON or ``text/plain``."""
        self._faults.add(FaultRule("server_error", path, count, status=status, style=style))

    def malformed(
        self, count: int = 1, kind: MalformedKind = "not_json", *, path: str = CHAT_PATH
    ) -> None:
        """Spoil the next ``count`` successful answers (see :func:`.faults.malform`)."""
        self._faults.add(FaultRule("malformed", path, count, malformed=kind))

    def drop(self, count: int = 1, *, path: str = "*") -> None:
        """Close the connection instead of answering the next ``count`` requests."""
        self._faults.add(FaultRule("drop", path, count))

    def raw_fault(
        self,
        raw: RawBytes,
        count: int | None = 1,
        *,
        path: str = CHAT_PATH,
    ) -> None:
        """Answer the next ``count`` requests (every one, with ``None``) by
        writing ``raw``'s bytes as they are: a slow drip, a stream of
        keep-alive comments that never ends, a huge or malformed head, a
        response that stops mid-way (see :class:`~.script.RawBytes`)."""
        self._faults.add(FaultRule("raw", path, count, raw=raw))

    def reset_faults(self) -> None:
        """Forget every pending fault and scripted reply."""
        self._faults.clear()
        self.set_script(None)

    def slow_load(self, probes: int | None = None) -> None:
        """Enter the loading state: models report ``status: loading`` and chat
        answers 503 until :meth:`finish_loading`, or, with ``probes``, until that
        many ``/v1/models`` probes have been answered."""
        with self._lock:
            self._loading = True
            self._probes_left = probes

    def finish_loading(self) -> None:
        """Leave the loading state."""
        with self._lock:
            self._loading = False
            self._probes_left = None

    @property
    def loading(self) -> bool:
        return self._loading

    # -- used by the server while answering -----------------------------------

    def _fire_fault(self, path: str) -> Reply | MalformedKind | None:
        """The first pending fault for ``path``: a reply to send instead of the
        answer, a way to spoil the answer, or ``None``."""
        fired = self._faults.take(path)
        if fired is None:
            return None
        rule, left = fired
        if rule.kind == "rate_limit":
            retry_after = rule.retry_after
            if retry_after is None and rule.until is not None:
                retry_after = float(max(int(left + 0.999), 1))
            return rate_limit_reply(retry_after, rule.form)
        if rule.kind == "server_error":
            return server_error_reply(rule.status, rule.style)
        if rule.kind == "drop":
            return Reply(connection="drop")
        if rule.kind == "raw":
            return Reply(raw=rule.raw)
        return rule.malformed

    def _loading_now(self, probe: bool) -> bool:
        with self._lock:
            if not self._loading:
                return False
            if probe and self._probes_left is not None:
                if self._probes_left <= 0:
                    self._loading, self._probes_left = False, None
                    return False
                self._probes_left -= 1
            return True

    async def _scripted(self, request: ReceivedRequest) -> Reply | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            fn = self._script_fn
        if fn is None:
            return None
        entry = fn(request)
        if entry is not None and not isinstance(entry, Reply | dict | list | tuple):
            entry = await entry
        return None if entry is None else as_reply(entry)
