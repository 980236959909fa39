#!/usr/bin/env python3
"""The stub's constant streamed reply: N ``chat.completion.chunk`` events, then ``[DONE]``.

``bench/stub.sh`` writes it (``_sse_body.py 256 > $STUB_DIR/sse/256.txt``) and nginx serves
it at ``/stream/v1/chat/completions`` as ``text/event-stream``; ``streaming_bench.py``
imports :data:`TOKENS` / :func:`text` to check every streamed reply. Each event carries one
content delta (the first also the role, the last the ``finish_reason``), shaped as OpenAI
and vLLM send them.
"""

from __future__ import annotations

import json
import sys

WORDS = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."]


def tokens(n: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(n)]


def text(n: int) -> str:
    """The whole answer the N events spell out."""
    return "".join(tokens(n))


def body(n: int) -> bytes:
    events = []
    for i, tok in enumerate(tokens(n)):
        delta: dict[str, str] = {"role": "assistant", "content": tok} if i == 0 else {
            "content": tok
        }
        chunk = {
            "id": "chatcmpl-bench-stream-0001",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "bench-model",
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": "stop" if i == n - 1 else None,
                }
            ],
        }
        events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


if __name__ == "__main__":
    sys.stdout.buffer.write(body(int(sys.argv[1]) if len(sys.argv) > 1 else 256))
