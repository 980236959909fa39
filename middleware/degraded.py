"""Degraded replies are failures, not answers.

Spec llm-provider §6 maps a mid-stream error event, and a ``finish_reason``
the mapping does not know, to a *successful* ``Response`` with
``finish_reason: "error"``, keeping whatever partial answer arrived; §7 calls
such a reply transient. Returned as it is, the partial answer would be
written into the graph's state as if it were complete. This call-level layer
raises :class:`~openarmature_nodes.llm.errors.ProviderDegradedResponse`
(category ``provider_unavailable``, transient, carrying the degraded
``response``) instead, so the retry layer outside it tries again and, when
attempts run out, the caller gets the error, not half an answer::

    onion = [SpanMiddleware(p), RetryMiddleware(), DegradedResponseMiddleware()]

It is in :func:`~openarmature_nodes.nodes.llm_node.default_onion`, innermost;
opt out with ``default_onion(provider, degraded=False)`` to receive degraded
replies as ``Response`` objects.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from openarmature_nodes.llm.errors import ProviderDegradedResponse
from openarmature_nodes.llm.response import Response

__all__ = ["DegradedResponseMiddleware"]

_log = logging.getLogger("openarmature_nodes.middleware.degraded")


class DegradedResponseMiddleware:
    """Raise ``ProviderDegradedResponse`` for a reply with ``finish_reason == "error"``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DegradedResponseMiddleware()"

    async def __call__(self, value: Any, next: Callable[[Any], Awaitable[Any]], /) -> Any:
        response = await next(value)
        if isinstance(response, Response) and response.finish_reason == "error":
            _log.warning("degraded reply (finish_reason='error'); raising it as transient")
            raise ProviderDegradedResponse(
                "the reply ended with finish_reason='error' (an error event mid-stream or an "
                "unknown finish reason); its partial content is on .response",
                response=response,
            )
        return response
