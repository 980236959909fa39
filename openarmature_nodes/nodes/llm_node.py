"""The LLM node: one chat completion as a graph node.

An :class:`LLMNode` is an ordinary node function (``async (state) -> partial
update``) built from three things you write and one you usually don't:

- a **prompt** function, ``state -> messages``: it returns the conversation to
  send (a sequence of messages), or a whole
  :class:`~openarmature_nodes.llm.CompletionRequest` when the tools, the
  ``tool_choice``, the schema or the sampling config depend on the state;
- an **update** function, ``response -> partial update`` (or
  ``(response, state) -> partial update`` when it needs the state): what the
  reply changes in the graph's state;
- the **provider** (anything with ``async call(CompletionRequest) -> Response``,
  such as :class:`~openarmature_nodes.llm.OpenAIProvider`);
- the **call-level middleware**, the onion around ``provider.call``. By
  default it is :func:`default_onion`, from the outside in::

      CallEventMiddleware typed LLM / token events on the observer queue
      SpanMiddleware      one OpenTelemetry span per node call
      RetryMiddleware     transient failures, honouring Retry-After
      CooldownMiddleware  one 429 holds every caller of the server until its stated time
      WarmupGate          the first call waits for one warm-up of the model
      StructuredOutputMiddleware   replies checked against response_schema
      DegradedResponseMiddleware   finish_reason "error" raised as transient
      provider.call       the HTTP round trip

So a node reads like this::

    summarize = LLMNode(
        provider,
        prompt=lambda s: [SystemMessage("Summarize."), UserMessage(s.text)],
        update=lambda r: {"summary": r.message.content},
        config=RuntimeConfig(max_tokens=128),
    )
    builder.add_node("summarize", summarize)

Each layer is an ordinary middleware (``async (request, next) -> response``):
pass ``middleware=[...]`` to reorder, drop or add layers, or build the default
with different settings, ``default_onion(provider, retry=RetryMiddleware(max_attempts=5))``.

The onion's layers keep state (the warm-up gate remembers that the model is
warm, a cooldown remembers a ``Retry-After``). Nodes that talk to the same
server should share one list: ``onion = default_onion(provider)`` once, then
``LLMNode(..., middleware=onion)`` for each of them, so the model is warmed up
once, not once per node.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Literal, Protocol, TypeVar

import msgspec

from openarmature_nodes.llm import (
    CompletionRequest,
    Message,
    Response,
    RuntimeConfig,
    Tool,
    ToolChoice,
)
from openarmature_nodes.llm.wire.validation import normalize_tool_choice
from openarmature_nodes.middleware import (
    CacheMiddleware,
    Cooldown,
    CooldownMiddleware,
    DegradedResponseMiddleware,
    RetryMiddleware,
    SpanMiddleware,
    StructuredOutputMiddleware,
    WarmupGate,
)
from openarmature_nodes.onion import Middleware, compose
from openarmature_nodes.retrying import RetryConfig

from .observe import CallEventMiddleware

__all__ = ["CallProvider", "LLMNode", "append_reply", "default_onion"]

S = TypeVar("S")

Update = Mapping[str, Any] | None
PromptResult = Sequence[Message] | CompletionRequest
PromptFn = Callable[[S], PromptResult | Awaitable[PromptResult]]
UpdateFn = Callable[..., Update | Awaitable[Update]]
CallMiddleware = Middleware[CompletionRequest, Response]
ToolChoiceArg = ToolChoice | Mapping[str, str] | Callable[[S], ToolChoice | None] | None
ConfigArg = RuntimeConfig | Mapping[str, Any] | Callable[[S], RuntimeConfig | None] | None


class CallProvider(Protocol):
    """What an LLM node needs from a provider: the innermost call handler."""

    async def call(self, request: CompletionRequest) -> Response:
        """Send one request (a single attempt) and return its response."""
        ...


def default_onion(
    provider: Any,
    *,
    events: CallEventMiddleware | Literal[False] | None = None,
    span: SpanMiddleware | Literal[False] | None = None,
    retry: RetryMiddleware | RetryConfig | Literal[False] | None = None,
    cooldown: CooldownMiddleware | Literal[False] | None = None,
    warmup: WarmupGate | Literal[False] | None = None,
    structured: StructuredOutputMiddleware | Literal[False] | None = None,
    degraded: DegradedResponseMiddleware | Literal[False] | None = None,
    cache: CacheMiddleware | None = None,
) -> list[CallMiddleware]:
    """The default call-level onion for ``provider``, outermost first.

    ``[CallEventMiddleware, SpanMiddleware, RetryMiddleware, CooldownMiddleware,
    WarmupGate, StructuredOutputMiddleware, DegradedResponseMiddleware]``, each
    with its defaults (retry: 3 attempts, full-jitter backoff from 1 s, at least
    the server's ``Retry-After``, and none at all when the server asks for more
    than 60 s; cooldown: the endpoint's process-wide :class:`Cooldown`, so
    one 429 holds every caller of that server until the time it stated;
    warm-up: ``ready()`` then a one-token completion, with 30 s for a server
    that is not up yet or still loading, see :class:`WarmupGate`; degraded: a
    reply with ``finish_reason == "error"`` is raised as a transient
    ``ProviderDegradedResponse``, so it is retried, then raised).
    Pass an instance to configure a layer, a :class:`RetryConfig` for retry,
    or ``False`` to leave a layer out (``degraded=False`` returns degraded
    replies as they are). ``cache`` (off by default) adds a
    :class:`~openarmature_nodes.middleware.CacheMiddleware` right inside the span.

    Why this order: the typed events are outermost so that a node call, retries
    included, is one ``call_id`` with one terminal event; the span comes next so
    that one node call is one span, whatever happens inside; retry sits outside
    the gate so that a call that fails after the gate opened is retried without
    a second warm-up; the
    structured-output check is innermost so that every attempt's reply is
    validated (and re-asked, when configured) before retry sees it.
    """
    layers: list[CallMiddleware] = []
    if events is not False:
        layers.append(events if events is not None else CallEventMiddleware(provider))
    if span is not False:
        layers.append(span if span is not None else SpanMiddleware(provider))
    if cache is not None:
        layers.append(cache)
    if retry is not False:
        if retry is None:
            retry = RetryMiddleware()
        elif isinstance(retry, RetryConfig):
            retry = RetryMiddleware(retry)
        layers.append(retry)
    if cooldown is not False:
        if cooldown is None:
            cooldown = CooldownMiddleware(Cooldown.for_endpoint(provider))
        layers.append(cooldown)
    if warmup is not False:
        layers.append(warmup if warmup is not None else WarmupGate(provider))
    if structured is not False:
        layers.append(structured if structured is not None else StructuredOutputMiddleware())
    if degraded is not False:
        layers.append(degraded if degraded is not None else DegradedResponseMiddleware())
    return layers


def append_reply(field: str = "messages") -> Callable[[Response], Update]:
    """An update function that appends the reply's message to ``field``.

    ``field`` should be declared with the ``append`` reducer, for example
    ``messages: Annotated[list[Message], append] = []``.
    """

    def update(response: Response) -> Update:
        return {field: [response.message]}

    update.__name__ = f"append_reply_to_{field}"
    return update


class LLMNode(Generic[S]):
    """A graph node that makes one chat completion per visit.

    ``prompt(state)`` returns the messages, or a ``CompletionRequest``;
    ``update(response)`` or ``update(response, state)`` returns the partial
    update. Either function may be ``async``.

    ``tools``, ``tool_choice`` and ``config`` are each a value or a function
    of the state; ``response_schema`` (a JSON Schema dict or a
    ``msgspec.Struct`` type) is a value. They fill whatever a
    ``CompletionRequest`` returned by ``prompt`` leaves as ``None``.

    ``middleware``: the call-level onion (outermost first); ``None`` builds
    :func:`default_onion`. ``[]`` calls the provider directly.

    ``stream=True`` makes every call a streamed one (``CompletionRequest.stream``):
    the provider reads the reply as Server-Sent Events and each text delta
    becomes an ``LlmTokenEvent`` for the run's observers (emitted by the
    onion's call-event layer, so keep it in a custom ``middleware`` list), and a
    :class:`~openarmature_nodes.graph.streaming.TokenItem` for ``graph.stream()``. The
    response, and so the node's update, is the same as without streaming.
    """

    __slots__ = (
        "_config",
        "_handler",
        "_prompt",
        "_tool_choice",
        "_tools",
        "_update",
        "_update_takes_state",
        "middleware",
        "name",
        "provider",
        "response_schema",
        "stream",
    )

    def __init__(
        self,
        provider: CallProvider,
        prompt: PromptFn[S],
        update: UpdateFn,
        *,
        tools: Sequence[Tool] | Callable[[S], Sequence[Tool] | None] | None = None,
        tool_choice: ToolChoiceArg[S] = None,
        response_schema: Any = None,
        config: ConfigArg[S] = None,
        middleware: Sequence[CallMiddleware] | None = None,
        name: str = "llm",
        stream: bool = False,
    ) -> None:
        if not callable(getattr(provider, "call", None)):
            raise TypeError(f"provider must have an async call(request) method, got {provider!r}")
        if not callable(prompt) or not callable(update):
            raise TypeError("prompt and update must be callables")
        self.provider = provider
        self.name = name
        self._prompt = prompt
        self._update = update
        self._update_takes_state = _positional_arity(update) >= 2
        self._tools = tools
        if tool_choice is not None and not callable(tool_choice):
            tool_choice = normalize_tool_choice(tool_choice)
        self._tool_choice = tool_choice
        if isinstance(config, Mapping):
            config = RuntimeConfig.from_mapping(config)
        self._config = config
        self.response_schema = response_schema
        self.stream = bool(stream)
        self.middleware: tuple[CallMiddleware, ...] = tuple(
            default_onion(provider) if middleware is None else middleware
        )
        self._handler = compose(self.middleware, provider.call)

    def __repr__(self) -> str:
        layers = ", ".join(type(m).__name__ for m in self.middleware)
        return f"LLMNode(name={self.name!r}, provider={self.provider!r}, middleware=[{layers}])"

    async def request_for(self, state: S) -> CompletionRequest:
        """The request this node would send for ``state`` (useful in tests)."""
        made = self._prompt(state)
        if inspect.isawaitable(made):
            made = await made
        if isinstance(made, CompletionRequest):
            request = made
        elif isinstance(made, Sequence) and not isinstance(made, str | bytes):
            request = CompletionRequest(messages=tuple(made))
        else:
            raise TypeError(
                f"LLM node {self.name!r}: prompt must return a sequence of messages or a "
                f"CompletionRequest, got {type(made).__name__}"
            )
        changes: dict[str, Any] = {}
        if request.tools is None and self._tools is not None:
            tools = self._tools(state) if callable(self._tools) else self._tools
            if tools is not None:
                changes["tools"] = tuple(tools)
        if request.tool_choice is None and self._tool_choice is not None:
            choice = (
                self._tool_choice(state) if callable(self._tool_choice) else self._tool_choice
            )
            if choice is not None:
                changes["tool_choice"] = normalize_tool_choice(choice)
        if request.config is None and self._config is not None:
            config = self._config(state) if callable(self._config) else self._config
            if isinstance(config, Mapping):
                config = RuntimeConfig.from_mapping(config)
            if config is not None:
                changes["config"] = config
        if request.response_schema is None and self.response_schema is not None:
            changes["response_schema"] = self.response_schema
        if self.stream and not request.stream:
            changes["stream"] = True
        return msgspec.structs.replace(request, **changes) if changes else request

    async def __call__(self, state: S) -> Update:
        request = await self.request_for(state)
        response = await self._handler(request)
        out = self._update(response, state) if self._update_takes_state else self._update(response)
        if inspect.isawaitable(out):
            out = await out
        return out


def _positional_arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` accepts (2 means "give me the state too")."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: assume one argument
        return 1
    count = 0
    for p in params:
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return 2
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count
