"""The ``async with`` shell of ``stream()``, shared by both transports.

``transport.stream(...)`` must not do anything yet (it is not awaited), so it
returns a :class:`StreamContext` holding the request; entering it opens the
response (each transport's :meth:`StreamContext._open`), and leaving it closes
the response, whatever happened in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Generic, Protocol, TypeVar

__all__ = ["StreamContext"]


class _Closable(Protocol):
    async def aclose(self) -> None: ...


OwnerT = TypeVar("OwnerT")
ResponseT = TypeVar("ResponseT", bound=_Closable)


class StreamContext(Generic[OwnerT, ResponseT]):
    """``async with`` one streamed request of ``owner`` (a transport)."""

    __slots__ = ("_args", "_owner", "_response")

    def __init__(
        self,
        owner: OwnerT,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> None:
        self._owner = owner
        self._args = (method, url, headers, body)
        self._response: ResponseT | None = None

    async def _open(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> ResponseT:
        """Send the request; return the response once its head has arrived."""
        raise NotImplementedError

    async def __aenter__(self) -> ResponseT:
        self._response = await self._open(*self._args)
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()
