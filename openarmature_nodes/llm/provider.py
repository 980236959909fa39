"""``OpenAIProvider``: an LLM provider for any OpenAI-compatible server.

vLLM, llama.cpp, LM Studio, SGLang, Ollama's OpenAI endpoint and OpenAI
itself all speak Chat Completions. One provider is bound to one server and
one model, owns one HTTP connection pool, and is safe to share between any
number of concurrent tasks (calls are never serialized)::

    async with OpenAIProvider("http://localhost:8000", "meta-llama/Llama-3.1-8B-Instruct",
                              genai_system="vllm") as provider:
        await provider.ready()
        response = await provider.complete([UserMessage("hello")],
                                           config=RuntimeConfig(temperature=0.0, max_tokens=128))

The work per call is: validate (§3-§5, before anything is sent), encode
(:mod:`~openarmature_nodes.llm.wire`), one transport round trip,
decode. Everything that does not depend on the call (URLs, the header list)
is computed once here.

Streaming (``stream=True``, §8.1.6) reads the reply as Server-Sent Events
through the transport's ``stream()``, hands each text delta to the token
sinks in scope (:mod:`~openarmature_nodes.llm.tokens`) as its chunk arrives,
and returns the same whole ``Response`` as the atomic path
(:mod:`~openarmature_nodes.llm.wire.stream` assembles the events,
:mod:`~openarmature_nodes.llm.stream_read` reads them off the transport).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

import anyio
import httpx

from openarmature_nodes.retrying import RetryConfig

from .call_events import CallEventMiddleware
from .call_retry import complete_with_retry
from .config import RuntimeConfig
from .dialect_probe import AutoResult, probe_structured_mode
from .dialects import (
    AUTO,
    GENAI_SYSTEMS,
    Dialect,
    StructuredMode,
    dialect_for_server,
    resolve_dialect,
)
from .errors import (
    ProviderError,
    ProviderInvalidRequest,
    ProviderInvalidResponse,
    ProviderTimeout,
    ProviderUnavailable,
)
from .limits import EndpointLimiter
from .messages import Message, Tool, ToolChoice
from .redact import Redactor
from .request import CompletionRequest
from .response import Response
from .stream_read import consume_stream, read_unstreamed
from .tokens import TokenCallback, current_token_sinks, token_sink
from .transport import (
    FastTransport,
    HttpxTransport,
    RawResponse,
    StreamingTransport,
    Timeouts,
    Transport,
    TransportDeadline,
    TransportError,
    TransportResponseTooLarge,
    TransportTimeout,
)
from .transport._base import check_seconds
from .wire.decode import check_models_response, decode_chat_response
from .wire.dialects import reply_error
from .wire.encode import encode_chat_request, structured_mode_for
from .wire.error_reply import error_from_reply
from .wire.stream import ChatStreamAssembler
from .wire.validation import normalize_tool_choice, validate_request

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_STREAM_IDLE_TIMEOUT",
    "OpenAIProvider",
]

_USER_AGENT = "openarmature-nodes/0.1"
_monotonic = time.monotonic

DEFAULT_DEADLINE = 300.0
"""Seconds one call (one attempt) may take in all, unless overridden."""

DEFAULT_STREAM_IDLE_TIMEOUT = 60.0
"""Seconds a stream may go without a new chunk (SSE comments do not count)."""

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""The largest response body (or whole stream) read before failing."""


def _check_api_key(api_key: str) -> None:
    if not isinstance(api_key, str):
        raise TypeError(f"api_key must be a string or None, got {type(api_key).__name__}")
    clean = api_key.isprintable() and _is_latin1(api_key) and api_key == api_key.strip()
    if not api_key or not clean:
        raise ValueError(
            "api_key must be a non-empty single-line string of printable latin-1 characters "
            "without surrounding spaces (HTTP headers carry nothing else), or None for no auth"
        )


def _is_latin1(text: str) -> bool:
    return all(ord(c) < 256 for c in text)


def _split_base_url(base_url: str) -> tuple[str, str, int]:
    """-> (normalized base URL, host, port); raises ValueError with advice."""
    if not isinstance(base_url, str) or not base_url.strip():
        raise ValueError("base_url must be the server's root URL, such as 'http://localhost:8000'")
    url = base_url.strip().rstrip("/")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError(
            f"base_url must be ASCII without spaces or control characters (percent-encode "
            f"them), got {base_url!r}"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"base_url {base_url!r} is not a valid URL: {exc}") from None
    if "@" in parts.netloc:
        raise ValueError(
            "base_url must not embed credentials (user:password@); pass api_key= instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"base_url must start with http:// or https:// and name a host, got {base_url!r}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"base_url must not carry a query or fragment, got {base_url!r}")
    if parts.path.rstrip("/").endswith("/v1"):
        root = url[: -len("/v1")]
        raise ValueError(
            f"base_url {base_url!r} ends in /v1, but the provider appends /v1/chat/completions and "
            f"/v1/models itself; pass the server root instead: base_url={root!r}"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return url, parts.hostname, port


class OpenAIProvider:
    """An OpenAI-compatible Chat Completions provider bound to one model.

    ``base_url`` is the server *root* (``http://localhost:8000``); a path
    prefix of a reverse proxy is kept (``https://gw.example/api/openai-proxy``),
    but a URL ending in ``/v1`` is refused: the provider adds ``/v1/...``.

    ``api_key``: sent as ``Authorization: Bearer ...``; ``None`` sends no
    ``Authorization`` header (vLLM and llama.cpp run without auth by
    default). The key never appears in ``repr``, logs or error messages.

    ``genai_system`` names the backend for observability (``"vllm"``,
    ``"llama.cpp"``, ``"openai"`` ...); nothing is inferred from the URL.

    ``dialect`` (:mod:`~openarmature_nodes.llm.dialects`): what this server
    accepts: ``"openai"``, ``"vllm"``, ``"llamacpp"``, ``"lmstudio"``,
    ``"sglang"``, a custom :class:`~openarmature_nodes.llm.dialects.Dialect`,
    or ``"auto"``: at warm-up (``ready()``, or the first structured call)
    the server's model card and a tiny canary request decide which
    structured-output form it enforces (logged, and on the span). Left out,
    it follows ``genai_system`` where that names a dialect, else
    ``"openai"``; ``genai_system`` left out follows the dialect.

    ``force_prompt_augmentation_fallback``: for servers without
    ``response_format: json_schema`` support, structured output is requested
    by a system-message directive that contains the schema instead; the reply
    is validated against the schema either way.

    Networking: pass ``transport`` (any :class:`Transport`), or
    ``http_client`` (your own ``httpx.AsyncClient``, which stays yours to
    close), or neither: an ``http://`` endpoint then gets a
    :class:`~openarmature_nodes.llm.transport.FastTransport` (an HTTP/1.1
    keep-alive pool on anyio-driven sockets and httptools, about 20x less CPU per
    call than httpx), an ``https://`` one an httpx client; either honours
    ``timeouts``.
    Streaming needs a transport with ``stream()``
    (:class:`~openarmature_nodes.llm.transport.StreamingTransport`); both
    shipped transports have it.

    Bounds (every wait is bounded by default):

    ``deadline``
        Seconds one call may take in all (a place under the in-flight limit,
        connecting, sending, reading the whole reply; streamed or not).
        Default :data:`DEFAULT_DEADLINE` (300 s); override per call with
        ``complete(deadline=...)`` or ``CompletionRequest(deadline=...)``.
        ``ProviderTimeout`` (category ``provider_unavailable``) when it passes.
    ``stream_idle_timeout``
        Seconds a streamed reply may go without a new chunk; SSE comments
        (``: ping``) do not count. Default 60 s. ``ProviderTimeout`` too.
    ``max_response_bytes``
        The largest reply body, or the most bytes of one stream, read before
        failing with ``ProviderInvalidResponse``; enforced while reading, by
        the default transports. Default 64 MiB.
    ``max_in_flight``
        Calls in flight to this endpoint (``host:port``) at once, shared by
        every provider of the endpoint in the process
        (:class:`~openarmature_nodes.llm.limits.EndpointLimiter`); further
        calls wait their turn. Default 256 (vLLM's default ``--max-num-seqs``);
        setting it sets it for the endpoint.

    Bad arguments are refused at construction with ``TypeError`` or
    ``ValueError`` naming the argument; bad call arguments with
    ``ProviderInvalidRequest``, before anything is sent, whatever the
    transport.
    """

    supports_streaming: ClassVar[bool] = True
    """Whether this wire mapping implements ``stream=True`` (§5 *Provider
    streaming support*). A subclass for a server without streaming sets it to
    ``False``; its ``stream=True`` calls are then refused before sending."""

    __slots__ = (
        "_auto",
        "_auto_lock",
        "_can_stream",
        "_chat_url",
        "_closed",
        "_dialect",
        "_events",
        "_fallback",
        "_headers",
        "_limiter",
        "_models_url",
        "_native_deadline",
        "_probe_headers",
        "_redactor",
        "_stream_headers",
        "_transport",
        "base_url",
        "deadline",
        "genai_system",
        "max_model_len",
        "model",
        "server_address",
        "server_port",
        "stream_idle_timeout",
    )

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        genai_system: str | None = None,
        dialect: str | Dialect | None = None,
        force_prompt_augmentation_fallback: bool = False,
        transport: Transport | None = None,
        timeouts: Timeouts | None = None,
        http_client: httpx.AsyncClient | None = None,
        deadline: float | None = DEFAULT_DEADLINE,
        stream_idle_timeout: float | None = DEFAULT_STREAM_IDLE_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_in_flight: int | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty model identifier")
        if genai_system is not None and not isinstance(genai_system, str):
            raise TypeError("genai_system must be a string or None")
        check_seconds("deadline", deadline)
        check_seconds("stream_idle_timeout", stream_idle_timeout)
        if isinstance(max_response_bytes, bool) or not isinstance(max_response_bytes, int):
            raise TypeError("max_response_bytes must be an int")
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be at least 1")
        if timeouts is not None and not isinstance(timeouts, Timeouts):
            raise TypeError(f"timeouts must be a Timeouts, got {type(timeouts).__name__}")
        if transport is not None and not isinstance(transport, Transport):
            raise TypeError("transport must have async request() and aclose() methods")
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError("http_client must be an httpx.AsyncClient")
        self.deadline = deadline
        self.stream_idle_timeout = stream_idle_timeout
        self.base_url, self.server_address, self.server_port = _split_base_url(base_url)
        self.model = model
        self._dialect = resolve_dialect(dialect, genai_system)
        self.genai_system = genai_system or GENAI_SYSTEMS.get(self._dialect.name, "openai")
        self._auto: AutoResult | None = None
        self._auto_lock: anyio.Lock | None = None
        self.max_model_len: int | None = None  # the model card's, read by ready() (see there)
        self._fallback = bool(force_prompt_augmentation_fallback)
        self._chat_url = f"{self.base_url}/v1/chat/completions"
        self._models_url = f"{self.base_url}/v1/models"
        common = [("user-agent", _USER_AGENT)]
        if api_key is not None:
            _check_api_key(api_key)
            common.append(("authorization", f"Bearer {api_key}"))
        self._redactor = Redactor((api_key,) if api_key else ())
        self._limiter = EndpointLimiter.for_endpoint(
            f"{self.server_address}:{self.server_port}", max_in_flight
        )
        self._probe_headers = (("accept", "application/json"), *common)
        self._headers = (("content-type", "application/json"), *self._probe_headers)
        self._stream_headers = (
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
            *common,
        )
        # Typed LLM / token events (graph-engine §6) of every complete() call made
        # inside an observed graph run; nothing at all outside one.
        self._events = CallEventMiddleware(self)
        if transport is not None and (http_client is not None or timeouts is not None):
            raise ValueError(
                "pass transport= alone; http_client= and timeouts= configure the default transport"
            )
        if transport is None:
            if http_client is not None:
                transport = HttpxTransport(client=http_client)
            elif self.base_url.startswith("http://"):
                transport = FastTransport(timeouts=timeouts, max_response_bytes=max_response_bytes)
            else:
                transport = HttpxTransport(
                    timeouts=timeouts, max_response_bytes=max_response_bytes
                )
        self._transport: Transport = transport
        self._can_stream = isinstance(transport, StreamingTransport)
        # The fast transport enforces a deadline with its watchdog thread, at the
        # cost of a float: no cancel scope per call on the hot path.
        self._native_deadline = type(transport) is FastTransport
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the connection pool (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._transport.aclose()

    async def __aenter__(self) -> OpenAIProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"OpenAIProvider(base_url={self.base_url!r}, model={self.model!r}, "
            f"genai_system={self.genai_system!r}, dialect={self._dialect.name!r})"
        )

    @property
    def dialect(self) -> Dialect:
        """The dialect requests are encoded with (for ``"auto"``: after its probe,
        the detected one; before it, :data:`~openarmature_nodes.llm.dialects.AUTO`)."""
        return self._dialect

    @property
    def structured_output_mode(self) -> StructuredMode:
        """How a ``response_schema`` is sent now (``"prompt"``: the fallback directive)."""
        return structured_mode_for(self._dialect, fallback=self._fallback)

    @property
    def dialect_detection(self) -> str | None:
        """What the ``"auto"`` probe found and tried (``None`` before it ran, or
        when the dialect was given)."""
        return self._auto.summary if self._auto is not None else None

    @property
    def health_url(self) -> str | None:
        """The dialect's cheap readiness URL (vLLM, SGLang: ``/health``), if it has one."""
        path = self._dialect.health_path
        return f"{self.base_url}{path}" if path else None

    @property
    def transport(self) -> Transport:
        """The transport moving this provider's bytes."""
        return self._transport

    @property
    def limiter(self) -> EndpointLimiter:
        """The in-flight limit shared by every provider of this endpoint."""
        return self._limiter

    # -- operations ----------------------------------------------------------------
    async def ready(self) -> None:
        """Check that the server answers, accepts our credentials, and serves
        the bound model (``GET /v1/models``).

        Raises ``ProviderAuthentication`` (401/403), ``ProviderInvalidModel``
        (the model is not listed), ``ProviderModelNotLoaded`` (listed with a
        loading status: LM Studio, llama.cpp router mode) or
        ``ProviderUnavailable`` (connection failure, timeout, 5xx).

        Servers that list a model before it can generate (vLLM reports no load
        state) need a one-token warm-up completion to be sure; see the README.

        Per dialect: where the dialect reads it (vLLM, SGLang, ``"auto"``), the
        model card's ``max_model_len`` is kept (:attr:`max_model_len`) and a
        request whose ``max_tokens`` exceeds it is refused before sending. With
        ``dialect="auto"`` the first ``ready()`` also runs the dialect probe
        (:mod:`~openarmature_nodes.llm.dialect_probe`): a few tiny completions.
        """
        deadline = self.deadline
        with anyio.move_on_after(math.inf if deadline is None else deadline) as scope:
            try:
                await self._ready()
            except ProviderError as exc:
                self._redactor.scrub_error(exc)
                raise
            return
        raise self._timeout("GET", self._models_url, deadline, scope)

    async def _ready(self) -> None:
        raw = await self._send("GET", self._models_url, self._probe_headers, None)
        entry = check_models_response(
            raw.status, raw.headers, raw.body, self.model, url=self._models_url
        )
        if entry.max_model_len is not None and self._dialect.reads_max_model_len:
            self.max_model_len = entry.max_model_len
        if self._dialect is AUTO and not self._fallback:  # forced prompt mode: nothing to probe
            await self._detect(entry.owned_by)

    async def health(self) -> None:
        """A cheap liveness check: ``GET`` the dialect's health URL (vLLM,
        SGLang: ``/health``), or ``ready()`` where the dialect has none.
        Raises ``ProviderUnavailable`` (connection refused: a vLLM server that
        is still loading keeps its port closed) or the reply's categorized error."""
        url = self.health_url
        if url is None:
            await self.ready()
            return
        raw = await self._send("GET", url, self._probe_headers, None)
        if not 200 <= raw.status < 300:
            err = error_from_reply(raw.status, raw.headers, raw.body, url=url)
            self._redactor.scrub_error(err)
            raise err

    async def _detect(self, owned_by: str | None) -> None:
        """Run the ``"auto"`` probe once (concurrent callers wait for it)."""
        if self._auto_lock is None:
            self._auto_lock = anyio.Lock()
        async with self._auto_lock:
            if self._dialect is not AUTO:
                return
            server = dialect_for_server(owned_by)
            base = server if server is not None else AUTO

            async def send(body: bytes) -> RawResponse:
                return await self._send("POST", self._chat_url, self._headers, body)

            result = await probe_structured_mode(
                send, self.model, base, url=self._chat_url, identified=server is not None
            )
            if not base.reads_max_model_len:
                self.max_model_len = None
            self._auto = result
            self._dialect = result.dialect

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Tool] | None = None,
        config: RuntimeConfig | Mapping[str, Any] | None = None,
        response_schema: Any = None,
        tool_choice: ToolChoice | Mapping[str, str] | None = None,
        retry: RetryConfig | None = None,
        stream: bool = False,
        on_token: TokenCallback | None = None,
        deadline: float | None = None,
    ) -> Response:
        """One chat completion; see the module docs and spec llm-provider §5.

        Every option after ``messages`` is keyword-only.

        ``config`` may also be a plain mapping (declared names fill the declared
        fields, other keys become extras). ``tool_choice`` may be
        ``{"type": "tool", "name": ...}``. ``retry``: a
        :class:`~openarmature_nodes.retrying.RetryConfig` runs the call-level
        retry loop of §7.1 (see :mod:`.call_retry`); without it nothing is
        retried.

        ``stream=True`` reads the reply as it is generated and reports each
        piece of text, as a :class:`~openarmature_nodes.llm.tokens.TokenDelta`,
        to ``on_token`` and to every token sink in scope
        (:func:`~openarmature_nodes.llm.tokens.token_sink`); the return value
        is the same whole ``Response``. ``on_token``'s deltas are numbered
        from 0 for this call, across retry attempts. Without ``stream=True``
        no deltas are reported.

        ``deadline``: seconds each attempt may take in all (default: the
        provider's ``deadline``).

        Every bad argument raises ``ProviderInvalidRequest`` before anything
        is sent.
        """
        if config is not None and not isinstance(config, RuntimeConfig):
            if not isinstance(config, Mapping):
                raise ProviderInvalidRequest(
                    f"config must be a RuntimeConfig or a mapping, got {type(config).__name__}"
                )
            try:
                config = RuntimeConfig.from_mapping(config)
            except (TypeError, ValueError) as exc:
                raise ProviderInvalidRequest(f"config: {exc}") from exc
        if retry is not None and not isinstance(retry, RetryConfig):
            raise ProviderInvalidRequest(
                f"retry must be a RetryConfig or None, got {type(retry).__name__}"
            )
        if not isinstance(stream, bool):
            raise ProviderInvalidRequest(f"stream must be True or False, got {stream!r}")
        if on_token is not None and not callable(on_token):
            raise ProviderInvalidRequest("on_token must be callable")
        if deadline is not None:
            try:
                check_seconds("deadline", deadline)
            except (TypeError, ValueError) as exc:
                raise ProviderInvalidRequest(str(exc)) from None
        choice: ToolChoice | None = normalize_tool_choice(tool_choice)
        request = CompletionRequest(
            messages, tools, config, response_schema, choice, stream, deadline
        )
        send = self.call
        if retry is not None:

            async def send(request: CompletionRequest) -> Response:
                return await complete_with_retry(self.call, request, retry)

        if on_token is not None:
            with token_sink(on_token):
                return await self._events(request, send)  # type: ignore[no-any-return]
        return await self._events(request, send)  # type: ignore[no-any-return]

    async def call(self, request: CompletionRequest) -> Response:
        """Send ``request``: the innermost handler for call-level middleware.

        Validates and encodes it (``ProviderInvalidRequest`` before anything
        is sent), waits for a place under the endpoint's in-flight limit,
        sends it and reads the reply, all within the call's deadline.
        Every error leaving here has had the API key and any bearer token
        redacted from its server-supplied text.
        """
        if not isinstance(request, CompletionRequest):
            raise ProviderInvalidRequest(
                f"call() takes a CompletionRequest, got {type(request).__name__}"
            )
        deadline = request.deadline
        if deadline is None:
            deadline = self.deadline
        elif isinstance(deadline, bool) or not isinstance(deadline, int | float) or not (
            deadline >= 0
        ):
            raise ProviderInvalidRequest(f"deadline must be seconds >= 0, got {deadline!r}")
        if self._native_deadline and deadline is not None:
            return await self._call_native(request, deadline)
        limiter = self._limiter
        with anyio.move_on_after(math.inf if deadline is None else deadline) as scope:
            try:
                tools = await self._prepare(request)
                if request.stream:
                    body = self._streaming_body(request)
                else:
                    body = encode_chat_request(
                        self.model, request, fallback=self._fallback, dialect=self._dialect
                    )
                await limiter.acquire()
                try:
                    if request.stream:
                        return await self._call_streaming(request, tools, body)
                    raw = await self._send("POST", self._chat_url, self._headers, body)
                finally:
                    limiter.release()
                return self._decode_reply(request, raw, tools)
            except ProviderError as exc:
                self._redactor.scrub_error(exc)
                raise
        raise self._timeout("POST", self._chat_url, deadline, scope)

    async def _call_native(self, request: CompletionRequest, deadline: float) -> Response:
        """:meth:`call` over the fast transport: its watchdog enforces the
        deadline (of a whole reply or of a whole stream), so the common case
        needs no cancel scope (only a wait for a place under the in-flight
        limit gets one)."""
        ends = _monotonic() + deadline
        limiter = self._limiter
        url = self._chat_url
        try:
            tools = await self._prepare(request)
            if request.stream:
                body = self._streaming_body(request)
            else:
                body = encode_chat_request(
                    self.model, request, fallback=self._fallback, dialect=self._dialect
                )
            if not limiter.try_acquire():
                with anyio.move_on_after(deadline) as scope:
                    await limiter.acquire()
                if scope.cancelled_caught:
                    raise self._timeout("POST", url, deadline, scope)
            try:
                if request.stream:
                    return await self._call_streaming(request, tools, body, ends)
                transport = cast(FastTransport, self._transport)
                raw = await transport.request("POST", url, self._headers, body, deadline=ends)
            except TransportDeadline:
                raise self._timeout("POST", url, deadline, None) from None
            except TransportError as exc:
                raise _provider_error("POST", url, exc) from exc
            finally:
                limiter.release()
            return self._decode_reply(request, raw, tools)
        except ProviderError as exc:
            self._redactor.scrub_error(exc)
            raise

    async def _prepare(self, request: CompletionRequest) -> dict[str, Tool]:
        """Pre-send checks (and the ``"auto"`` dialect probe before the first
        structured call); returns the request's tools by name."""
        tools = validate_request(request)
        if request.response_schema is not None and self._dialect is AUTO and not self._fallback:
            await self.ready()  # the "auto" probe runs before the first structured call
        self._check_budget(request)
        return tools

    @staticmethod
    def _timeout(
        method: str, url: str, deadline: float | None, scope: anyio.CancelScope | None
    ) -> ProviderTimeout:
        return ProviderTimeout(
            f"{method} {url}: the call's deadline of {deadline} s passed before the reply was "
            f"complete (set OpenAIProvider(deadline=...) or complete(deadline=...))",
            deadline=deadline,
        )

    def _check_budget(self, request: CompletionRequest) -> None:
        limit = self.max_model_len
        config = request.config
        if limit is None or config is None or config.max_tokens is None:
            return
        if config.max_tokens > limit:
            raise ProviderInvalidRequest(
                f"config.max_tokens={config.max_tokens} exceeds the server's max_model_len="
                f"{limit} (its model card, read by ready()); nothing was sent: ask for at most "
                f"{limit} tokens (fewer, to leave room for the prompt)"
            )

    def _decode_reply(
        self, request: CompletionRequest, raw: RawResponse, tools: dict[str, Tool]
    ) -> Response:
        """The unstreamed reply's tail, shared by :meth:`call` and
        :meth:`_call_native`: a non-2xx status becomes the categorized reply
        error, a 2xx body is decoded into the :class:`Response`."""
        if not 200 <= raw.status < 300:
            raise self._reply_error(request, raw.status, raw.headers, raw.body)
        return decode_chat_response(
            raw.status,
            raw.headers,
            self._redactor.body(raw.body),
            tools=tools,
            response_schema=request.response_schema,
            url=self._chat_url,
        )

    def _reply_error(
        self, request: CompletionRequest, status: int, headers: Mapping[str, str], body: bytes
    ) -> ProviderError:
        sent = (
            structured_mode_for(self._dialect, fallback=self._fallback)
            if request.response_schema is not None
            else None
        )
        err = error_from_reply(status, headers, body, url=self._chat_url)
        return reply_error(err, dialect=self._dialect, sent=sent)

    async def _send(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> RawResponse:
        try:
            return await self._transport.request(method, url, headers, body)
        except TransportError as exc:
            raise _provider_error(method, url, exc) from exc

    def _streaming_body(self, request: CompletionRequest) -> bytes:
        if not self.supports_streaming:
            raise ProviderInvalidRequest(
                f"{type(self).__name__}'s wire mapping does not support streaming; "
                f"call complete() without stream=True"
            )
        if not self._can_stream:
            raise ProviderInvalidRequest(
                f"stream=True needs a transport with a stream() method; "
                f"{type(self._transport).__name__} has none (use HttpxTransport, or add stream() "
                f"to it: see openarmature_nodes.llm.transport.StreamingTransport)"
            )
        return encode_chat_request(
            self.model, request, fallback=self._fallback, stream=True, dialect=self._dialect
        )

    async def _call_streaming(
        self,
        request: CompletionRequest,
        tools: dict[str, Tool],
        body: bytes,
        ends: float | None = None,
    ) -> Response:
        """The streamed exchange. ``ends``: the call's deadline as a
        ``time.monotonic()`` instant, enforced by the fast transport's
        watchdog (it then raises ``TransportDeadline`` for the caller to
        report); ``None``: the caller's cancel scope enforces it."""
        sinks = current_token_sinks()
        url = self._chat_url
        asm = ChatStreamAssembler(tools=tools, response_schema=request.response_schema, url=url,
                                  scrub=self._redactor)
        if ends is None:
            transport = cast(StreamingTransport, self._transport)
            stream = transport.stream("POST", url, self._stream_headers, body)
        else:
            fast = cast(FastTransport, self._transport)
            stream = fast.stream("POST", url, self._stream_headers, body, deadline=ends)
        try:
            async with stream as reply:
                if not 200 <= reply.status < 300:
                    raise self._reply_error(
                        request, reply.status, reply.headers, await reply.aread()
                    )
                content_type = reply.headers.get("content-type", "")
                if content_type.startswith("application/json"):
                    return await read_unstreamed(
                        reply, asm, sinks, response_schema=request.response_schema, url=url
                    )
                await consume_stream(reply, asm, sinks, idle_timeout=self.stream_idle_timeout)
        except TransportError as exc:
            if ends is not None and isinstance(exc, TransportDeadline):
                raise  # the caller's: it knows the deadline in seconds
            raise _provider_error("POST", url, exc) from exc
        return asm.response()


def _provider_error(method: str, url: str, exc: TransportError) -> ProviderError:
    """The category of a transport failure."""
    if isinstance(exc, TransportResponseTooLarge):
        return ProviderInvalidResponse(f"{method} {url}: {exc}")
    if isinstance(exc, TransportTimeout):
        return ProviderTimeout(f"{method} {url} failed: {exc}")
    return ProviderUnavailable(f"{method} {url} failed: {exc}")
