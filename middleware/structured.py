"""Structured-output layer: validate replies against a schema, optionally re-ask.

A call-level middleware. Given a schema (a JSON Schema ``dict`` with an object
root, or a ``msgspec.Struct`` type) it makes sure every reply that passes
through carries a validated ``parsed`` value, or raises
:class:`~openarmature_nodes.llm.errors.StructuredOutputInvalid` with its full
surface (``output_content``, ``error_message``, ``finish_reason``, ``usage``,
``schema``). Validation is the provider's own
:func:`~openarmature_nodes.llm.wire.structured.validate_structured`: there is one
validator, not two.

``send_schema=True`` (default) puts the schema on the request, so the server is
asked for schema-constrained output and the provider validates the reply; the
layer then only adds the re-ask. ``send_schema=False`` leaves the request alone
and validates the reply's text here (for a prompt that asks for JSON itself, or
a server without structured output).

With a ``reask`` builder, an invalid reply is re-asked up to ``max_reasks``
times: the model's own output goes back as an assistant message, followed by a
user message holding exactly what the builder returns. The layer writes no
prompt text of its own. The re-ask loop is the provider's own call-level loop
(:func:`~openarmature_nodes.llm.call_retry.complete_with_retry` with a
``RetryConfig`` that retries nothing but ``structured_output_invalid``), so
``complete(retry=RetryConfig(reask=...))`` and this layer re-ask the same way::

    def fix(err: StructuredOutputInvalid) -> str:
        return f"That was not valid ({err.error_message}). Reply with the JSON object only."

    StructuredOutputMiddleware(Person, reask=fix, max_reasks=2)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from openarmature_nodes.llm.call_retry import ReaskBuilder, complete_with_retry
from openarmature_nodes.llm.request import CompletionRequest
from openarmature_nodes.llm.response import Response
from openarmature_nodes.llm.wire.structured import validate_structured
from openarmature_nodes.retrying import RetryConfig, constant_backoff

__all__ = ["StructuredOutputMiddleware"]


class StructuredOutputMiddleware:
    """Validate (and optionally re-ask) structured replies.

    ``schema``: the schema to enforce; ``None`` enforces the request's own
    ``response_schema`` (requests without one pass through untouched).
    """

    __slots__ = ("_reask_policy", "max_reasks", "reask", "schema", "send_schema")

    def __init__(
        self,
        schema: Any = None,
        *,
        reask: ReaskBuilder | None = None,
        max_reasks: int = 1,
        send_schema: bool = True,
    ) -> None:
        if max_reasks < 0:
            raise ValueError("max_reasks must be >= 0")
        self.schema = schema
        self.reask = reask
        self.max_reasks = max_reasks if reask is not None else 0
        self.send_schema = send_schema
        # Re-asks only: no transient failure is retried here (that is the retry layer's job).
        self._reask_policy = (
            RetryConfig(
                max_attempts=self.max_reasks + 1,
                classifier=_never,
                backoff=constant_backoff(0.0),
                reask=reask,
            )
            if self.max_reasks
            else None
        )

    def __repr__(self) -> str:
        return f"StructuredOutputMiddleware(max_reasks={self.max_reasks})"

    def _prepare(self, request: CompletionRequest) -> tuple[CompletionRequest, Any]:
        schema = self.schema if self.schema is not None else request.response_schema
        if (
            self.schema is not None
            and self.send_schema
            and request.response_schema is None
        ):
            request = msgspec.structs.replace(request, response_schema=self.schema)
        return request, schema

    @staticmethod
    def _check(response: Response, schema: Any, request: CompletionRequest) -> Response:
        if request.response_schema is not None or response.finish_reason == "tool_calls":
            return response  # validated by the provider (same function), or a tool call
        if response.message.tool_calls:
            return response
        content = response.message.content
        text = content if isinstance(content, str) else None
        parsed = validate_structured(
            text, schema, finish_reason=response.finish_reason, usage=response.usage
        )
        return msgspec.structs.replace(response, parsed=parsed)

    async def __call__(
        self,
        request: CompletionRequest,
        next: Callable[[CompletionRequest], Awaitable[Response]],
        /,
    ) -> Response:
        outgoing, schema = self._prepare(request)
        if schema is None:
            return await next(request)

        if self._reask_policy is None:
            return self._check(await next(outgoing), schema, outgoing)

        async def checked(attempt: CompletionRequest) -> Response:
            return self._check(await next(attempt), schema, attempt)

        return await complete_with_retry(checked, outgoing, self._reask_policy)


def _never(exc: Exception) -> bool:
    return False
