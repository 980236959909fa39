"""Structured extraction: typed ``msgspec.Struct`` output, validation, and re-ask.

::

    python examples/graphs/extraction.py                      # embedded endpoint
    python examples/graphs/extraction.py --backend trio
    python examples/graphs/extraction.py --base-url http://localhost:8000 --model MODEL

Three e-mails go through a two-node graph, concurrently: ``extract`` (an LLM
node whose reply must be a valid :class:`Contact`) then ``triage`` (a plain
node that picks a queue). The reply is validated by the provider's one
validator, length limits and the ``intent`` enum included; an invalid reply is
re-asked (the model's output goes back with our correction, at most
``--max-reasks`` times) before the node fails with ``structured_output_invalid``.
On the embedded endpoint the first reply to the invoice e-mail is deliberately
incomplete, so you can watch a re-ask happen.

How the schema reaches the model (``--structured``):

* ``native`` (default): ``response_format: json_schema`` (OpenAI, vLLM, SGLang);
* ``fallback``: the schema goes into the system prompt instead, for servers
  without ``json_schema`` support;
* ``json-object``: ``response_format: {"type": "json_object", "schema": ...}``,
  the non-standard form llama.cpp's server understands (it answers HTTP 500
  to ``json_schema``). The reply is validated here, the same way.
"""

from __future__ import annotations

import argparse
import re
from typing import Annotated, Any, Literal

import anyio
import msgspec
from _common import endpoint, make_parser, run, show

from openarmature_nodes.graph import END, GraphBuilder, GraphRuntimeError, State
from openarmature_nodes.llm import (
    CompletionRequest,
    OpenAIProvider,
    ProviderError,
    Response,
    RuntimeConfig,
    StructuredOutputInvalid,
    SystemMessage,
    UserMessage,
)
from openarmature_nodes.llm.wire.structured import schema_info
from openarmature_nodes.middleware import StructuredOutputMiddleware
from openarmature_nodes.nodes import LLMNode, default_onion
from openarmature_nodes.onion import Next
from openarmature_nodes.testing import ReceivedRequest, completion_body

Short = Annotated[str, msgspec.Meta(min_length=1, max_length=60)]


class Contact(msgspec.Struct):
    """Who wrote, and what they want."""

    name: Short
    email: Annotated[str, msgspec.Meta(pattern="^[^@ ]+@[^@ ]+$", max_length=80)]
    company: Short | None
    intent: Literal["meeting", "question", "complaint", "invoice", "other"]


class Mail(State, frozen=True, kw_only=True):
    text: str
    contact: Contact | None = None
    queue: str = ""


INSTRUCTIONS = (
    "Extract the sender of the e-mail as a JSON object with the keys name, email, company "
    "(null when not stated) and intent (one of meeting, question, complaint, invoice, other)."
)

MAILS = [
    "From: Ada Lovelace <ada@analytical.example>\nCompany: Analytical Engines Ltd\n\n"
    "Could we meet on Thursday to discuss the difference engine?",
    "From: Grace Hopper <grace@navy.example>\n\nI have a question about your COBOL compiler.",
    "From: Alan Turing <alan@bletchley.example>\nCompany: Bletchley Park\n\n"
    "Please find attached our invoice for March.",
]


def reask(error: StructuredOutputInvalid) -> str:
    """The correction sent back to the model (our words; the toolkit adds none)."""
    return (
        f"That reply was not valid: {error.error_message}. "
        "Answer again with only the JSON object, with every key present."
    )


# --- the embedded endpoint's script ------------------------------------------------------


def scripted_model(request: ReceivedRequest) -> Any:
    """A deterministic stand-in for a model: reads the e-mail with regular expressions.

    The first reply to the invoice e-mail lacks ``email`` and ``intent``, to
    show a re-ask; the corrected reply follows the re-ask.
    """
    body = request.json or {}
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    if not users or "From:" not in str(users[0].get("content")):
        return None
    text = str(users[0]["content"])
    found = re.search(r"From: (.+?) <(.+?)>", text)
    company = re.search(r"Company: (.+)", text)
    lowered = text.lower()
    keywords = {"invoice": "invoice", "meet": "meeting", "question": "question",
                "complain": "complaint"}
    intent = next((v for k, v in keywords.items() if k in lowered), "other")
    contact: dict[str, Any] = {
        "name": found.group(1) if found else "unknown",
        "email": found.group(2) if found else "unknown@unknown",
        "company": company.group(1).strip() if company else None,
        "intent": intent,
    }
    if intent == "invoice" and len(users) == 1:  # first attempt: leave keys out
        contact = {"name": contact["name"], "company": contact["company"]}
    return completion_body(msgspec.json.encode(contact).decode(), model=body.get("model", ""))


# --- the graph -----------------------------------------------------------------------------


class CountCalls:
    """A call-level middleware that counts completions. Placed innermost, it sees
    every request the re-ask layer sends."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(
        self, request: CompletionRequest, next: Next[CompletionRequest, Response]
    ) -> Response:
        self.calls += 1
        return await next(request)


def triage(state: Mail) -> dict[str, Any]:
    assert state.contact is not None
    queue = {"invoice": "accounting", "complaint": "support", "question": "support"}
    return {"queue": queue.get(state.contact.intent, "sales")}


async def main(args: argparse.Namespace) -> int:
    fallback = args.structured == "fallback"
    async with endpoint(args, script=scripted_model) as ep, OpenAIProvider(
        ep.base_url, ep.model, api_key=ep.api_key, force_prompt_augmentation_fallback=fallback
    ) as provider:
        counter = CountCalls()
        json_object = args.structured == "json-object"
        structured = StructuredOutputMiddleware(
            Contact if json_object else None,  # None: enforce the request's response_schema
            send_schema=not json_object,
            reask=reask,
            max_reasks=args.max_reasks,
        )
        extras: dict[str, Any] = {}
        if json_object:
            wire = schema_info(Contact).wire_schema
            extras["response_format"] = {"type": "json_object", "schema": wire}

        extract: LLMNode[Mail] = LLMNode(
            provider,
            lambda s: [SystemMessage(content=INSTRUCTIONS), UserMessage(content=s.text)],
            lambda r: {"contact": r.parsed},
            response_schema=None if json_object else Contact,
            config=RuntimeConfig(max_tokens=args.max_tokens, temperature=0.0, extras=extras),
            middleware=[*default_onion(provider, structured=structured), counter],
        )

        async def triage_node(state: Mail) -> dict[str, Any]:
            return triage(state)

        graph = (
            GraphBuilder(Mail)
            .add_node("extract", extract)
            .add_node("triage", triage_node)
            .add_edge("extract", "triage")
            .add_edge("triage", END)
            .set_entry("extract")
            .compile()
        )

        print(f"model {ep.model!r} at {ep.base_url}, structured output: {args.structured}")
        results: list[Mail | BaseException | None] = [None] * len(MAILS)

        async def one(i: int, text: str) -> None:
            try:
                results[i] = await graph.invoke(Mail(text=text))
            except GraphRuntimeError as exc:
                if not isinstance(exc.__cause__, ProviderError):
                    raise
                results[i] = exc.__cause__

        async with anyio.create_task_group() as tg:
            for i, text in enumerate(MAILS):
                tg.start_soon(one, i, text)

        failures = 0
        for text, result in zip(MAILS, results, strict=True):
            print(f"- {show(text, 70)}")
            if isinstance(result, Mail) and result.contact is not None:
                c = result.contact
                print(f"    {c.name} <{c.email}> company={c.company!r} intent={c.intent} "
                      f"-> queue {result.queue}")
            else:
                failures += 1
                assert isinstance(result, ProviderError)
                print(f"    failed: {result.category}: {show(result.message, 160)}")
        reasks = counter.calls - len(MAILS)
        print(f"{len(MAILS) - failures}/{len(MAILS)} extracted; {counter.calls} completions "
              f"(re-asks: {max(reasks, 0)})")
    return 0


def parse_args() -> argparse.Namespace:
    parser = make_parser("Structured extraction into a msgspec.Struct, with validation and re-ask.")
    parser.add_argument("--structured", choices=("native", "fallback", "json-object"),
                        default="native", help="how the schema reaches the model (see the docs)")
    parser.add_argument("--max-reasks", type=int, default=2, help="re-asks per e-mail")
    parser.add_argument("--max-tokens", type=int, default=160, help="max_tokens per completion")
    return parser.parse_args()


if __name__ == "__main__":
    run(main, parse_args())
