"""No silent typos: a config mapping key that is not a RuntimeConfig field raises
``ProviderInvalidRequest`` before anything is sent, suggesting the near-miss;
graph state classes follow one stated rule at ``GraphBuilder()``; a State is
type-checked when constructed."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from openarmature_nodes.graph import END, GraphBuilder, State, StateValidationError, append
from openarmature_nodes.llm import (
    OpenAIProvider,
    ProviderInvalidRequest,
    RuntimeConfig,
    UserMessage,
)
from openarmature_nodes.nodes import LLMNode
from openarmature_nodes.testing import CHAT_PATH, EmbeddedServer

pytestmark = pytest.mark.anyio


async def test_a_config_typo_raises_the_suggestion_and_sends_nothing(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    with pytest.raises(ProviderInvalidRequest) as info:
        await provider.complete([UserMessage("hi")], config={"max_token": 5, "temprature": 0})
    text = str(info.value)
    assert "'max_token' (did you mean 'max_tokens'?)" in text
    assert "'temprature' (did you mean 'temperature'?)" in text
    assert "extras" in text
    assert info.value.category == "provider_invalid_request"
    assert server.counts[CHAT_PATH] == 0  # nothing was sent


async def test_unknown_keys_go_under_extras(
    server: EmbeddedServer, provider: OpenAIProvider
) -> None:
    with pytest.raises(ProviderInvalidRequest, match="'top_k' \\(not a RuntimeConfig field\\)"):
        await provider.complete([UserMessage("hi")], config={"top_k": 20})
    await provider.complete([UserMessage("hi")], config={"max_tokens": 5, "extras": {"top_k": 20}})
    body = server.requests[-1].json
    assert body["max_tokens"] == 5 and body["top_k"] == 20
    with pytest.raises(ProviderInvalidRequest, match="extras must be a mapping"):
        RuntimeConfig.from_mapping({"extras": ["top_k"]})


def test_an_llm_node_config_typo_fails_when_the_node_is_built() -> None:
    provider = OpenAIProvider("http://127.0.0.1:9", "m")
    with pytest.raises(ProviderInvalidRequest, match="did you mean 'max_tokens'"):
        LLMNode(provider, prompt=lambda s: [], update=lambda r: None, config={"max_token": 5})


class Count(State):
    count: int = 0
    log: Annotated[list[str], append] = []


def test_state_fields_are_type_checked_at_construction() -> None:
    with pytest.raises(StateValidationError, match=r"count='one' \(expected int\)"):
        Count(count="one")  # type: ignore[arg-type]
    with pytest.raises(StateValidationError, match="log"):
        Count(log=[1, 2])  # type: ignore[list-item]
    assert Count(count=2).count == 2


async def test_merges_still_check_updates_and_keep_the_state_valid() -> None:
    async def bad(state: Count) -> dict[str, Any]:
        return {"count": "two"}

    graph = GraphBuilder(Count).add_node("b", bad).add_edge("b", END).set_entry("b").compile()
    with pytest.raises(StateValidationError, match="count"):
        await graph.invoke(Count())


def test_a_plain_msgspec_struct_is_rejected_with_the_rule() -> None:
    class Plain(msgspec.Struct):
        count: int = 0

    with pytest.raises(TypeError, match=r"subclass of openarmature_nodes\.graph\.State") as info:
        GraphBuilder(Plain)  # type: ignore[type-var]
    assert "plain msgspec.Struct Plain" in str(info.value)
    with pytest.raises(TypeError, match="State"):
        GraphBuilder(dict)  # type: ignore[type-var]
