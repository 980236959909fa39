#!/usr/bin/env python3
"""A tiny loopback HTTP/1.1 keep-alive server that answers every POST after a fixed delay.

Used by memory_bench.py (nginx's stub answers at once, so 1,000 calls would never be in flight
together). It runs in its own process so its memory never counts against the client under test.
``GET /stats`` returns ``{"max_in_flight": N, "served": M}`` and resets the high-water mark, so
the bench can prove the calls really overlapped on the wire.

``GET /stats?hold=N`` also closes a gate for the next burst: requests are held (not yet
answered) until N of them are in flight at once, then each is answered ``delay`` after the gate
opened; later requests are answered ``delay`` after they arrive, as usual. With 10,000 calls the
client needs longer than the 300 ms delay just to send them all, so without the gate the first
answers go out before the last requests arrive and fewer than N are ever held together. The gate
opens anyway after ``--hold-timeout`` seconds (the high-water mark then shows the shortfall).

    python _delay_server.py --delay 0.3   # prints "PORT <n>" once listening on 127.0.0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource

BODY = (
    b'{"id":"chatcmpl-delay","object":"chat.completion","created":1700000000,'
    b'"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"The quick brown fox jumps over the lazy dog."},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":42,"completion_tokens":10,"total_tokens":52}}'
)
OK = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


class Stats:
    in_flight = 0
    max_in_flight = 0
    served = 0
    hold = 0  # the gate: held until this many are in flight (0: no gate)
    gate = 0  # which gate (one per /stats?hold=N), so a stale timeout cannot open a later one
    parked: list[Conn] = []
    hold_timeout = 60.0


def open_gate() -> None:
    parked, Stats.parked, Stats.hold = Stats.parked, [], 0
    loop = asyncio.get_running_loop()
    for conn in parked:
        loop.call_later(conn.delay, conn.answer)


class Conn(asyncio.Protocol):
    """Parses just enough HTTP/1.1 (head + content-length body) for the bench's requests."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            if head.startswith("GET /stats"):
                body = json.dumps(
                    {"max_in_flight": Stats.max_in_flight, "served": Stats.served}
                ).encode()
                Stats.max_in_flight = Stats.in_flight
                target = head.split(" ", 2)[1]
                if "?hold=" in target:
                    if Stats.parked:
                        open_gate()
                    Stats.hold = int(target.split("?hold=", 1)[1])
                    Stats.gate += 1
                assert self.transport is not None
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            else:
                Stats.in_flight += 1
                Stats.max_in_flight = max(Stats.max_in_flight, Stats.in_flight)
                loop = asyncio.get_running_loop()
                if not Stats.hold:
                    loop.call_later(self.delay, self.answer)
                    continue
                if not Stats.parked:
                    loop.call_later(Stats.hold_timeout, _gate_timeout, Stats.gate)
                Stats.parked.append(self)
                if Stats.in_flight >= Stats.hold:
                    open_gate()

    def answer(self) -> None:
        Stats.in_flight -= 1
        Stats.served += 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(OK)


def _gate_timeout(gate: int) -> None:
    if Stats.gate == gate and Stats.parked:
        open_gate()


async def main(delay: float, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(delay), "127.0.0.1", port, backlog=65535)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=0.3)
    ap.add_argument("--port", type=int, default=0, help="0: any free port")
    ap.add_argument("--hold-timeout", type=float, default=60.0)
    a = ap.parse_args()
    Stats.hold_timeout = a.hold_timeout
    # One socket per in-flight request: 10,000 in flight need more than the usual 1,024 files.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if (
        hasattr(os, "sched_setaffinity")
        and (os.cpu_count() or 1) >= 2
        and not os.environ.get("BENCH_NO_PIN")
    ):
        os.sched_setaffinity(0, {(os.cpu_count() or 2) - 1})
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(a.delay, a.port))
