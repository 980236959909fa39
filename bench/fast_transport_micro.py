#!/usr/bin/env python3
"""Microbenchmark: client CPU per request, FastTransport vs raw httpx.

Each (client, loop, concurrency) runs in a fresh child process pinned to CPU 0
(the stub is pinned to the last CPU by stub-server.sh): warm up, then time N
POSTs of a chat-completion body and report ``time.process_time()`` per
request (user + sys CPU of the client process), plus calls/s (wall clock).
Medians over ``--repeats`` runs.

Both clients do the same work per call: encode the JSON request, POST it,
decode the JSON reply and take ``choices[0].message.content``.
- ``fast``: ``FastTransport.request`` + msgspec encode/decode (what the
  provider does with this transport);
- ``httpx``: a default ``httpx.AsyncClient`` ``post(json=...)`` + ``.json()``.
Optional (``--clients``): ``floor`` (a bare anyio stream + httptools + msgspec
loop with no pool, timeouts or checks: the floor of issue 7),
``provider-fast`` / ``provider-httpx``, our
``OpenAIProvider.complete()`` on each transport.

The stub: the nginx stub of ``/work/shared/bench/`` (``stub-server.sh``, port
18080) if nginx exists; started here and stopped at the end only if it was not
already running. Without nginx, a minimal keep-alive stub in a child process
(``--serve``), which is slower than nginx (the numbers are then noisier).

Usage: .venv/bin/python bench/fast_transport_micro.py [--n 3000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED_STUB = Path(os.environ.get("SHARED_BENCH", "/work/shared/bench")) / "stub-server.sh"
PORT = int(os.environ.get("MICRO_PORT", "18080"))
URL = f"http://127.0.0.1:{PORT}/v1/chat/completions"
BODY = {
    "model": "bench-model",
    "messages": [
        {"role": "system", "content": "You are a terse assistant used for benchmarking."},
        {
            "role": "user",
            "content": "Summarise the benefits of connection pooling in one sentence.",
        },
    ],
    "temperature": 0,
    "max_tokens": 64,
}
REPLY = (
    b'{"id":"chatcmpl-bench0000000000000000000001","object":"chat.completion",'
    b'"created":1700000000,"model":"bench-model","choices":[{"index":0,"message":'
    b'{"role":"assistant","content":"The quick brown fox jumps over the lazy dog."},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":38,'
    b'"total_tokens":80}}'
)
EXPECT = "The quick brown fox"


# ----------------------------------------------------------------------------- clients
def make_fast():
    import msgspec

    sys.path.insert(0, str(ROOT))
    from openarmature_nodes.llm.transport.fast import FastTransport

    transport = FastTransport()
    headers = [("Content-Type", "application/json"), ("Authorization", "Bearer sk-bench")]
    encode, decode = msgspec.json.Encoder().encode, msgspec.json.Decoder().decode

    async def call() -> str:
        r = await transport.request("POST", URL, headers, encode(BODY))
        if r.status != 200:
            raise RuntimeError(f"status {r.status}")
        return decode(r.body)["choices"][0]["message"]["content"]

    return call, transport.aclose


def make_floor():
    """The floor: a bare loop of anyio streams + httptools + msgspec, no pool
    logic, no timeouts, no validation (what issue 7 calls the floor)."""
    import anyio
    import httptools
    import msgspec

    encode, decode = msgspec.json.Encoder().encode, msgspec.json.Decoder().decode
    host, port = "127.0.0.1", PORT
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer sk-bench\r\n" % port
    )
    idle: list = []

    class Reader:
        def __init__(self) -> None:
            self.body: list[bytes] = []
            self.done = False
            self.parser = httptools.HttpResponseParser(self)

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            self.done = True

    async def call() -> str:
        if idle:
            stream, reader = idle.pop()
        else:
            stream = await anyio.connect_tcp(host, port)
            reader = Reader()
        body = encode(BODY)
        await stream.send(b"".join((head, b"Content-Length: %d\r\n\r\n" % len(body), body)))
        reader.done, reader.body = False, []
        while not reader.done:
            reader.parser.feed_data(await stream.receive())
        idle.append((stream, reader))
        return decode(b"".join(reader.body))["choices"][0]["message"]["content"]

    async def close() -> None:
        for stream, _ in idle:
            await stream.aclose()

    return call, close


def make_httpx():
    import httpx

    client = httpx.AsyncClient(timeout=60.0, headers={"Authorization": "Bearer sk-bench"})

    async def call() -> str:
        r = await client.post(URL, json=BODY)
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"]

    return call, client.aclose


def make_provider(transport: str):
    sys.path.insert(0, str(ROOT))
    from openarmature_nodes.llm import OpenAIProvider, RuntimeConfig, SystemMessage, UserMessage

    kwargs = {}
    if transport == "fast":
        from openarmature_nodes.llm.transport.fast import FastTransport

        kwargs["transport"] = FastTransport()
    base = URL.removesuffix("/v1/chat/completions")
    provider = OpenAIProvider(base, "bench-model", api_key="sk-bench", **kwargs)
    messages = [
        SystemMessage(m["content"]) if m["role"] == "system" else UserMessage(m["content"])
        for m in BODY["messages"]
    ]
    config = RuntimeConfig(temperature=0, max_tokens=64)

    async def call() -> str:
        return (await provider.complete(messages, config=config)).message.content

    return call, provider.aclose


CLIENTS = {
    "floor": make_floor,
    "fast": make_fast,
    "httpx": make_httpx,
    # Our whole provider (request encoding, response decoding) on each transport.
    "provider-fast": lambda: make_provider("fast"),
    "provider-httpx": lambda: make_provider("httpx"),
}


def child(client: str, backend: str, n: int, c: int, warmup: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})
    import anyio

    call, close = CLIENTS[client]()

    async def drive(count: int) -> None:
        left = [count]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                content = await call()
                if not content.startswith(EXPECT):
                    raise RuntimeError(f"bad reply {content!r}")

        async with anyio.create_task_group() as tg:
            for _ in range(c):
                tg.start_soon(worker)

    async def main() -> dict[str, float]:
        await drive(warmup)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await drive(n)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        await close()
        return {"cpu_us": (cpu1 - cpu0) / n * 1e6, "calls_per_s": n / (wall1 - wall0)}

    print(json.dumps(anyio.run(main, backend=backend)))


# ----------------------------------------------------------------------------- fallback stub
def serve() -> None:
    """A minimal HTTP/1.1 keep-alive server answering every request with REPLY."""
    import asyncio

    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    response = head % len(REPLY) + REPLY

    class Stub(asyncio.Protocol):
        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            self.transport, self.buf = transport, b""

        def data_received(self, data):  # type: ignore[no-untyped-def]
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                length = 0
                for line in self.buf[:end].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(self.buf) < end + 4 + length:
                    return
                self.buf = self.buf[end + 4 + length :]
                self.transport.write(response)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Stub, "127.0.0.1", PORT)
        print("ready", flush=True)
        await server.serve_forever()

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {os.cpu_count() - 1})
    asyncio.run(main())


def stub_up() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v1/models", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def start_stub() -> tuple[str, subprocess.Popen[bytes] | None]:
    """Returns (how, process): how is 'running', 'nginx' (we started it) or 'python'."""
    if stub_up():
        return "running", None
    if SHARED_STUB.exists() and subprocess.run(["bash", str(SHARED_STUB), "start"]).returncode == 0:
        return "nginx", None
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    return "python", proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--clients", default="fast,httpx")
    ap.add_argument("--backends", default="asyncio,trio")
    ap.add_argument("--child")
    ap.add_argument("--backend", default="asyncio")
    ap.add_argument("--c", type=int, default=1)
    ap.add_argument("--serve", action="store_true")
    a = ap.parse_args()
    if a.serve:
        return serve()
    if a.child:
        return child(a.child, a.backend, a.n, a.c, a.warmup)

    how, proc = start_stub()
    print(f"stub: {how} on port {PORT}; N={a.n} per run, medians of {a.repeats}\n")
    rows = []
    try:
        for c in (int(x) for x in a.concurrency.split(",")):
            for backend in a.backends.split(","):
                for client in a.clients.split(","):
                    runs = []
                    for _ in range(a.repeats):
                        cmd = [
                            sys.executable,
                            __file__,
                            "--child",
                            client,
                            "--backend",
                            backend,
                            "--c",
                            str(c),
                            "--n",
                            str(a.n),
                            "--warmup",
                            str(a.warmup),
                        ]
                        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                        if out.returncode != 0:
                            raise SystemExit(f"{client}/{backend}/c={c} failed:\n{out.stderr}")
                        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                    cpu = statistics.median(r["cpu_us"] for r in runs)
                    rate = statistics.median(r["calls_per_s"] for r in runs)
                    cpus = [r["cpu_us"] for r in runs]
                    spread = f"{min(cpus):.0f}-{max(cpus):.0f}"
                    rows.append((c, backend, client, cpu, spread, rate))
                    print(
                        f"c={c:<3} {backend:8s} {client:6s} {cpu:8.1f} CPU us/call "
                        f"[{spread}]  {rate:8.0f} calls/s",
                        flush=True,
                    )
    finally:
        if how == "nginx":
            subprocess.run(["bash", str(SHARED_STUB), "stop"], check=False)
        elif proc is not None:
            proc.terminate()
            proc.wait()

    print("\n| concurrency | loop | client | CPU µs/call [min-max] | calls/s | CPU vs httpx |")
    print("|---|---|---|---|---|---|")
    base = {(c, b): cpu for c, b, cl, cpu, _, _ in rows if cl == "httpx"}
    for c, backend, client, cpu, spread, rate in rows:
        ratio = f"{cpu / base[(c, backend)]:.2f}" if (c, backend) in base else "-"
        print(f"| {c} | {backend} | {client} | {cpu:.1f} [{spread}] | {rate:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
