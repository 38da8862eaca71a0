"""The officer wearing a GB/T 28181 body camera, as far as the demo plays them: the radio's side of a dispatch.

The camera cannot receive a dispatch order (GB/T 28181 has no such message), so the officer hears it by radio:
:class:`Officer` turns the unit's assignment, as the hub reports it, into orders for the car ("go", "stand_down")
and, once on scene, into the radio reports the dispatcher records ("contact", then "clear"). Pure: time in epoch
ms is passed in, randomness comes from a seeded :class:`random.Random`. :func:`location` reads where to go from
the hub's incident view, refusing what is not a place.
"""

from __future__ import annotations

import math
import random
import re
from typing import Final, Literal

__all__ = ["Officer", "Order", "Report", "assignment", "location"]

INCIDENT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # the hub's id syntax, safe in a URL path

Order = Literal["go", "stand_down"]
Report = Literal["contact", "clear"]


class Officer:
    """What the officer wearing the camera does with what the radio says; pure, time in epoch ms passed in.

    :meth:`hear` takes the unit's assignment as the hub reports it and says whether to drive somewhere new or to
    stand down; :meth:`on_scene` is told when the car stopped at the scene; :meth:`due` says which radio report
    is due now ("contact", then "clear"), each once per assignment.
    """

    def __init__(self, rng: random.Random, contact_s: tuple[float, float], scene_s: tuple[float, float] | None) -> None:
        self.rng = rng
        self.contact_s = contact_s
        self.scene_s = scene_s
        self.incident_id: str | None = None
        self.arrived_ms: int | None = None
        self._pending: list[tuple[int, Report]] = []

    def hear(self, incident_id: str | None) -> Order | None:
        """The assignment the hub reports now: "go" to a new incident, "stand_down" when released, else None."""
        if incident_id == self.incident_id:
            return None
        self.incident_id, self.arrived_ms, self._pending = incident_id, None, []
        return "stand_down" if incident_id is None else "go"

    def on_scene(self, now_ms: int) -> None:
        """The car stopped at the scene: schedule the radio reports from now (once per assignment)."""
        if self.incident_id is None or self.arrived_ms is not None:
            return
        self.arrived_ms = now_ms
        contact = now_ms + int(self.rng.uniform(*self.contact_s) * 1000)
        self._pending = [(contact, "contact")]
        if self.scene_s is not None:
            self._pending.append((max(contact, now_ms + int(self.rng.uniform(*self.scene_s) * 1000)), "clear"))

    def due(self, now_ms: int) -> list[Report]:
        """The reports due by ``now_ms``, in order; each is given once."""
        ready = [report for at, report in self._pending if at <= now_ms]
        self._pending = [(at, report) for at, report in self._pending if at > now_ms]
        return ready


def location(incident: object) -> tuple[float, float]:
    """An incident view's (lat, lon); ValueError/TypeError/KeyError when it has none that is usable."""
    if not isinstance(incident, dict):
        raise TypeError(f"an incident is a JSON object, not {type(incident).__name__}")
    lat, lon = incident["lat"], incident["lon"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lon)):
        raise TypeError("lat and lon must be numbers")
    if not (math.isfinite(lat) and math.isfinite(lon) and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError(f"({lat}, {lon}) is not a place on earth")
    return float(lat), float(lon)


def assignment(unit: object) -> str | None:
    """A unit view's ``incident_id``: None (not assigned) or an id of the hub's syntax; else ValueError/TypeError."""
    if not isinstance(unit, dict):
        raise TypeError(f"a unit is a JSON object, not {type(unit).__name__}")
    incident_id = unit["incident_id"]
    if incident_id is None:
        return None
    if not isinstance(incident_id, str):
        raise TypeError(f"incident_id is {type(incident_id).__name__}, not a string")
    if INCIDENT_ID.fullmatch(incident_id) is None:
        raise ValueError(f"incident_id {incident_id[:80]!r} is not an id")
    return incident_id
