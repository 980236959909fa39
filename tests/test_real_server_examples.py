"""Integration tests against a real llama.cpp server (``pytest -m real_server``).

The server: ``../shared/tools/real-llm-server.sh start 18188`` (Gemma 3 270M,
the *base* model: its text is junk, so these tests assert shapes, never
wording). ``$OPENARMATURE_REAL_LLM_URL`` points them elsewhere. When nothing
answers there, every test here skips with the reason.

The wrong-key tests need a second instance with auth on. The session starts
one on port 18189 through the same script (``LLM_SRV_API_KEY``) unless one is
already running, and stops it at the end only if it started it; when it cannot
start, those tests skip with the script's reason.

What llama.cpp's server does differently (see ``shared/tools/real-llm-server.md``)
and how our code copes is spelled out test by test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import msgspec
import pytest

from openarmature_nodes.graph import END, GraphBuilder, State
from openarmature_nodes.llm import (
    CompletionRequest,
    OpenAIProvider,
    ProviderAuthentication,
    ProviderInvalidModel,
    RuntimeConfig,
    StructuredOutputInvalid,
    SystemMessage,
    ToolChoiceForce,
    UserMessage,
)
from openarmature_nodes.llm.wire.structured import schema_info
from openarmature_nodes.middleware import StructuredOutputMiddleware, WarmupGate
from openarmature_nodes.nodes import LLMNode, build_agent, default_onion, tool
from tests.real_server import MODEL, URL, requires_real_server

pytestmark = [pytest.mark.anyio, *requires_real_server()]

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT.parent / "shared" / "tools" / "real-llm-server.sh"
EXAMPLES = ROOT / "examples" / "graphs"
AUTH_PORT = 18189
AUTH_URL = f"http://127.0.0.1:{AUTH_PORT}"
AUTH_KEY = "sk-openarmature-real-server-test"




class Person(msgspec.Struct):
    """Bounded, so llama.cpp's grammar always finishes it."""

    name: Annotated[str, msgspec.Meta(max_length=20)]
    age: Annotated[int, msgspec.Meta(ge=0, le=150)]


# The JSON Schema of Person, as llama.cpp's non-standard response_format wants it.
PERSON_JSON_OBJECT = {"type": "json_object", "schema": schema_info(Person).wire_schema}
ASK_PERSON = [
    SystemMessage(content="Reply with a JSON object with the keys name and age."),
    UserMessage(content="Ada Lovelace was 36."),
]


@pytest.fixture
async def provider() -> AsyncIterator[OpenAIProvider]:
    async with OpenAIProvider(URL, MODEL, genai_system="llama.cpp") as p:
        yield p


# --- the auth-enabled second instance -------------------------------------------------------


@pytest.fixture(scope="session")
def auth_server() -> Iterator[str]:
    """The base URL of an instance that requires ``AUTH_KEY``; skips if it cannot run."""
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} not found")
    status = subprocess.run(
        ["bash", str(SCRIPT), "status", str(AUTH_PORT)], capture_output=True, text=True, check=False
    )
    started_here = False
    if status.returncode != 0:
        env = {**os.environ, "LLM_SRV_API_KEY": AUTH_KEY}
        try:
            start = subprocess.run(
                ["bash", str(SCRIPT), "start", str(AUTH_PORT)],
                capture_output=True, text=True, env=env, timeout=600, check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"the auth instance on port {AUTH_PORT} did not start within 600 s")
        if start.returncode != 0:
            tail = " | ".join(start.stderr.strip().splitlines()[-3:])
            pytest.skip(f"cannot start the auth instance on port {AUTH_PORT}: {tail}")
        started_here = True
    try:
        probe = httpx.get(f"{AUTH_URL}/v1/models", headers={"authorization": f"Bearer {AUTH_KEY}"})
    except httpx.HTTPError as exc:
        probe = None
        reason = type(exc).__name__
    if probe is None or probe.status_code != 200:
        if started_here:
            subprocess.run(["bash", str(SCRIPT), "stop", str(AUTH_PORT)], check=False)
        shown = reason if probe is None else f"HTTP {probe.status_code} with our key"
        pytest.skip(f"the instance on port {AUTH_PORT} is not usable ({shown}; another key?)")
    yield AUTH_URL
    if started_here:
        subprocess.run(
            ["bash", str(SCRIPT), "stop", str(AUTH_PORT)], capture_output=True, check=False
        )


# --- ready, warm-up, usage ------------------------------------------------------------------


async def test_warm_up_gate_opens_once_and_nodes_go_through_it(provider: OpenAIProvider) -> None:
    gate = WarmupGate(provider, deadline=60.0)
    await gate.open()
    assert gate.is_open

    class Q(State, frozen=True, kw_only=True):
        answer: str = ""

    node: LLMNode[Q] = LLMNode(
        provider,
        lambda s: [UserMessage(content="hello")],
        lambda r: {"answer": r.message.content or ""},
        config=RuntimeConfig(max_tokens=8, temperature=0.0),
        middleware=default_onion(provider, warmup=gate),
    )
    graph = GraphBuilder(Q).add_node("ask", node).add_edge("ask", END).set_entry("ask").compile()
    final = await graph.invoke(Q())
    assert isinstance(final.answer, str)  # junk text, maybe empty: the shape is what counts


async def test_usage_accounting(provider: OpenAIProvider) -> None:
    r = await provider.complete(
        [UserMessage(content="Count to ten.")], config=RuntimeConfig(max_tokens=6, temperature=0.0)
    )
    u = r.usage
    assert u.prompt_tokens is not None and u.prompt_tokens > 0
    assert u.completion_tokens is not None and 0 <= u.completion_tokens <= 6
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.cached_tokens is None  # llama.cpp reports no prompt-cache details
    # (completion_tokens may equal max_tokens with finish_reason "stop": llama.cpp counts the EOS)
    assert r.finish_reason in ("stop", "length")


# --- structured output ----------------------------------------------------------------------


async def test_response_schema_goes_in_llama_cpps_own_form(provider: OpenAIProvider) -> None:
    """With ``genai_system="llama.cpp"`` the provider's dialect is ``llamacpp``:
    ``response_schema`` is sent as ``{"type": "json_object", "schema": ...}``,
    the form this server enforces (``json_schema`` would be an HTTP 500: see
    ``tests/test_real_dialects.py``)."""
    assert provider.dialect.name == "llamacpp"
    response = await provider.complete(
        ASK_PERSON, response_schema=Person, config=RuntimeConfig(max_tokens=40, temperature=0.0)
    )
    assert isinstance(response.parsed, Person)
    assert response.finish_reason == "stop"


async def test_response_format_json_object_with_schema_validated_by_the_layer(
    provider: OpenAIProvider,
) -> None:
    """llama.cpp's own form, sent through ``config.extras``; the structured-output
    layer validates the reply with the provider's validator."""
    call = StructuredOutputMiddleware(Person, send_schema=False)
    request = CompletionRequest(
        messages=ASK_PERSON,
        config=RuntimeConfig(
            max_tokens=60, temperature=0.0, extras={"response_format": PERSON_JSON_OBJECT}
        ),
    )
    response = await call(request, provider.call)
    assert isinstance(response.parsed, Person)
    assert response.finish_reason == "stop"


async def test_prompt_fallback_gives_a_person_or_a_categorized_failure() -> None:
    """``force_prompt_augmentation_fallback``: the schema goes into the system
    prompt. A 270M base model rarely obeys, so either outcome is acceptable,
    but it must be one of the two, with the model's output kept on the error."""
    async with OpenAIProvider(URL, MODEL, force_prompt_augmentation_fallback=True) as p:
        try:
            response = await p.complete(
                ASK_PERSON, response_schema=Person, config=RuntimeConfig(max_tokens=40)
            )
        except StructuredOutputInvalid as exc:
            assert exc.output_content is not None
            assert exc.schema is Person
        else:
            assert isinstance(response.parsed, Person)


async def test_prompt_fallback_plus_grammar_validates() -> None:
    """The fallback's prompt plus llama.cpp's grammar: the provider validates the
    reply against ``response_schema`` itself and hands back a ``Person``."""
    async with OpenAIProvider(URL, MODEL, force_prompt_augmentation_fallback=True) as p:
        response = await p.complete(
            ASK_PERSON,
            response_schema=Person,
            config=RuntimeConfig(
                max_tokens=60, temperature=0.0, extras={"response_format": PERSON_JSON_OBJECT}
            ),
        )
    assert isinstance(response.parsed, Person)


# --- models and keys -------------------------------------------------------------------------


async def test_unknown_model(provider: OpenAIProvider) -> None:
    """``ready()`` catches an unknown id (it is not listed); a completion does not:
    llama.cpp answers any model name with its one loaded model."""
    async with OpenAIProvider(URL, "no-such-model-here") as wrong:
        with pytest.raises(ProviderInvalidModel):
            await wrong.ready()
        r = await wrong.complete([UserMessage(content="hi")], config=RuntimeConfig(max_tokens=2))
    assert r.raw["model"] == "no-such-model-here"


async def test_wrong_api_key(auth_server: str) -> None:
    for key in ("wrong-key-123456", None):
        async with OpenAIProvider(auth_server, MODEL, api_key=key) as p:
            with pytest.raises(ProviderAuthentication) as info:
                await p.ready()
            assert info.value.status == 401
            assert "wrong-key-123456" not in str(info.value)
            with pytest.raises(ProviderAuthentication):
                await p.complete([UserMessage(content="hi")], config=RuntimeConfig(max_tokens=1))
    async with OpenAIProvider(auth_server, MODEL, api_key=AUTH_KEY) as good:
        await good.ready()
        assert AUTH_KEY not in repr(good)


# --- the agent example and the agent helper ---------------------------------------------------


def run(*argv: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENARMATURE_")}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=env,
        check=False, cwd=ROOT,
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_agent_example_with_a_forced_first_tool(backend: str) -> None:
    done = run(
        str(EXAMPLES / "agent.py"), "--base-url", URL, "--model", MODEL, "--backend", backend,
        "--force-first-tool", "get_weather", "--max-turns", "3", "--genai-system", "llama.cpp",
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "[embedded endpoint]" not in out
    assert "warm-up: the model answered" in out
    assert "-> get_weather(" in out  # forced by name: llama.cpp's grammar makes the call
    assert "tool      | <- {" in out  # the tool ran and its result went back (content "")
    assert "stop reason: " in out


def test_agent_example_with_auto_tool_choice() -> None:
    """``auto`` on this server: the model may or may not call a tool (and a text
    answer is always empty there); the run must end cleanly either way."""
    done = run(str(EXAMPLES / "agent.py"), "--base-url", URL, "--model", MODEL,
               "--max-turns", "2")
    assert done.returncode == 0, done.stderr
    assert "--- done ---" in done.stdout


async def test_agent_helper_round_trip(provider: OpenAIProvider) -> None:
    class City(msgspec.Struct):
        city: Annotated[str, msgspec.Meta(max_length=20)]

    seen: list[str] = []

    @tool(args=City)
    async def get_weather(args: City) -> str:
        """Current weather for a city."""
        seen.append(args.city)
        return "sunny"

    graph = build_agent(
        provider, [get_weather], system="Use the tools.",
        tool_choice=lambda s: ToolChoiceForce(name="get_weather") if s.llm_turns == 0 else "none",
        config=RuntimeConfig(max_tokens=24, temperature=0.0),
        max_turns=3,
    )
    final = await graph.invoke({"messages": [UserMessage(content="Weather in Paris?")]})
    assert len(seen) == 1
    roles = [m.role for m in final.messages]
    assert roles[:3] == ["user", "assistant", "tool"]
    assert final.llm_turns == 2 and final.stop_reason == "answer"


# --- the probe command --------------------------------------------------------------------------


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return run("-m", "openarmature_nodes", "probe", *args, timeout=120)


def test_probe_reports_each_step() -> None:
    done = probe("--base-url", URL, "--model", MODEL, "--warm-up")
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("reachable", "authorised", "model listed", "loaded", "first token"):
        assert step in done.stdout
    assert "verdict: ready" in done.stdout


def test_probe_json() -> None:
    done = probe("--base-url", URL, "--model", MODEL, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = msgspec.json.decode(done.stdout.strip().splitlines()[-1])
    assert report["error_category"] is None
    assert [s["name"] for s in report["steps"]] == [
        "reachable", "authorised", "model listed", "loaded"
    ]


def test_probe_against_a_stopped_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = probe("--base-url", f"http://127.0.0.1:{port}", "--model", MODEL)
    assert done.returncode != 0
    assert "provider_unavailable" in done.stdout


def test_probe_unknown_model() -> None:
    done = probe("--base-url", URL, "--model", "no-such-model-here")
    assert done.returncode != 0
    assert "provider_invalid_model" in done.stdout


def test_probe_wrong_key(auth_server: str) -> None:
    done = probe("--base-url", auth_server, "--model", MODEL, "--api-key", "wrong-key-123456")
    assert done.returncode != 0
    assert "provider_authentication" in done.stdout
    assert "wrong-key-123456" not in done.stdout + done.stderr


def test_probe_right_key(auth_server: str) -> None:
    done = probe("--base-url", auth_server, "--model", MODEL, "--api-key", AUTH_KEY, "--warm-up")
    assert done.returncode == 0, done.stdout
    assert AUTH_KEY not in done.stdout + done.stderr
