"""Ground truth of simulated responses: when a unit truly signed for, left for and reached an incident.

The simulator knows what the hub can only infer. For every unit it sends to an incident it keeps
the noise-free position and speed of the car at the device time of each fix the unit's devices
publish (the hub merges a unit's devices, so their timestamps together are the samples; held
store-and-forward fixes count like live ones), and computes the truth by the definitions of the
offline benchmark (:mod:`bench.accuracy`):

- **acknowledged**: device time of the first ``ack`` of the dispatch command by any of the unit's devices;
- **departed**: the first sample at or after dispatch at which the car truly moves. A parked unit
  starts moving when its turnout delay ends, so this is "the first sample after the turnout delay";
  a car driving at dispatch departs with the first sample after dispatch (one standing at a red
  light at that moment, when it moves on);
- **arrived**: the first sample inside the arrival zone of the stay that ends with the stop on scene:
  from the first sample at rest on scene, back while the true position is inside. ``None`` when the
  car came to rest outside the zone: it never arrived, whatever it drove through on the way;
- **contacted**: device time of the ``contact`` event.

GPS cannot place a car to the metre, so where the true track runs along the zone's edge the first
sample inside is not something any receiver's fixes can pin down. The truth says where that is:
``edge_span`` is the span around the arrival during which the car was within ``EDGE_BAND_M`` of the
edge (outside before it, inside after it), and ``rests_at_edge`` says the car came to rest inside
that band, where "arrived" and "stopped just outside" look alike at any GPS accuracy. The end-to-end
benchmark reports these separately; it never excuses a false arrival.

Pure: no clock, no I/O except :meth:`TruthLog.add` appending a JSON line to a file when given one.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from geo.geodesy import haversine_m

__all__ = ["EDGE_BAND_M", "ResponseTruth", "Sample", "Truth", "TruthLog", "arrival_truth", "departure_truth",
           "edge_span"]

# Nearer the zone's edge than this (either side), inside and outside are within the GPS noise: the
# simulator's fixes have 3-10 m accuracy (68 %), a single fix 2-6.6 m standard error per axis, and a few
# minutes at rest still leave about 1 m of standard error in their mean (errors are correlated over seconds).
EDGE_BAND_M: Final = 2.0


@dataclass(frozen=True, slots=True)
class Sample:
    """The car's true state at the device time of a published fix."""

    ts: int
    lat: float
    lon: float
    speed: float


@dataclass(frozen=True, slots=True)
class Truth:
    """One unit's response to one incident as it truly happened; times are epoch ms, ``None`` = never."""

    incident_id: str
    unit_id: str
    case: str
    zone: tuple[float, float]
    radius_m: float
    dispatched: int
    acknowledged: int | None
    departed: int | None
    arrived: int | None
    contacted: int | None
    cleared: int | None
    stop: int | None  # when the car came to rest on scene
    stop_distance_m: float | None  # how far from the zone's centre it rested
    samples: int
    uplink_held: tuple[int, int] | None = None  # a dead zone: from when to when fixes and events were held
    notes: dict[str, str] = field(default_factory=dict)
    # Around the arrival, when the car was within EDGE_BAND_M of the edge (see the module doc).
    edge_span: tuple[int, int] | None = None
    rests_at_edge: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["zone"] = list(self.zone)
        out["uplink_held"] = None if self.uplink_held is None else list(self.uplink_held)
        out["edge_span"] = None if self.edge_span is None else list(self.edge_span)
        return out


def departure_truth(samples: Sequence[Sample], dispatched_ms: int) -> int | None:
    """The first sample at or after dispatch at which the car moves."""
    return next((s.ts for s in samples if s.ts >= dispatched_ms and s.speed > 0.0), None)


def arrival_truth(samples: Sequence[Sample], stop_ms: int | None, zone: tuple[float, float], radius_m: float,
                  dispatched_ms: int) -> int | None:
    """The first sample inside the zone of the stay that ends with the stop at ``stop_ms``; None if outside."""
    if stop_ms is None:
        return None
    stop = bisect.bisect_left([s.ts for s in samples], stop_ms)
    if stop == len(samples) or _distance(samples[stop], zone) > radius_m:
        return None
    i = stop
    while i > 0 and samples[i - 1].ts >= dispatched_ms and _distance(samples[i - 1], zone) <= radius_m:
        i -= 1
    return samples[i].ts


def edge_span(samples: Sequence[Sample], arrived_ms: int | None, stop_ms: int | None, zone: tuple[float, float],
              radius_m: float, band_m: float = EDGE_BAND_M) -> tuple[tuple[int, int] | None, bool]:
    """The span around the arrival when the car was within ``band_m`` of the edge, and whether it rested there.

    Back from the arrival sample while the car was outside by at most ``band_m``; on from it while it
    was inside by at most ``band_m``. ``(None, False)`` without an arrival.
    """
    if arrived_ms is None:
        return None, False
    times = [s.ts for s in samples]
    a = bisect.bisect_left(times, arrived_ms)
    start = end = a
    while start > 0 and _distance(samples[start - 1], zone) <= radius_m + band_m:
        start -= 1
    while end + 1 < len(samples) and _distance(samples[end + 1], zone) >= radius_m - band_m:
        end += 1
    rests = stop_ms is not None and samples[end].ts >= stop_ms and _distance(samples[end], zone) >= radius_m - band_m
    return (samples[start].ts, samples[end].ts), rests


def _distance(s: Sample, zone: tuple[float, float]) -> float:
    return haversine_m(zone[0], zone[1], s.lat, s.lon)


class ResponseTruth:
    """The recorder of one unit's response: fed samples and events as they happen, read by :meth:`result`."""

    def __init__(self, incident_id: str, unit_id: str, case: str, zone: tuple[float, float], radius_m: float,
                 dispatched_ms: int) -> None:
        self.incident_id = incident_id
        self.unit_id = unit_id
        self.case = case
        self.zone = zone
        self.radius_m = radius_m
        self.dispatched_ms = dispatched_ms
        self.samples: list[Sample] = []
        self._ts: list[int] = []
        self.acks: list[int] = []
        self.stop_ms: int | None = None
        self.contact_ms: int | None = None
        self.cleared_ms: int | None = None
        self.uplink_held: tuple[int, int] | None = None
        self.notes: dict[str, str] = {}

    def add(self, ts: int, lat: float, lon: float, speed: float) -> None:
        """A fix was published at ``ts`` while the car truly was here; one sample per timestamp."""
        if ts < self.dispatched_ms:
            return
        i = bisect.bisect_left(self._ts, ts)
        if i < len(self._ts) and self._ts[i] == ts:
            return  # two devices, one instant: the hub keeps one fix per timestamp too
        self._ts.insert(i, ts)
        self.samples.insert(i, Sample(ts, lat, lon, speed))

    def stopped(self, ts: int) -> None:
        """The car came to rest on scene; samples from ``ts`` on stand there."""
        if self.stop_ms is None:
            self.stop_ms = ts

    def result(self) -> Truth:
        departed = departure_truth(self.samples, self.dispatched_ms)
        arrived = arrival_truth(self.samples, self.stop_ms, self.zone, self.radius_m, self.dispatched_ms)
        stop_distance = None
        if self.stop_ms is not None:
            at = bisect.bisect_left(self._ts, self.stop_ms)
            if at < len(self.samples):
                stop_distance = round(_distance(self.samples[at], self.zone), 1)
        span, rests = edge_span(self.samples, arrived, self.stop_ms, self.zone, self.radius_m)
        return Truth(self.incident_id, self.unit_id, self.case, self.zone, self.radius_m, self.dispatched_ms,
                     min(self.acks) if self.acks else None, departed, arrived, self.contact_ms, self.cleared_ms,
                     self.stop_ms, stop_distance, len(self.samples), self.uplink_held,
                     {**self._notes(departed, arrived), **self.notes}, span, rests)

    def _notes(self, departed: int | None, arrived: int | None) -> dict[str, str]:
        """Facts of the true trajectory that explain a miss: an earlier visit, a standstill, a near miss."""
        notes: dict[str, str] = {}
        t0 = self.dispatched_ms
        if self.stop_ms is None:
            notes["arrival"] = "never came to rest on scene"
            return notes
        before = [s for s in self.samples if s.ts < (arrived if arrived is not None else self.stop_ms)]
        inside = [s for s in before if _distance(s, self.zone) <= self.radius_m]
        if inside:
            notes["earlier_visit"] = (f"truly inside {len(inside)} samples before the final stay, last at "
                                      f"+{(inside[-1].ts - t0) / 1000:.0f} s")
        if arrived is None:
            closest = min((_distance(s, self.zone) for s in self.samples), default=float("nan"))
            notes["arrival"] = f"rested outside the zone; closest approach {closest:.1f} m (radius {self.radius_m:g})"
        if departed is not None:
            moving = [s for s in self.samples if departed <= s.ts < departed + 10_000]
            if any(s.speed == 0.0 for s in moving):
                notes["departure"] = "stood still again within 10 s of moving off"
        return notes


class TruthLog:
    """Finished responses: in memory by incident, and one JSON line each in ``path`` when given."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.by_incident: dict[str, list[Truth]] = {}
        self._out: IO[str] | None = None

    def add(self, truth: Truth) -> None:
        self.by_incident.setdefault(truth.incident_id, []).append(truth)
        if self.path is not None:
            if self._out is None:
                self._out = self.path.open("a", encoding="utf-8")
            self._out.write(json.dumps(truth.to_dict(), separators=(",", ":")) + "\n")
            self._out.flush()

    def get(self, incident_id: str, unit_id: str) -> Truth | None:
        """The latest response of ``unit_id`` to ``incident_id``."""
        return next((t for t in reversed(self.by_incident.get(incident_id, [])) if t.unit_id == unit_id), None)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_incident.values())

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
