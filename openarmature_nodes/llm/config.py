"""Per-call sampling parameters (spec llm-provider §6 ``RuntimeConfig``).

Seven declared fields, each ``None`` by default; a ``None`` field is *not
sent* (it is omitted from the request body, never sent as JSON ``null``).
Anything else the backend understands (vLLM's ``repetition_penalty``,
``top_k``, ``min_p``, a llama.cpp ``grammar`` ...) goes in ``extras``: those
keys are sent at the root of the request body exactly as given, with no
renaming and no validation::

    RuntimeConfig(temperature=0.0, max_tokens=128, extras={"top_k": 20})

An extras key that names a field the provider itself sets (``model``,
``messages``, ``stream``, a declared field that is also set ...) is checked
before sending: equal values are a harmless no-op, conflicting ones raise
``ProviderInvalidRequest`` (see :mod:`openarmature_nodes.llm.wire`).

A plain mapping (``config={"temperature": 0, "max_tokens": 64}``) may name
the declared fields and ``extras`` only. Any other key raises
``ProviderInvalidRequest`` before anything is sent, suggesting the declared
name it resembles (``max_token`` -> ``max_tokens``): a typo would otherwise be
forwarded as an extra the server ignores, and the real setting dropped.
Backend-specific keys go under ``extras`` explicitly::

    config={"max_tokens": 64, "extras": {"top_k": 20}}
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from .errors import ProviderInvalidRequest

__all__ = ["DECLARED_FIELDS", "RuntimeConfig", "check_config_keys"]


class RuntimeConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    """Sampling parameters and budget hints for one call."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop_sequences: Sequence[str] | None = None
    extras: Mapping[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RuntimeConfig:
        """Build a config from a mapping of declared field names (plus an optional
        ``extras`` mapping). Raises ``ProviderInvalidRequest`` for any other key
        (see :func:`check_config_keys`)."""
        check_config_keys(values)
        declared = {k: v for k, v in values.items() if k != "extras"}
        extras = values.get("extras")
        return cls(**declared, extras=dict(extras) if extras else {})

    def merged(self, override: RuntimeConfig | None) -> RuntimeConfig:
        """This config with ``override``'s non-``None`` fields (and extras) on top."""
        if override is None:
            return self
        changes: dict[str, Any] = {
            name: value
            for name in DECLARED_FIELDS
            if (value := getattr(override, name)) is not None
        }
        if override.extras:
            changes["extras"] = {**self.extras, **override.extras}
        return msgspec.structs.replace(self, **changes) if changes else self


DECLARED_FIELDS: tuple[str, ...] = (
    "temperature",
    "max_tokens",
    "top_p",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "stop_sequences",
)
"""The seven declared ``RuntimeConfig`` fields, in spec order."""


def check_config_keys(values: Mapping[str, Any]) -> None:
    """Reject a config mapping key that is neither a declared field nor ``extras``.

    The one rule for dict configs. The error names every unknown key and, for a
    near-miss of a declared name (``temprature``), the name it most resembles.
    ``extras`` itself must be a mapping.
    """
    problems: list[str] = []
    for key in values:
        if key == "extras" or key in DECLARED_FIELDS:
            continue
        close = difflib.get_close_matches(str(key), DECLARED_FIELDS, n=1, cutoff=0.85)
        hint = f"did you mean {close[0]!r}?" if close else "not a RuntimeConfig field"
        problems.append(f"{key!r} ({hint})")
    if problems:
        raise ProviderInvalidRequest(
            f"unknown config key(s) {', '.join(problems)}; config mappings take only "
            f"{', '.join(DECLARED_FIELDS)} and extras; pass backend-specific settings as "
            'extras={"name": value}'
        )
    extras = values.get("extras")
    if extras is not None and not isinstance(extras, Mapping):
        raise ProviderInvalidRequest(
            f"config extras must be a mapping, got {type(extras).__name__}"
        )
