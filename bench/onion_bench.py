#!/usr/bin/env python3
"""Onion benchmark: what the full call-level middleware stack adds over a bare complete().

The onion (outermost first): SpanMiddleware, RetryMiddleware, WarmupGate,
StructuredOutputMiddleware(Answer), around ``provider.call``. Rows, all the same request
(system + user message, temperature 0, max_tokens 64), sequential calls:

  bare            provider.complete(msgs, config=cfg)                       no schema
  bare+schema     provider.complete(msgs, config=cfg, response_schema=Answer) provider validates
  +structured     [Structured(Answer)]                                       through compose()
  +warmup         [WarmupGate, Structured]
  +retry          [Retry, WarmupGate, Structured]
  onion           [Spans, Retry, WarmupGate, Structured]  OpenTelemetry API only: no-op spans
  onion+sdk       the same with an OTel SDK TracerProvider (BatchSpanProcessor, no-op exporter)

Transports: ``mem`` = an in-memory Transport that returns the canned reply at once (no sockets:
the difference between rows is exactly what the layers cost), ``stub`` = FastTransport against
the nginx stub's /structured endpoint (real sockets, noisier). Each (transport, loop) runs in a
fresh child; rows are interleaved in rotating order over --repeats rounds, medians reported.
CPU = ``time.process_time`` delta / N.

Usage: onion_bench.py [--n 3000] [--repeats 3] [--modes mem,stub] [--json F]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

ROWS = ["bare", "bare+schema", "+structured", "+warmup", "+retry", "onion", "onion+sdk"]
CONTENT = (
    '{"answer":"The quick brown fox jumps over the lazy dog.",'
    '"confidence":0.9,"tags":["pooling","latency"]}'
)


def reply_body() -> bytes:
    import msgspec

    return msgspec.json.encode(
        {
            "id": "chatcmpl-bench2",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "bench-model",
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": CONTENT, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 42, "completion_tokens": 24, "total_tokens": 66},
        }
    )


class MemTransport:
    """A Transport that answers every request at once from memory."""

    def __init__(self) -> None:
        from openarmature_nodes.llm.transport import RawResponse

        hdrs = {"content-type": "application/json"}
        self.chat = RawResponse(200, hdrs, reply_body())
        self.models = RawResponse(
            200, hdrs, b'{"object":"list","data":[{"id":"bench-model","object":"model"}]}'
        )

    async def request(self, method: str, url: str, headers: Any, body: bytes | None) -> Any:
        return self.chat if method == "POST" else self.models

    async def aclose(self) -> None:
        return None


def build_rows(mode: str) -> tuple[dict[str, Any], Any]:
    """Return ({row: call}, close)."""
    import msgspec

    try:
        from openarmature_nodes import llm
        from openarmature_nodes.llm.request import CompletionRequest
        from openarmature_nodes.middleware import (
            RetryMiddleware,
            SpanMiddleware,
            StructuredOutputMiddleware,
            WarmupGate,
            compose,
        )
    except ImportError as e:
        raise C.Skip(f"middleware pieces not importable yet ({e})") from None

    class Answer(msgspec.Struct):
        answer: str
        confidence: float
        tags: list[str]

    if mode == "mem":
        transport: Any = MemTransport()
        url = "http://bench.invalid"
    else:
        try:
            from openarmature_nodes.llm.transport.fast import FastTransport
        except ImportError as e:
            raise C.Skip(f"FastTransport not available ({e})") from None
        transport = FastTransport()
        url = C.STUB_URL + "/structured"
    p = llm.OpenAIProvider(url, "bench-model", api_key=C.API_KEY, transport=transport)
    msgs = [llm.SystemMessage(content=C.SYSTEM), llm.UserMessage(content=C.USER)]
    cfg = llm.RuntimeConfig(temperature=0, max_tokens=64)
    req = CompletionRequest(messages=msgs, config=cfg)

    async def bare() -> Any:
        r = await p.complete(msgs, config=cfg)
        assert r.message.content.startswith('{"answer"')
        return r

    async def bare_schema() -> Any:
        r = await p.complete(msgs, config=cfg, response_schema=Answer)
        assert isinstance(r.parsed, Answer)
        return r

    def via(layers: list[Any]) -> Any:
        fn = compose(layers, p.call)

        async def call() -> Any:
            r = await fn(req)
            assert isinstance(r.parsed, Answer)
            return r

        return call

    def structured() -> Any:
        return StructuredOutputMiddleware(Answer)

    gate = WarmupGate(p)
    rows: dict[str, Any] = {
        "bare": bare,
        "bare+schema": bare_schema,
        "+structured": via([structured()]),
        "+warmup": via([gate, structured()]),
        "+retry": via([RetryMiddleware(), gate, structured()]),
        "onion": via([SpanMiddleware(p), RetryMiddleware(), gate, structured()]),
    }
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class NullExporter(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        tp = TracerProvider()
        tp.add_span_processor(BatchSpanProcessor(NullExporter()))
        rows["onion+sdk"] = via(
            [SpanMiddleware(p, tracer_provider=tp), RetryMiddleware(), gate, structured()]
        )
    except ImportError:
        tp = None

    async def close() -> None:
        await p.aclose()
        if tp is not None:
            tp.shutdown()

    return rows, close


def child(a: argparse.Namespace) -> None:
    C.pin_cpu0()
    res: dict[str, Any] = {"mode": a.mode, "backend": a.backend, "n": a.n}
    try:
        rows, close = build_rows(a.mode)
    except C.Skip as e:
        C.emit({**res, "skipped": str(e)})
        return
    samples: dict[str, list[float]] = {k: [] for k in rows}

    async def main() -> None:
        for call in rows.values():
            for _ in range(200):
                await call()
        names = list(rows)
        for rnd in range(a.repeats):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for name in order:
                call = rows[name]
                cpu0 = time.process_time()
                for _ in range(a.n):
                    await call()
                samples[name].append((time.process_time() - cpu0) / a.n * 1e6)
        await close()

    C.run_loop(a.backend, main)
    res["us"] = {k: statistics.median(v) for k, v in samples.items()}
    res["range"] = {k: [min(v), max(v)] for k, v in samples.items()}
    res["rss_mb"] = C.peak_rss_mb()
    C.emit(res)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="mem,stub")
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--json")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--mode", default="mem", choices=["mem", "stub"])
    ap.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    a = ap.parse_args()
    if a.child:
        return child(a)
    runs = []
    for mode in a.modes.split(","):
        for be in ("asyncio", "trio"):
            r = C.run_child(
                __file__,
                [
                    "--child",
                    "--mode",
                    mode,
                    "--backend",
                    be,
                    "--n",
                    str(a.n),
                    "--repeats",
                    str(a.repeats),
                ],
                a.timeout,
            )
            r.update(mode=mode, backend=be)
            runs.append(r)
            print(
                f"  {mode:4s} {be:7s} {r.get('us') or r.get('skipped') or r.get('error')}",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"## Call-level middleware onion over a bare complete() (sequential, N={a.n} per round, "
        f"medians of {a.repeats} rounds)\n"
    )
    body, notes = [], []
    for r in runs:
        if "us" not in r:
            notes.append(f"- {r['mode']} / {r['backend']}: {r.get('skipped') or r.get('error')}")
            continue
        us, rng = r["us"], r["range"]
        for name in ROWS:
            if name not in us:
                continue
            body.append(
                [
                    r["mode"],
                    r["backend"],
                    name,
                    C.fmt(us[name], 1),
                    f"{rng[name][0]:.1f}-{rng[name][1]:.1f}",
                    f"{us[name] - us['bare']:+.1f}",
                    f"{us[name] - us['bare+schema']:+.1f}",
                ]
            )
    headers = ["transport", "loop", "row", "CPU µs/call", "[min-max]", "Δ vs bare µs"]
    print(C.table([*headers, "Δ vs bare+schema µs"], body) if body else "No rows measured.")
    print(
        "\n`mem`: in-memory transport (no sockets: Δ is exactly the layers' cost);"
        " `stub`: FastTransport to nginx.\n"
        "`onion` = spans (OTel API, no SDK) + retry + warm-up gate"
        " + structured validation; "
        "`onion+sdk` = the same with an OTel SDK TracerProvider recording every span."
    )
    if notes:
        print("\nSkipped / failed:\n" + "\n".join(notes))
    C.save_json(a.json, {"n": a.n, "repeats": a.repeats, "runs": runs})


if __name__ == "__main__":
    main()
