"""``openarmature-nodes probe``: is this deployment ready for traffic?

The probe answers the operator's questions in order, each with a verdict and a
timing: is the server *reachable*, does it accept our credentials
(*authorised*), does it list the model (*model listed*), does it report it
loaded (*loaded*), and, with ``--warm-up``, how long the first token of a
one-token completion takes (*first token*).

``ready()`` answers the first four with one ``GET /v1/models``; the error
category it raises tells which step failed. vLLM's ``/v1/models`` reports no
load state, so on vLLM only ``--warm-up`` proves the model really answers.

It also prints the server *dialect* (:mod:`openarmature_nodes.llm.dialects`),
the model's ``max_model_len`` where the server reports one, and the
structured-output mode. With ``--dialect auto`` (the default) those come from
the server itself: its model card and a tiny canary request per
structured-output form, so the probe shows what ``dialect="auto"`` would pick.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

import anyio
import msgspec

from openarmature_nodes.llm import (
    OpenAIProvider,
    ProviderError,
    RuntimeConfig,
    Timeouts,
    UserMessage,
)
from openarmature_nodes.llm.dialects import DIALECT_NAMES

__all__ = ["ProbeReport", "ProbeStep", "add_probe_arguments", "probe", "run_probe_command"]

# Which step a failure of ready() belongs to, by error category. Steps before it passed.
_READY_STEPS = ("reachable", "authorised", "model listed", "loaded")
_FAILED_STEP = {
    "provider_unavailable": "reachable",
    "provider_authentication": "authorised",
    "provider_invalid_model": "model listed",
    "provider_model_not_loaded": "loaded",
}


@dataclass
class ProbeStep:
    """One timed step of a probe: its name, outcome, duration and a detail line."""

    name: str
    ok: bool
    seconds: float | None = None
    detail: str = ""


@dataclass
class ProbeReport:
    """What :func:`probe` found: the steps run, and the first error's category."""

    base_url: str
    model: str
    steps: list[ProbeStep] = field(default_factory=list)
    error_category: str | None = None
    dialect: str | None = None
    max_model_len: int | None = None
    structured_output_mode: str | None = None
    detection: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the probe met no error (``error_category`` is ``None``)."""
        return self.error_category is None


async def probe(
    base_url: str,
    model: str,
    *,
    api_key: str | None = None,
    warm_up: bool = False,
    phase_timeout: float = 10.0,
    dialect: str = "auto",
) -> ProbeReport:
    """Run the probe and return its report; never raises a provider error.

    ``phase_timeout`` bounds every phase of each request (connect, write, each wait
    for response bytes, waiting for a pooled connection): a server that
    accepts the connection and then says nothing fails the step as
    ``provider_unavailable`` instead of hanging. ``dialect``: the provider's
    dialect (``"auto"``: detect it; see the module docs).
    """
    report = ProbeReport(base_url=base_url, model=model)
    t = phase_timeout
    limits = Timeouts(connect=t, read=t, write=t, pool=t)
    async with OpenAIProvider(
        base_url=base_url, model=model, api_key=api_key, timeouts=limits, dialect=dialect
    ) as provider:
        t0 = time.perf_counter()
        try:
            await provider.ready()
        except ProviderError as exc:
            took = time.perf_counter() - t0
            failed = _FAILED_STEP.get(exc.category, "reachable")
            for name in _READY_STEPS:
                if name == failed:
                    report.steps.append(ProbeStep(name, False, took, exc.message))
                    break
                report.steps.append(ProbeStep(name, True))
            report.error_category = exc.category
            return report
        took = time.perf_counter() - t0
        report.dialect = provider.dialect.name
        report.max_model_len = provider.max_model_len
        report.structured_output_mode = provider.structured_output_mode
        report.detection = provider.dialect_detection
        for name in _READY_STEPS:
            report.steps.append(ProbeStep(name, True, took if name == "reachable" else None))
        if not warm_up:
            report.steps[-1].detail = "per /v1/models (vLLM reports no load state: use --warm-up)"
        if warm_up:
            t1 = time.perf_counter()
            try:
                await provider.complete(
                    [UserMessage(content="ping")], config=RuntimeConfig(max_tokens=1)
                )
            except ProviderError as exc:
                report.steps.append(
                    ProbeStep("first token", False, time.perf_counter() - t1, exc.message)
                )
                report.error_category = exc.category
                return report
            report.steps.append(ProbeStep("first token", True, time.perf_counter() - t1))
    return report


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``probe`` options (each defaults from its environment variable)."""
    env = os.environ.get
    parser.add_argument(
        "--base-url",
        default=env("OPENARMATURE_BASE_URL"),
        required=env("OPENARMATURE_BASE_URL") is None,
        help="server host root, without /v1 (env OPENARMATURE_BASE_URL)",
    )
    parser.add_argument(
        "--model",
        default=env("OPENARMATURE_MODEL"),
        required=env("OPENARMATURE_MODEL") is None,
        help="model id the server should serve (env OPENARMATURE_MODEL)",
    )
    parser.add_argument(
        "--api-key",
        default=env("OPENARMATURE_API_KEY") or env("OPENAI_API_KEY"),
        help="bearer token (env OPENARMATURE_API_KEY or OPENAI_API_KEY); never printed",
    )
    parser.add_argument("--warm-up", action="store_true", help="also time a one-token completion")
    parser.add_argument(
        "--dialect",
        choices=DIALECT_NAMES,
        default=env("OPENARMATURE_DIALECT") or "auto",
        help="server dialect; auto (default) detects it and its structured-output mode "
        "(env OPENARMATURE_DIALECT)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds allowed for each phase of each request (default 10)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")


def run_probe_command(args: argparse.Namespace) -> int:
    """Run the probe for parsed ``args`` and print the report; return the exit code
    (0 ready, 1 not ready, 2 bad arguments)."""
    try:
        report = anyio.run(
            lambda: probe(
                args.base_url,
                args.model,
                api_key=args.api_key,
                warm_up=args.warm_up,
                phase_timeout=args.timeout,
                dialect=args.dialect,
            ),
            backend=args.backend,
        )
    except ValueError as exc:  # a base_url the provider refuses, e.g. one ending in /v1
        print(f"probe: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(f"probe {report.base_url} model={report.model}")
        for step in report.steps:
            took = f"{step.seconds * 1000:8.1f} ms" if step.seconds is not None else " " * 11
            verdict = "ok  " if step.ok else "FAIL"
            print(f"  {verdict} {step.name:<13} {took}  {step.detail}".rstrip())
        if report.dialect is not None:
            print(f"  dialect: {report.dialect}")
            limit = report.max_model_len
            print(f"  max_model_len: {limit if limit is not None else 'not reported'}")
            print(f"  structured output: {report.structured_output_mode}")
            if report.detection:
                print(f"  detected: {report.detection}")
        print("verdict: ready" if report.ok else f"verdict: not ready ({report.error_category})")
    return 0 if report.ok else 1
