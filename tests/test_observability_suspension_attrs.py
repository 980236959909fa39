"""Observability §5.8: the suspending node span's flattened descriptor attributes."""

from __future__ import annotations

from openarmature_nodes.graph.checkpoint.records import SignalDescriptor
from openarmature_nodes.observability.otel import suspension_attributes


def test_metadata_flattens_to_otel_scalars() -> None:
    attrs = suspension_attributes(SignalDescriptor(signal_id="sig-1", metadata={
        "kind": "approval", "limits": {"max": 3, "soft": 1.5}, "pools": ["a", "b"],
        "mixed": [1, "x"], "flag": True, "empty": None,
    }))
    assert attrs == {
        "openarmature.outcome": "suspended",
        "openarmature.suspension.signal_id": "sig-1",
        "openarmature.suspension.metadata.kind": "approval",
        "openarmature.suspension.metadata.limits.max": 3,
        "openarmature.suspension.metadata.limits.soft": 1.5,
        "openarmature.suspension.metadata.pools": ["a", "b"],
        "openarmature.suspension.metadata.mixed": '[1,"x"]',
        "openarmature.suspension.metadata.flag": True,
    }


def test_no_metadata_gives_signal_id_only() -> None:
    attrs = suspension_attributes(SignalDescriptor(signal_id="sig-2"))
    assert attrs == {"openarmature.outcome": "suspended",
                     "openarmature.suspension.signal_id": "sig-2"}
