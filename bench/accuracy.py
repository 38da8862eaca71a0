"""Detector-level accuracy benchmark: the pure arrival and departure detectors against ground truth.

This is the *offline* benchmark: no broker, no database, no hub. Each simulated
incident drives a :class:`~sim.traffic.SimVehicle` on the simulator's road graph
from dispatch to the scene, samples its true position at 1 Hz, turns it into
noisy fixes with :class:`~sim.traffic.GpsModel`, and feeds them in *delivery*
order, in the chunks a device would publish, to :class:`ArrivalDetector` and
:class:`DepartureDetector`. The end-to-end benchmark through MQTT and the hub
(``fieldhub bench accuracy``, :mod:`bench.e2e_accuracy`) measures the same thing
plus everything between the device and the detectors.

Ground truth comes from the noise-free trajectory, sampled at the fixes' times:

- **arrival**: the first sample inside the 100 m zone of the stay that ends with
  the stop on scene (walking back from the stop while the true position is inside);
- **departure**: a parked unit starts moving at the end of its turnout delay, and
  the truth is the first sample after that instant; a unit already driving at
  dispatch departs with the first sample after dispatch.

Hard cases, one share of the incidents each (``CASES``): ``drive_by`` (the route
passes through another incident's zone, watched by a decoy detector), ``outliers``
(2 % GPS jumps instead of 0.5 %), ``edge_jitter`` (a decoy zone whose edge is 0-10 m
short of where the unit stands on scene), ``dead_zone`` (a 60-180 s span around
the arrival held and delivered as one batch after later fixes), ``patrolling``
(driving at dispatch, no turnout) and ``edge_inside`` (the incident lies square to
the road where the unit comes to rest, 2-10 m inside the edge: the car drives along
the circle's tangent and crosses the edge 20-40 m before it stops, its distance from
the centre changing by a few metres). Any arrival in a decoy zone is a false arrival.

Run: ``python -m bench.accuracy [--incidents N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from bench.report import machine_facts, percentile
from devices.payloads import Fix
from geo.geodesy import haversine_m, offset
from hub.domain.arrival import ArrivalDetector
from hub.domain.departure import DepartureDetector
from sim.city import City, build_city
from sim.scenarios import abeam, address_near
from sim.traffic import GpsModel, SimVehicle
from sim.truth import EDGE_BAND_M

__all__ = ["CASES", "Outcome", "main", "render", "run", "simulate"]

CASES: Final = ("parked", "drive_by", "outliers", "edge_jitter", "dead_zone", "patrolling", "edge_inside")
EDGE_INSIDE_M: Final = (2.0, 10.0)  # beyond sim.truth.EDGE_BAND_M: nearer the edge, GPS cannot tell the side
RADIUS_M: Final = 100.0
ARRIVAL_TARGET_S: Final = 2.0
DEPARTURE_TARGET_S: Final = 3.0
T0_MS: Final = 1_767_225_600_000  # 2026-01-01, the first incident's first fix
_MAX_SIM_S: Final = 3 * 3600  # a trip that takes longer than this is a simulator bug
_HEADER: Final = ("Detector-level accuracy of arrival/departure (pure detectors, offline: no broker, no database; "
                  "the end-to-end one is fieldhub bench accuracy)")


@dataclass(slots=True)
class Outcome:
    """One incident: the detectors' answers against ground truth, times in ms (errors are detected - truth)."""

    index: int
    case: str
    arrival_truth_ms: int
    departure_truth_ms: int
    arrival_ms: int | None = None
    departure_ms: int | None = None
    false_arrivals: list[str] = field(default_factory=list)  # "decoy kind at +t s from dispatch"
    fixes: int = 0
    # What the true trajectory did around a hard spot ("arrival", "departure", "decoy"), to investigate failures.
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def arrival_error_s(self) -> float | None:
        return None if self.arrival_ms is None else (self.arrival_ms - self.arrival_truth_ms) / 1000

    @property
    def departure_error_s(self) -> float | None:
        return None if self.departure_ms is None else (self.departure_ms - self.departure_truth_ms) / 1000


@dataclass(frozen=True, slots=True)
class _Sample:
    ts: int
    lat: float
    lon: float
    speed: float
    heading: float | None


def _drive(city: City, rng: random.Random, case: str, far_m: tuple[float, float]
           ) -> tuple[list[_Sample], int, int, tuple[float, float], int]:
    """Simulate one response: 1 Hz true samples, dispatch time, departure truth, incident, index of the stop."""
    samples: list[_Sample] = []
    ts = T0_MS
    node = rng.choice(city.node_ids)  # where the unit is parked, or starts its patrol
    if case == "patrolling":
        vehicle = SimVehicle(city, rng, node, ts, park_probability=0.0)
        warm_up = ts + int(rng.uniform(60.0, 180.0) * 1000)
        while ts < warm_up or vehicle.speed < 5.0:  # dispatch it while it is really moving
            vehicle.advance(ts)
            samples.append(_Sample(ts, *vehicle.position, vehicle.speed, vehicle.heading))
            ts += 1000
        dispatch = samples[-1].ts + rng.randint(1, 999)
        vehicle.advance(dispatch)
        incident = address_near(city, rng, vehicle.position, *far_m)
        vehicle.drive_to_point(*incident)
        depart = dispatch  # already rolling: the first fix after dispatch is the departure
        moving: SimVehicle | None = vehicle
    else:
        incident = address_near(city, rng, city.nodes[node], *far_m)
        dispatch = ts + 30_000 + rng.randint(1, 999)
        depart = dispatch + rng.randint(20_000, 90_000)  # turnout
        moving = None
    stop: int | None = None
    leave_at = end_at = 0
    while True:
        if moving is None and ts > depart:
            moving = SimVehicle(city, rng, node, depart, park_probability=0.0)
            moving.drive_to_point(*incident)
        if moving is None:
            lat, lon = city.nodes[node]
            samples.append(_Sample(ts, lat, lon, 0.0, None))
        else:
            moving.advance(ts)
            samples.append(_Sample(ts, *moving.position, moving.speed, moving.heading))
            if stop is None and moving.state == "on_scene":
                stop = len(samples) - 1
                leave_at = ts + int(rng.uniform(180.0, 600.0) * 1000)
                end_at = leave_at + 60_000
            elif stop is not None and ts >= leave_at and moving.state == "on_scene":
                moving.resume_patrol()  # cleared: drive off, so the stay has an end
            if stop is not None and ts >= end_at:
                break
        if ts - T0_MS > _MAX_SIM_S * 1000:
            raise RuntimeError("the unit never reached the scene")
        ts += 1000
    departure_truth = next(s.ts for s in samples if s.ts > depart)
    return samples, dispatch, departure_truth, incident, stop


def _arrival_truth(samples: Sequence[_Sample], stop: int, incident: tuple[float, float], dispatch: int) -> int:
    """The first true sample inside the zone of the stay that ends at ``stop``."""
    if haversine_m(*incident, samples[stop].lat, samples[stop].lon) > RADIUS_M:
        raise RuntimeError("the unit stopped outside the incident's zone")
    i = stop
    while i > 0 and samples[i - 1].ts >= dispatch and haversine_m(
            *incident, samples[i - 1].lat, samples[i - 1].lon) <= RADIUS_M:
        i -= 1
    return samples[i].ts


def _notes(samples: Sequence[_Sample], dispatch: int, arrival_truth: int, departure_truth: int,
           incident: tuple[float, float], decoy: tuple[float, float] | None) -> dict[str, str]:
    """Facts of the true trajectory that explain a miss: an earlier visit to the zone, a standstill, a light."""
    after = [s for s in samples if s.ts >= dispatch]
    notes: dict[str, str] = {}
    entry = next(k for k, s in enumerate(after) if s.ts == arrival_truth)
    distances = [haversine_m(*incident, s.lat, s.lon) for s in after[:entry]]
    if any(d <= RADIUS_M for d in distances):
        last_in = max(k for k, d in enumerate(distances) if d <= RADIUS_M)
        notes["arrival"] = (f"truly inside at +{(after[last_in].ts - dispatch) / 1000:.0f} s, then out "
                            f"{entry - last_in - 1} s and up to {max(distances[last_in + 1:]) - RADIUS_M:.1f} m "
                            "past the edge before the final entry")
    # After the entry, a true path that runs back to within EDGE_BAND_M of the edge (a turn, a rest at the edge)
    # is where GPS cannot tell whether the stay was ever left.
    near = [(RADIUS_M - haversine_m(*incident, s.lat, s.lon), s.ts) for s in after[entry + 3:entry + 120]]
    close = min(near, default=None)
    if close is not None and close[0] <= EDGE_BAND_M:
        notes.setdefault("arrival", f"inside, the true path came within {close[0]:.1f} m of the edge at "
                                    f"+{(close[1] - dispatch) / 1000:.0f} s (within GPS noise)")
    still = [s.ts for s in after if s.ts >= departure_truth and s.speed == 0.0 and s.ts < arrival_truth]
    if still and still[0] < departure_truth + 5_000:
        run = next((k for k in range(1, len(still)) if still[k] - still[k - 1] > 1000), len(still))
        notes["departure"] = f"truly standing from +{(still[0] - dispatch) / 1000:.0f} s for {run} s"
    if decoy is not None:
        inside = [s for s in after if haversine_m(*decoy, s.lat, s.lon) <= RADIUS_M]
        standing = sum(1 for s in inside if s.speed == 0.0)
        notes["decoy"] = f"truly inside the decoy zone {len(inside)} s, {standing} s of it standing"
    return notes


def _decoy(case: str, rng: random.Random, samples: Sequence[_Sample], stop: int, depart_index: int
           ) -> tuple[float, float] | None:
    """The centre of another incident's zone the unit must not arrive at, for the cases that have one."""
    on_scene = samples[stop].lat, samples[stop].lon
    if case == "edge_jitter":  # the unit stands 0-10 m outside its edge
        angle, gap = rng.uniform(0.0, math.tau), rng.uniform(0.0, 10.0)
        return offset(*on_scene, (RADIUS_M + gap) * math.cos(angle), (RADIUS_M + gap) * math.sin(angle))
    if case != "drive_by":
        return None
    origin = samples[depart_index].lat, samples[depart_index].lon
    route = samples[depart_index:stop]

    def clearance(s: _Sample) -> float:  # how far the point is from where the unit stands, before and after
        return min(haversine_m(*on_scene, s.lat, s.lon), haversine_m(*origin, s.lat, s.lon))

    candidates = [s for s in route if clearance(s) >= 2.5 * RADIUS_M]
    centre = rng.choice(candidates) if candidates else max(route, key=clearance)
    angle, aside = rng.uniform(0.0, math.tau), rng.uniform(0.0, 20.0)
    return offset(centre.lat, centre.lon, aside * math.cos(angle), aside * math.sin(angle))


def _edge_incident(rng: random.Random, samples: Sequence[_Sample], stop: int, dispatch: int) -> tuple[float, float]:
    """An incident square to the road where the unit rests, 2-10 m inside the edge, that the route came no nearer."""
    rest = samples[stop]
    heading = next((s.heading for s in reversed(samples[:stop]) if s.heading is not None and s.speed > 1.0), 0.0)
    route = [s for s in samples[:stop] if s.ts >= dispatch]
    best: tuple[float, tuple[float, float]] | None = None
    for _ in range(20):
        gap = RADIUS_M - rng.uniform(*EDGE_INSIDE_M)
        centre = abeam(rng, (rest.lat, rest.lon), heading, gap)
        nearest = min((haversine_m(*centre, s.lat, s.lon) for s in route), default=gap) - gap
        if best is None or nearest > best[0]:
            best = nearest, centre
        if nearest >= -2.0:  # nothing earlier on the route was nearer: the edge is crossed on the final approach
            break
    assert best is not None
    return best[1]


def _deliveries(case: str, rng: random.Random, fixes: Sequence[Fix], arrival_truth: int) -> list[list[Fix]]:
    """The fixes in the order and chunks they reach the hub: per publish interval, dead-zone batch last."""
    interval = rng.choice((1000, 1000, 2000, 5000))
    held_from = held_to = batch_at = 0
    if case == "dead_zone":
        span = int(rng.uniform(60.0, 180.0) * 1000)
        held_from = arrival_truth - int(rng.uniform(0.2, 0.8) * span)
        held_to = held_from + span
        batch_at = held_to + rng.randint(5_000, 20_000)
    keyed: list[tuple[int, int, Fix]] = []
    for fix in fixes:
        if held_from <= fix.ts < held_to:
            keyed.append((batch_at, 1, fix))  # after the live fixes published at the same moment
        else:
            keyed.append((-(-fix.ts // interval) * interval, 0, fix))
    keyed.sort(key=lambda k: (k[0], k[1], k[2].ts))
    chunks: list[list[Fix]] = []
    last: tuple[int, int] | None = None
    for at, batch, fix in keyed:
        if (at, batch) != last:
            chunks.append([])
            last = at, batch
        chunks[-1].append(fix)
    return chunks


def simulate(city: City, index: int, seed: int) -> Outcome:
    """Simulate incident ``index`` (its case is ``CASES[index % len(CASES)]``) and run the detectors on it."""
    case = CASES[index % len(CASES)]
    rng = random.Random(seed * 1_000_003 + index)
    far_m = (1200.0, 3000.0) if case == "drive_by" else (500.0, 3000.0)
    samples, dispatch, departure_truth, incident, stop = _drive(city, rng, case, far_m)
    if case == "edge_inside":
        incident = _edge_incident(rng, samples, stop, dispatch)
    arrival_truth = _arrival_truth(samples, stop, incident, dispatch)
    depart_index = next(i for i, s in enumerate(samples) if s.ts >= dispatch)
    decoy = _decoy(case, rng, samples, stop, depart_index)

    gps = GpsModel(random.Random(rng.random()), acc_m=(3.0, 10.0),
                   outlier_probability=0.02 if case == "outliers" else 0.005)
    fixes = [gps.fix(s.ts, s.lat, s.lon, speed=s.speed, heading=s.heading, seq=k) for k, s in enumerate(samples)]
    # The hub knows where the unit was at dispatch from its last fix before it.
    known = next(f for f in reversed(fixes) if f.ts < dispatch)
    arrival = ArrivalDetector(*incident, RADIUS_M, since_ms=dispatch)
    departure = DepartureDetector(known.lat, known.lon, dispatch)
    decoy_detector = None if decoy is None else ArrivalDetector(*decoy, RADIUS_M, since_ms=dispatch)

    outcome = Outcome(index, case, arrival_truth, departure_truth, fixes=len(fixes),
                      notes=_notes(samples, dispatch, arrival_truth, departure_truth, incident, decoy))
    for chunk in _deliveries(case, rng, fixes, arrival_truth):
        # A caller keeps the earliest time it was told (a late batch can only move a stay earlier).
        if (found := arrival.add(chunk)) is not None:
            outcome.arrival_ms = min(found.ts, outcome.arrival_ms or found.ts)
        if (left := departure.add(chunk)) is not None:
            outcome.departure_ms = min(left.ts, outcome.departure_ms or left.ts)
        if decoy_detector is not None and (false := decoy_detector.add(chunk)) is not None:
            outcome.false_arrivals.append(f"{case} decoy at +{(false.ts - dispatch) / 1000:.0f} s")
    # Times relative to dispatch read better in the report; errors do not change.
    for name in ("arrival_truth_ms", "departure_truth_ms", "arrival_ms", "departure_ms"):
        value = getattr(outcome, name)
        setattr(outcome, name, None if value is None else value - dispatch)
    return outcome


def run(incidents: int, seed: int) -> list[Outcome]:
    city = build_city()
    return [simulate(city, i, seed) for i in range(incidents)]


# ---------------------------------------------------------------------- report
def _stats(errors: list[float]) -> tuple[str, str, str, str]:
    if not errors:
        return "-", "-", "-", "-"
    ordered = sorted(abs(e) for e in errors)
    return (f"{sum(ordered) / len(ordered):.2f}", f"{percentile(ordered, 50):.0f}", f"{percentile(ordered, 95):.0f}",
            f"{ordered[-1]:.0f}")


def _row(name: str, group: Sequence[Outcome]) -> list[str]:
    arrivals = [e for o in group if (e := o.arrival_error_s) is not None]
    departures = [e for o in group if (e := o.departure_error_s) is not None]
    a_mean, a_p50, a_p95, a_max = _stats(arrivals)
    d_mean, _, d_p95, d_max = _stats(departures)
    within_a = sum(abs(e) <= ARRIVAL_TARGET_S for e in arrivals) / len(group)
    within_d = sum(abs(e) <= DEPARTURE_TARGET_S for e in departures) / len(group)
    return [name, str(len(group)), f"{len(arrivals)}/{len(group)}", a_mean, a_p50, a_p95, a_max, f"{within_a:.1%}",
            str(sum(len(o.false_arrivals) for o in group)), f"{len(departures)}/{len(group)}", d_mean, d_p95, d_max,
            f"{within_d:.1%}"]


_COLUMNS: Final = ("case", "incidents", "arrived", "arr mean", "p50", "p95", "max", "<=2 s", "false arr",
                   "departed", "dep mean", "p95", "max", "<=3 s")


def render(outcomes: Sequence[Outcome], seed: int, elapsed_s: float) -> str:
    """The printed report: header, machine, table per case and overall, targets with PASS/FAIL, worst cases."""
    m = machine_facts()
    lines = [_HEADER, f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; {m['date']}",
             f"{len(outcomes)} incidents, seed {seed}, {sum(o.fixes for o in outcomes)} fixes at 1 Hz, "
             f"{elapsed_s:.1f} s; errors are |detected - truth| in seconds", ""]
    rows = [_row(c, [o for o in outcomes if o.case == c]) for c in CASES if any(o.case == c for o in outcomes)]
    rows.append(_row("overall", outcomes))
    widths = [max(len(r[k]) for r in [list(_COLUMNS), *rows]) for k in range(len(_COLUMNS))]
    for r in [list(_COLUMNS), *rows]:
        cells = zip(r, widths, strict=True)
        lines.append("  ".join(v.ljust(w) if k == 0 else v.rjust(w) for k, (v, w) in enumerate(cells)))

    late_a = [o for o in outcomes if o.arrival_error_s is None or abs(o.arrival_error_s) > ARRIVAL_TARGET_S]
    missed_a = [o for o in outcomes if o.arrival_ms is None]
    false_a = [o for o in outcomes if o.false_arrivals]
    late_d = [o for o in outcomes if o.departure_error_s is None or abs(o.departure_error_s) > DEPARTURE_TARGET_S]
    targets = [
        ("arrivals detected 100 %", not missed_a, f"{len(outcomes) - len(missed_a)}/{len(outcomes)}"),
        ("arrival |error| <= 2 s", not late_a, f"{len(late_a)} incidents missed or off by more"),
        ("zero false arrivals", not false_a, f"{sum(len(o.false_arrivals) for o in outcomes)} false arrivals"),
        ("departures within 3 s", not late_d, f"{len(late_d)} incidents missed or off by more"),
    ]
    lines += ["", "targets (issue 3):"]
    lines += [f"  {'PASS' if ok else 'FAIL'}  {name:<26} {detail}" for name, ok, detail in targets]

    def worst(title: str, group: list[Outcome], error: str, truth: str, got: str, note: str) -> None:
        def key(o: Outcome) -> float:
            e = getattr(o, error)
            return math.inf if e is None else abs(e)

        lines.append(f"worst {title} (incident, case, truth and detected from dispatch, error):")
        for o in sorted(group, key=key, reverse=True)[:10]:
            e, detected = getattr(o, error), getattr(o, got)
            lines.append(f"  #{o.index:<4} {o.case:<11} truth +{getattr(o, truth) / 1000:.0f} s  detected "
                         + ("never" if detected is None else f"+{detected / 1000:.0f} s  error {e:+.0f} s")
                         + (f"  ({o.notes[note]})" if note in o.notes else ""))

    if late_a:
        worst("arrivals", late_a, "arrival_error_s", "arrival_truth_ms", "arrival_ms", "arrival")
    if false_a:
        lines.append("false arrivals:")
        lines += [f"  #{o.index:<4} {o.case:<11} {'; '.join(o.false_arrivals)}  ({o.notes.get('decoy', '')})"
                  for o in false_a[:10]]
    if late_d:
        worst("departures", late_d, "departure_error_s", "departure_truth_ms", "departure_ms", "departure")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=_HEADER)
    parser.add_argument("--incidents", type=int, default=700, help="simulated incidents (default 700, 100 per case)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args(argv)
    if args.incidents < 1:
        parser.error("--incidents must be >= 1")
    started = time.perf_counter()
    outcomes = run(args.incidents, args.seed)
    print(render(outcomes, args.seed, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
