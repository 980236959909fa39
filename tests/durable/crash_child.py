"""Child process of the SIGKILL crash test (``tests/durable/test_crash.py``).

``python crash_child.py DB COUNTS BACKEND BLOCK_AT [RESUME_ID]`` runs a 24-instance
fan-out (concurrency 4) on the SQLite checkpointer at ``DB``. Every instance body
appends its item to ``COUNTS`` (the endpoint's request log) before working.
With ``BLOCK_AT >= 0`` the instance of that index prints ``READY <invocation id>``
and then waits forever, so the parent can kill the process mid-run; with
``RESUME_ID`` it resumes that invocation and prints the final state as JSON.
"""

from __future__ import annotations

import json
import os
import sys

import anyio
import msgspec

from openarmature_nodes.graph import (
    END,
    GraphBuilder,
    SQLiteCheckpointer,
    State,
    current_invocation_id,
)

N = 24


class Item(State):
    item: int = 0
    out: int = 0


class Batch(State):
    items: list[int] = msgspec.field(default_factory=lambda: list(range(N)))
    results: list[int] = []


def build(db: str, counts: str, block_at: int) -> object:
    async def work(state: Item) -> dict[str, int]:
        fd = os.open(counts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{state.item}\n".encode())
        finally:
            os.close(fd)
        if state.item == block_at:
            print(f"READY {current_invocation_id()}", flush=True)
            await anyio.sleep_forever()
        await anyio.lowlevel.checkpoint()
        return {"out": state.item * state.item}

    one = (GraphBuilder(Item).add_node("work", work).add_edge("work", END).set_entry("work")
           .compile())
    return (
        GraphBuilder(Batch)
        .add_fan_out_node("enrich", one, items_field="items", item_field="item",
                          collect_field="out", target_field="results", concurrency=4)
        .add_edge("enrich", END)
        .set_entry("enrich")
        .with_checkpointer(SQLiteCheckpointer(db))
        .compile()
    )


async def main(db: str, counts: str, block_at: int, resume: str | None) -> None:
    graph = build(db, counts, block_at)
    if resume is None:
        final = await graph.invoke({})  # type: ignore[attr-defined]
    else:
        final = await graph.invoke(None, resume_invocation=resume)  # type: ignore[attr-defined]
    print(json.dumps(msgspec.to_builtins(final)), flush=True)


if __name__ == "__main__":
    db, counts, backend, block = sys.argv[1:5]
    resume_id = sys.argv[5] if len(sys.argv) > 5 else None
    anyio.run(main, db, counts, int(block), resume_id, backend=backend)
