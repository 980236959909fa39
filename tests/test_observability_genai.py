"""The one GenAI attribute mapping: convention switch, truncation, absence rules."""

from __future__ import annotations

from openarmature_nodes.llm.genai import (
    convention_from_env,
    request_attributes,
    response_attributes,
    truncate,
)
from openarmature_nodes.llm.response import Usage


def test_convention_follows_otel_semconv_stability_opt_in() -> None:
    assert convention_from_env({}) == "spec"
    assert convention_from_env({"OTEL_SEMCONV_STABILITY_OPT_IN": "http"}) == "spec"
    opted = {"OTEL_SEMCONV_STABILITY_OPT_IN": "http, gen_ai_latest_experimental"}
    assert convention_from_env(opted) == "latest"


def test_generations_differ_only_in_the_names_they_add() -> None:
    spec = request_attributes("vllm", "m", {"temperature": 0.1})
    legacy = request_attributes("vllm", "m", {"temperature": 0.1}, convention="legacy")
    latest = request_attributes("vllm", "m", {"temperature": 0.1}, convention="latest")
    assert spec["gen_ai.system"] == spec["gen_ai.provider.name"] == "vllm"
    assert "gen_ai.provider.name" not in legacy and legacy["gen_ai.system"] == "vllm"
    assert latest["gen_ai.operation.name"] == "chat" and "gen_ai.operation.name" not in spec
    assert spec["gen_ai.request.temperature"] == 0.1
    assert request_attributes("vllm", "m", semconv=False) == {"openarmature.llm.model": "m"}


def test_unreported_counters_emit_nothing_and_zero_is_reported() -> None:
    attrs = response_attributes(usage=Usage(None, 3, None, 0), finish_reason="stop")
    assert "gen_ai.usage.input_tokens" not in attrs
    assert "openarmature.llm.usage.prompt_tokens" not in attrs
    assert attrs["gen_ai.usage.output_tokens"] == 3
    assert attrs["openarmature.llm.cache_read.input_tokens"] == 0
    assert "openarmature.llm.cache_creation.input_tokens" not in attrs
    latest = response_attributes(usage=Usage(1, 1, 2, 4), convention="latest")
    assert latest["gen_ai.usage.cache_read.input_tokens"] == 4


def test_truncation_keeps_utf8_whole_and_marks_the_size() -> None:
    text = "é" * 400  # 800 bytes, two per character
    out = truncate(text, 256)
    data = out.encode()
    assert len(data) <= 256
    assert out.endswith("…[truncated, 800 bytes total]")
    assert text.startswith(out[: out.index("…")])
    assert truncate("short", 256) == "short"
