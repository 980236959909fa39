"""Is the model ready for traffic? A walk-through for vLLM (and any OpenAI-compatible server).

::

    python examples/graphs/readiness.py                       # embedded endpoint
    python examples/graphs/readiness.py --base-url http://localhost:8000 --model MODEL

Three steps, each timed, then a tour of what failure looks like:

1. ``provider.ready()``: one ``GET /v1/models``. It proves the server is
   reachable, accepts our credentials and lists the model. It cannot prove the
   model is warm: vLLM reports no load state there.
2. The warm-up gate: ``ready()`` plus a one-token completion, run once however
   many callers arrive, polled while the model is still loading. After it, the
   gate costs nothing per call. This is the step that tells warm from cold.
3. A first real call, with its latency, finish reason and token usage.

Then each error category is provoked safely against the same endpoint (a
model name that does not exist, a wrong key, a closed port and, on the
embedded endpoint, a model that is still loading) and explained.

vLLM notes: ``vllm serve`` opens its port only after loading the weights, so
during start-up you see ``provider_unavailable`` (connection refused), which
the gate polls through; ``--api-key`` on the server turns on bearer auth;
``--served-model-name`` sets the model id that ``--model`` must match here.
The same checks as one command: ``python -m openarmature_nodes probe --base-url URL
--model NAME --warm-up``.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Awaitable, Callable

from _common import endpoint, make_parser, run, show

from openarmature_nodes.llm import (
    TRANSIENT_CATEGORIES,
    OpenAIProvider,
    ProviderError,
    RuntimeConfig,
    UserMessage,
)
from openarmature_nodes.middleware import WarmupGate
from openarmature_nodes.retrying import constant_backoff
from openarmature_nodes.testing import MODELS_PATH, EmbeddedServer

MEANING = {
    "provider_unavailable": (
        "no usable answer: connection refused or reset, timeout, 5xx. During a vLLM start-up "
        "this is normal (the port opens after loading)",
        "wait and retry (retry middleware, warm-up gate); check host/port if it persists",
    ),
    "provider_authentication": (
        "401/403: the key is missing or wrong",
        "fix --api-key; retrying cannot help",
    ),
    "provider_invalid_model": (
        "the server does not serve that model id",
        "use an id from GET /v1/models (vLLM: --served-model-name)",
    ),
    "provider_model_not_loaded": (
        "the model is listed but still loading (LM Studio, llama.cpp router, a gateway)",
        "wait: the warm-up gate polls until loaded or its deadline",
    ),
    "provider_rate_limit": (
        "429: too many requests; Retry-After says how long to wait",
        "the retry middleware waits at least Retry-After; a cooldown shares it",
    ),
    "provider_invalid_request": (
        "the request was refused as malformed (checked before sending where possible)",
        "fix the request: messages, tools, config extras",
    ),
    "provider_invalid_response": (
        "the server answered 2xx with a body that is not a valid completion",
        "a server bug or a proxy in the way; not retried by default",
    ),
    "provider_unsupported_content_block": (
        "a content block this provider cannot send (e.g. an image to a text-only mapping)",
        "drop or convert the block",
    ),
    "structured_output_invalid": (
        "the reply does not match response_schema (or was cut off at max_tokens)",
        "raise max_tokens, simplify the schema, or re-ask (see extraction.py)",
    ),
}


async def timed(label: str, step: Callable[[], Awaitable[str]]) -> bool:
    """Run ``step``; print ok/FAIL with its duration and detail."""
    started = time.perf_counter()
    try:
        detail = await step()
    except ProviderError as exc:
        took = (time.perf_counter() - started) * 1000
        print(f"  FAIL {label:<12} {took:8.1f} ms  {exc.category}: {show(exc.message, 150)}")
        meaning, action = MEANING.get(exc.category, ("", ""))
        print(f"       means: {meaning}\n       do:    {action}")
        return False
    took = (time.perf_counter() - started) * 1000
    print(f"  ok   {label:<12} {took:8.1f} ms  {detail}")
    return True


async def provoke(label: str, attempt: Callable[[], Awaitable[object]]) -> None:
    """Run something that should fail; print the category it failed with."""
    try:
        await attempt()
    except ProviderError as exc:
        print(f"  {label:<34} -> {exc.category}: {show(exc.message, 110)}")
        return
    print(f"  {label:<34} -> no error (this server does not check it)")


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def auth_demo(model: str) -> None:
    """On a second embedded server that requires a key."""
    async with EmbeddedServer(model=model, api_key="the-right-key") as guarded, OpenAIProvider(
        guarded.base_url, model, api_key="wrong-key"
    ) as provider:
        await provoke("ready() with a wrong key (auth on)", provider.ready)


async def loading_demo(model: str) -> None:
    """On a second embedded server that reports 'loading' for its first 3 probes."""
    async with EmbeddedServer(model=model, slow_load=3) as loading, OpenAIProvider(
        loading.base_url, model
    ) as provider:
        await provoke("ready() while the model loads", provider.ready)
        gate = WarmupGate(provider, deadline=30.0, backoff=constant_backoff(0.05))
        started = time.perf_counter()
        await gate.open()
        took = (time.perf_counter() - started) * 1000
        print(f"  {'the warm-up gate polls through it':<34} -> open after "
              f"{loading.counts[MODELS_PATH]} probes, {took:.0f} ms")


async def main(args: argparse.Namespace) -> int:
    async with endpoint(args) as ep:
        print(f"readiness of model {ep.model!r} at {ep.base_url}")
        async with OpenAIProvider(ep.base_url, ep.model, api_key=ep.api_key) as provider:
            print("steps:")

            async def ready() -> str:
                await provider.ready()
                return "reachable, authorised, model listed (GET /v1/models)"

            gate = WarmupGate(provider, deadline=args.warmup_deadline)

            async def warm() -> str:
                await gate.open()
                return "ready() + a one-token completion answered: the model is warm"

            async def first_call() -> str:
                r = await provider.complete(
                    [UserMessage(content="Say hello in five words.")],
                    config=RuntimeConfig(max_tokens=args.max_tokens, temperature=0.0),
                )
                u = r.usage
                return (f"finish_reason={r.finish_reason}, tokens {u.prompt_tokens} prompt + "
                        f"{u.completion_tokens} completion: {show(r.message.content, 60)!r}")

            ok = (
                await timed("ready", ready)
                and await timed("warm-up", warm)
                and await timed("first call", first_call)
            )

        print("what failures look like here:")
        async with OpenAIProvider(ep.base_url, "no-such-model-0000") as wrong_model:
            await provoke("ready() for an unknown model id", wrong_model.ready)
        async with OpenAIProvider(ep.base_url, ep.model, api_key="wrong-key") as wrong_key:
            await provoke("ready() with a wrong API key", wrong_key.ready)
        nowhere = f"http://127.0.0.1:{closed_port()}"
        async with OpenAIProvider(nowhere, ep.model) as closed:
            await provoke("ready() against a closed port", closed.ready)
        if ep.embedded is not None:
            await auth_demo(ep.model)
            await loading_demo(ep.model)
        else:
            print("  (a model that is still loading is shown on the embedded endpoint only)")

        print("the error categories:")
        for category, (meaning, action) in MEANING.items():
            kind = "transient" if category in TRANSIENT_CATEGORIES else "permanent"
            print(f"  {category:<35} {kind:<9}  {meaning}")
            print(f"  {'':<35} {'':<9}  -> {action}")
    print("verdict: ready" if ok else "verdict: NOT ready")
    return 0 if ok else 1


def parse_args() -> argparse.Namespace:
    parser = make_parser("Readiness walk-through: ready, warm-up, first call, error categories.")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of the first call")
    parser.add_argument("--warmup-deadline", type=float, default=120.0,
                        help="seconds the gate polls a loading model")
    return parser.parse_args()


if __name__ == "__main__":
    run(main, parse_args())
