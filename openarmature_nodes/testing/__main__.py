"""Run the embedded server on its own: ``python -m openarmature_nodes.testing``.

For poking at it with curl, or for driving it from another process (a benchmark
that must not share its event loop with the client)::

    python -m openarmature_nodes.testing --port 8000 --latency 0.05 --backend trio

It prints ``BASE_URL=http://127.0.0.1:PORT`` once listening and serves until
interrupted. A development and test aid, not a production server.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import anyio

from .server import EmbeddedServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openarmature_nodes.testing")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--model", default="embedded-model")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)

    async def serve() -> None:
        async with EmbeddedServer(
            args.model, args.api_key, latency=args.latency, host=args.host, port=args.port
        ) as srv:
            print(f"BASE_URL={srv.base_url}", flush=True)
            await anyio.sleep_forever()

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve, backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
