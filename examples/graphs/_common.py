"""What every example in this directory shares: the command line and the endpoint.

Every example takes the same options, each with a default from the environment:

=================  ==========================================  =====================
option             environment variable                        default
=================  ==========================================  =====================
``--base-url``     ``OPENARMATURE_BASE_URL``                   the embedded endpoint
``--model``        ``OPENARMATURE_MODEL``                      ``embedded-model``
``--api-key``      ``OPENARMATURE_API_KEY``, ``OPENAI_API_KEY``  none (no auth header)
``--backend``      ``OPENARMATURE_BACKEND``                    ``asyncio``
=================  ==========================================  =====================

``--base-url`` is the server's root, without ``/v1`` (``http://localhost:8000``
for a default vLLM). Without one, the example starts the package's
:class:`~openarmature_nodes.testing.EmbeddedServer` in-process on a free
loopback port, says so, and shuts it down at the end: a scripted stand-in for a
model, so the example runs anywhere with nothing installed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from openarmature_nodes.graph import GraphRuntimeError
from openarmature_nodes.llm import (
    AssistantMessage,
    Message,
    ProviderError,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from openarmature_nodes.testing import EmbeddedServer

EMBEDDED_MODEL = "embedded-model"


def make_parser(description: str) -> argparse.ArgumentParser:
    """The shared options; an example adds its own before ``parse_args()``."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--base-url",
        default=env("OPENARMATURE_BASE_URL") or None,
        help="server root URL without /v1, e.g. http://localhost:8000 (env OPENARMATURE_BASE_URL;"
        " default: start the embedded test endpoint)",
    )
    parser.add_argument(
        "--model",
        default=env("OPENARMATURE_MODEL") or None,
        help=f"model id to request (env OPENARMATURE_MODEL; embedded: {EMBEDDED_MODEL})",
    )
    parser.add_argument(
        "--api-key",
        default=env("OPENARMATURE_API_KEY") or env("OPENAI_API_KEY") or None,
        help="bearer token (env OPENARMATURE_API_KEY, then OPENAI_API_KEY); never printed",
    )
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default=env("OPENARMATURE_BACKEND") or "asyncio",
        help="event loop to run on (env OPENARMATURE_BACKEND)",
    )
    return parser


@dataclass
class Endpoint:
    """Where the example sends its requests."""

    base_url: str
    model: str
    api_key: str | None
    embedded: EmbeddedServer | None  # set when we started the embedded endpoint


@asynccontextmanager
async def endpoint(
    args: argparse.Namespace, **embedded_options: Any
) -> AsyncIterator[Endpoint]:
    """Yield the endpoint named on the command line, or start the embedded one.

    ``embedded_options`` go to :class:`EmbeddedServer` (a ``script`` for
    deterministic replies, for example); they are ignored for a real server.
    """
    if args.base_url:
        if not args.model:
            raise SystemExit("--model (or OPENARMATURE_MODEL) is required with --base-url")
        yield Endpoint(args.base_url, args.model, args.api_key, None)
        return
    model = args.model or EMBEDDED_MODEL
    async with EmbeddedServer(model=model, **embedded_options) as server:
        print(
            f"[embedded endpoint] no --base-url given: serving a scripted OpenAI-compatible "
            f"endpoint at {server.base_url} (model {model!r}, a development aid, not a model)"
        )
        try:
            yield Endpoint(server.base_url, model, args.api_key, server)
        finally:
            print(f"[embedded endpoint] stopped after {sum(server.counts.values())} requests")


def run(main: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace) -> None:
    """Run ``main(args)`` on the chosen backend; exit with its status.

    A provider error (also when raised inside a graph node) is printed as
    ``error: <category>: <message>`` and exits with status 1; a base URL the
    provider refuses exits with status 2.
    """
    try:
        status = anyio.run(main, args, backend=args.backend)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (ProviderError, GraphRuntimeError) as exc:
        cause = exc if isinstance(exc, ProviderError) else exc.__cause__
        if isinstance(cause, ProviderError):
            print(f"error: {cause.category}: {cause.message}", file=sys.stderr)
        else:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status)


def show(text: object, width: int = 200) -> str:
    """One line of ``text``, shortened to ``width`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 3] + "..."


def print_conversation(messages: Sequence[Message], *, system: str | None = None) -> None:
    """Print a conversation, one turn per line (tool calls and results indented)."""
    if system:
        print(f"  system    | {show(system)}")
    for message in messages:
        if isinstance(message, SystemMessage):
            print(f"  system    | {show(message.content)}")
        elif isinstance(message, UserMessage):
            print(f"  user      | {show(message.content)}")
        elif isinstance(message, AssistantMessage):
            if message.content:
                print(f"  assistant | {show(message.content)}")
            for call in message.tool_calls or ():
                args = msgspec.json.encode(call.arguments).decode()
                print(f"  assistant | -> {call.name}({show(args, 120)})  [{call.id}]")
            if not message.content and not message.tool_calls:
                print("  assistant | (empty reply)")
        elif isinstance(message, ToolMessage):
            print(f"  tool      | <- {show(message.content)}  [{message.tool_call_id}]")
