"""The public surface stays small and consistent (issue 10, item 8)."""

from __future__ import annotations

import inspect

import pytest

import openarmature_nodes.graph as graph
import openarmature_nodes.graph.lowlevel as lowlevel
import openarmature_nodes.llm as llm
from openarmature_nodes.llm.provider import OpenAIProvider
from openarmature_nodes.llm.transport import FastTransport, HttpxTransport
from openarmature_nodes.retrying import RetryConfig


def test_complete_takes_every_option_after_messages_by_keyword() -> None:
    params = list(inspect.signature(OpenAIProvider.complete).parameters.values())
    assert [p.name for p in params[:2]] == ["self", "messages"]
    assert all(p.kind is p.KEYWORD_ONLY for p in params[2:])
    retry = inspect.signature(OpenAIProvider.complete, eval_str=True).parameters["retry"]
    assert retry.annotation == RetryConfig | None


def test_both_transports_are_exported_side_by_side() -> None:
    assert llm.FastTransport is FastTransport
    assert llm.HttpxTransport is HttpxTransport
    assert {"FastTransport", "HttpxTransport"} <= set(llm.__all__)


@pytest.mark.anyio
@pytest.mark.parametrize("make", [FastTransport, HttpxTransport])
async def test_transports_close_on_leaving_async_with(make: type) -> None:
    async with make() as transport:
        assert isinstance(transport, make)
    with pytest.raises(Exception, match="closed"):
        await transport.request("GET", "http://127.0.0.1:9/", [], None)


def test_graph_exports_what_users_build_graphs_with() -> None:
    assert len(graph.__all__) <= 60
    for name in graph.__all__:
        assert hasattr(graph, name), name
    engine_internals = {"Level", "Step", "Inner", "NodeKind", "FunctionNode", "SubgraphNode",
                        "Schema", "FieldSpec", "schema_of", "Subscription", "subscribe"}
    assert not engine_internals & set(graph.__all__)
    assert engine_internals == set(lowlevel.__all__)
    # The run context has one home, not two.
    for name in ("Lineage", "NodeLineage", "current_lineage", "emit_framework_event", "compose"):
        assert not hasattr(graph, name), name
