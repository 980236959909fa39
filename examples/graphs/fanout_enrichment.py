"""Fan-out enrichment: one LLM call per record, a concurrency bound, retry on 429.

::

    python examples/graphs/fanout_enrichment.py                     # embedded endpoint
    python examples/graphs/fanout_enrichment.py --backend trio --concurrency 2
    python examples/graphs/fanout_enrichment.py --base-url http://localhost:8000 --model MODEL

A list of product records goes through a fan-out node: each record runs, in
its own instance of a one-node subgraph, an :class:`~openarmature_nodes.nodes.LLMNode`
that writes a one-line tagline. At most ``--concurrency`` instances are in
flight at once; the taglines come back in the order of the records, whatever
order the calls finish in.

Failures, two layers:

* call level: the LLM node's onion retries transient failures and honours
  ``Retry-After``. On the embedded endpoint the first ``--rate-limited``
  chat requests are answered ``429`` with ``Retry-After: 1``; the example
  prints each wait and how long the call really waited before succeeding;
* instance level: a :class:`~openarmature_nodes.middleware.FailureIsolationMiddleware` in
  ``instance_middleware`` turns an instance that still fails (retries used
  up, or a non-transient error) into the tagline ``"(unavailable)"`` instead
  of failing the whole batch.
"""

from __future__ import annotations

import argparse
import time
from contextvars import ContextVar
from typing import Annotated, Any

import msgspec
from _common import endpoint, make_parser, run, show

from openarmature_nodes.graph import END, GraphBuilder, State, append
from openarmature_nodes.llm import (
    CompletionRequest,
    OpenAIProvider,
    ProviderError,
    Response,
    RuntimeConfig,
    SystemMessage,
    UserMessage,
)
from openarmature_nodes.middleware import FailureIsolationMiddleware, RetryMiddleware, WarmupGate
from openarmature_nodes.nodes import LLMNode, default_onion
from openarmature_nodes.onion import Next
from openarmature_nodes.retrying import RetryConfig
from openarmature_nodes.testing import ReceivedRequest, completion_body

RECORDS = [
    "Cast-iron skillet, 26 cm, pre-seasoned, oven safe to 260 C",
    "Merino wool hiking socks, cushioned sole, three pairs",
    "Noise-cancelling headphones, 30 h battery, foldable",
    "Stainless steel water bottle, 750 ml, keeps drinks cold 24 h",
    "Bamboo cutting board with juice groove, 45 x 30 cm",
    "LED desk lamp, dimmable, USB-C charging port",
    "Waterproof trail running shoes, reflective details",
    "French press coffee maker, 1 l, double-walled glass",
]

INSTRUCTIONS = "Write a catchy tagline of at most eight words for the product. Reply with it only."


class Product(State):
    """One fan-out instance: a record in, a tagline out."""

    record: str = ""
    tagline: str = ""


class Catalogue(State):
    records: list[str] = msgspec.field(default_factory=list)
    taglines: Annotated[list[str], append] = msgspec.field(default_factory=list)


# --- the embedded endpoint's script ---------------------------------------------------------------


def scripted_model(request: ReceivedRequest) -> Any:
    """A stand-in model: a tagline made from the record's first words."""
    messages = (request.json or {}).get("messages") or []
    record = str(messages[-1].get("content", "")) if messages else ""
    words = record.split(",")[0].split()
    return completion_body(f"{' '.join(words[:4])}: made to last.")


# --- watching retries -----------------------------------------------------------------------------

_waits: ContextVar[list[tuple[float, float | None]] | None] = ContextVar("waits", default=None)


async def note_retry(exc: Exception, attempt: int) -> None:
    """``on_retry``: remember when the call was told to back off, and for how long."""
    waits = _waits.get()
    if waits is not None:
        waits.append((time.monotonic(), getattr(exc, "retry_after", None)))


async def report_waits(
    request: CompletionRequest, nxt: Next[CompletionRequest, Response]
) -> Response:
    """Outermost call layer: print each Retry-After this call met and how long it waited."""
    waits: list[tuple[float, float | None]] = []
    token = _waits.set(waits)
    try:
        response = await nxt(request)
    finally:
        _waits.reset(token)
    if waits:
        record = show(request.messages[-1].content, 40)
        asked = ", ".join(f"{after:g} s" for _, after in waits if after is not None) or "none"
        waited = time.monotonic() - waits[0][0]
        print(f"  [retry] {record}: 429 x{len(waits)} (Retry-After {asked}); "
              f"succeeded {waited:.2f} s after the first 429")
    return response


# --- the graph ------------------------------------------------------------------------------------


def build(provider: OpenAIProvider, onion: list[Any], concurrency: int) -> Any:
    tagline = LLMNode(
        provider,
        prompt=lambda s: [SystemMessage(INSTRUCTIONS), UserMessage(s.record)],
        update=lambda r: {"tagline": (r.message.content or "").strip()},
        config=RuntimeConfig(max_tokens=32, temperature=0.7),
        middleware=onion,
    )
    per_record = (
        GraphBuilder(Product).add_node("tagline", tagline)
        .add_edge("tagline", END).set_entry("tagline").compile()
    )
    degrade = FailureIsolationMiddleware(
        degraded_update={"tagline": "(unavailable)"}, event_name="tagline_unavailable"
    )
    return (
        GraphBuilder(Catalogue)
        .add_fan_out_node(
            "enrich", per_record,
            items_field="records", item_field="record",      # one instance per record
            collect_field="tagline", target_field="taglines",  # collected in record order
            concurrency=concurrency,
            instance_middleware=[degrade],
        )
        .add_edge("enrich", END).set_entry("enrich").compile()
    )


async def main(args: argparse.Namespace) -> int:
    async with (
        endpoint(args, script=scripted_model) as ep,
        OpenAIProvider(ep.base_url, ep.model, api_key=ep.api_key) as provider,
    ):
        retry = RetryMiddleware(RetryConfig(max_attempts=args.attempts, on_retry=note_retry))
        onion = [report_waits, *default_onion(provider, retry=retry)]
        for layer in onion:  # warm the model up before the batch (and before any 429)
            if isinstance(layer, WarmupGate):
                await layer.open()
        if ep.embedded is not None and args.rate_limited:
            ep.embedded.rate_limit(args.rate_limited, retry_after=1.0)
            print(f"[embedded endpoint] the next {args.rate_limited} chat requests get 429 "
                  "with Retry-After: 1")
        graph = build(provider, onion, args.concurrency)
        records = RECORDS[: args.records]
        print(f"enriching {len(records)} records, at most {args.concurrency} calls at once, "
              f"on {args.backend}")
        began = time.monotonic()
        final = await graph.invoke(Catalogue(records=records))
        elapsed = time.monotonic() - began
    for record, line in zip(final.records, final.taglines, strict=True):
        print(f"  {show(record, 48):48} -> {line}")
    print(f"done in {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    parser = make_parser(__doc__.splitlines()[0] if __doc__ else "fan-out enrichment")
    parser.add_argument("--concurrency", type=int, default=3, help="calls in flight at most")
    parser.add_argument("--records", type=int, default=len(RECORDS), help="how many records")
    parser.add_argument("--attempts", type=int, default=4, help="attempts per call (retry)")
    parser.add_argument("--rate-limited", type=int, default=2,
                        help="embedded endpoint only: chat requests answered 429 first")
    try:
        run(main, parser.parse_args())
    except ProviderError as exc:  # pragma: no cover - run() already reports these
        raise SystemExit(str(exc)) from exc
