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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

__all__ = ["DECLARED_FIELDS", "RuntimeConfig"]


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
        """Build a config from a flat mapping: declared names fill the declared
        fields, every other key becomes an extra (an explicit ``extras``
        mapping is merged in as well)."""
        declared: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for key, value in values.items():
            if key == "extras" and isinstance(value, Mapping):
                extras.update(value)
            elif key in DECLARED_FIELDS:
                declared[key] = value
            else:
                extras[key] = value
        return cls(**declared, extras=extras)

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
