"""Shared builders for the incident-domain tests."""

from __future__ import annotations

from typing import Any

from hub.domain.events import Created

T0 = 1_795_000_000_000


def at(seconds: float) -> int:
    """Epoch ms ``seconds`` after T0."""
    return T0 + round(seconds * 1000)


def created(**kw: Any) -> Created:
    fields: dict[str, Any] = {"ts": T0, "source": "api", "category": "robbery", "priority": 1, "lat": 34.261,
                              "lon": 117.186, "address": "1 Huaihai Rd", "summary": "shop robbed",
                              "policy": "rapid_12358"}
    return Created(**(fields | kw))
