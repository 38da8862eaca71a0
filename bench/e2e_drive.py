"""One simulated response through the real hub, measured against the simulator's ground truth.

:class:`Drill` plays the dispatcher for the end-to-end accuracy benchmark and its tests: it readies a
unit of a running :class:`~sim.runner.CitySim` for a case (standing, or driving at speed), places an
incident for it (:mod:`sim.scenarios` builds the hard cases' geometry on the unit's real route),
posts it, tells the simulator the plan, dispatches the unit over the API, waits until the unit
clears, closes the incident and reads back what the hub recorded. An :class:`Outcome` pairs that
with the :class:`~sim.truth.Truth` of the response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import httpx

from sim.fleet import SimUnit
from sim.incidents import MIX, SUMMARIES, draw_call
from sim.runner import DEFAULT_RADIUS_M, CitySim
from sim.scenarios import OUTLIER_PROBABILITY, DeadZone, Plan, address_near, edge_scene, overshoot_stop
from sim.truth import Truth

__all__ = ["MILESTONES", "Drill", "Outcome", "expected_radius", "plan_case"]

MILESTONES: Final = ("acknowledged", "departed", "arrived", "contacted")
BENCH_MIX: Final = tuple(c for c in MIX if c.category != "consumer_dispute")  # that one goes to 12345, not police
FAR_M: Final = (500.0, 1500.0)  # from the unit to the incident, as the crow flies
PATROL_WARM_UP_S: Final = 20.0
STAND_BEFORE_S: Final = 10.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def expected_radius(category: str) -> float:
    """The arrival zone the hub's default category rules give ``category`` (SPEC default 100 m without them)."""
    try:
        from hub.domain.categories import DEFAULT_CATEGORY_RULES
    except ImportError:  # a hub without per-category zones
        return DEFAULT_RADIUS_M
    return float(DEFAULT_CATEGORY_RULES.arrival_radius_m(category))


def plan_case(case: str, unit: SimUnit, now_ms: int, rng: random.Random, radius_m: float
              ) -> tuple[tuple[float, float], Plan] | None:
    """Where the incident is and what the unit does, for ``case``; None when the geometry was not found."""
    vehicle = unit.vehicle
    city = vehicle.city
    if case in ("edge_jitter", "edge_outside"):
        gap = (-5.0, 10.0) if case == "edge_jitter" else (10.0, 30.0)
        found = edge_scene(vehicle, now_ms, rng, radius_m, gap, FAR_M)
        return None if found is None else (found[0], Plan(case, rest_at=found[1]))
    if case == "drive_by":
        for _ in range(10):
            incident = address_near(city, rng, vehicle.position, 800.0, FAR_M[1])
            stop = overshoot_stop(vehicle, now_ms, incident, radius_m, rng)
            if stop is not None:
                return incident, Plan(case, via=(stop,))
        return None
    if case == "dead_zone":
        incident = address_near(city, rng, vehicle.position, 800.0, FAR_M[1])
        zone = DeadZone(radius_m + rng.uniform(50.0, 300.0), rng.uniform(60.0, 180.0), rng.uniform(10.0, 40.0))
        return incident, Plan(case, dead_zone=zone)
    incident = address_near(city, rng, vehicle.position, *FAR_M)
    if case == "outliers":
        return incident, Plan(case, outlier_probability=OUTLIER_PROBABILITY)
    if case in ("parked", "patrolling"):
        return incident, Plan(case)
    raise ValueError(f"unknown case {case!r}")


@dataclass
class Outcome:
    """One incident: the hub's milestones of the unit against the truth (epoch ms); errors are hub - truth."""

    index: int
    case: str
    unit_id: str
    incident_id: str = ""
    category: str = ""
    radius_m: float = DEFAULT_RADIUS_M
    truth: Truth | None = None
    hub: dict[str, int | None] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    sla: list[dict[str, Any]] = field(default_factory=list)
    problem: str = ""  # why the response could not be measured

    def error_s(self, milestone: str) -> float | None:
        got = self.hub.get(milestone)
        want = None if self.truth is None else getattr(self.truth, milestone)
        return None if got is None or want is None else (got - want) / 1000

    @property
    def false_arrival(self) -> bool:
        return self.truth is not None and self.truth.arrived is None and self.hub.get("arrived") is not None

    @property
    def missed_arrival(self) -> bool:
        return self.truth is not None and self.truth.arrived is not None and self.hub.get("arrived") is None

    def arrival_within(self, target_s: float) -> bool:
        """The hub's arrival is within ``target_s`` of the truth, or of the span the car spent at the edge."""
        got = self.hub.get("arrived")
        if got is None or self.truth is None or self.truth.arrived is None:
            return False
        lo, hi = self.truth.edge_span or (self.truth.arrived, self.truth.arrived)
        return min(lo, self.truth.arrived) - target_s * 1000 <= got <= max(hi, self.truth.arrived) + target_s * 1000

    @property
    def missed_at_edge(self) -> bool:
        """A miss of a car that came to rest within the GPS noise of the edge (see :mod:`sim.truth`)."""
        return self.missed_arrival and self.truth is not None and self.truth.rests_at_edge

    def since_dispatch(self, ts: int | None) -> str:
        if ts is None or self.truth is None:
            return "never"
        return f"+{(ts - self.truth.dispatched) / 1000:.1f} s"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Outcome:
        """An outcome as :meth:`to_dict` saved it (to re-render a saved run)."""
        t = d.get("truth")
        truth = None if t is None else Truth(**{**t, "zone": tuple(t["zone"]), "uplink_held": None if t.get(
            "uplink_held") is None else tuple(t["uplink_held"]), "edge_span": None if t.get(
            "edge_span") is None else tuple(t["edge_span"])})
        return cls(d["index"], d["case"], d["unit_id"], d.get("incident_id", ""), d.get("category", ""),
                   d.get("radius_m", DEFAULT_RADIUS_M), truth, dict(d.get("hub") or {}), dict(d.get("sources") or {}),
                   problem=d.get("problem", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "case": self.case, "unit_id": self.unit_id, "incident_id": self.incident_id,
                "category": self.category, "radius_m": self.radius_m, "problem": self.problem,
                "truth": None if self.truth is None else self.truth.to_dict(), "hub": self.hub,
                "sources": self.sources, "errors_s": {m: self.error_s(m) for m in MILESTONES},
                "false_arrival": self.false_arrival, "missed_arrival": self.missed_arrival}


class Drill:
    """The dispatcher of the benchmark: one case at a time per unit, many units at once."""

    def __init__(self, sim: CitySim, api: httpx.AsyncClient, rng: random.Random, *, settle_s: float = 3.0,
                 clear_timeout_s: float = 1200.0, stand_s: float = STAND_BEFORE_S) -> None:
        self.sim = sim
        self.stand_s = stand_s
        self.api = api
        self.rng = rng
        self.settle_s = settle_s
        self.clear_timeout_s = clear_timeout_s
        self._cleared: dict[str, asyncio.Future[str]] = {}
        sim.on_clear.append(self._on_clear)
        for unit in sim.units:
            unit.vehicle.park_probability = 0.0  # a patrolling unit keeps driving until it is sent

    def _on_clear(self, unit_id: str, incident_id: str) -> None:
        waiter = self._cleared.get(incident_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(unit_id)

    async def ready(self, unit: SimUnit, case: str) -> None:
        """Standing for a while, or driving at speed after a warm-up, as ``case`` starts."""
        vehicle = unit.vehicle
        if case == "patrolling":
            if vehicle.state != "driving":
                vehicle.resume_patrol()
            await asyncio.sleep(PATROL_WARM_UP_S)
            while not (vehicle.state == "driving" and vehicle.speed >= 5.0):
                await asyncio.sleep(0.1)
        else:
            if vehicle.state == "driving":
                raise RuntimeError(f"{unit.unit_id} is driving; a standing case needs it parked (after_clear='stay')")
            await asyncio.sleep(self.stand_s)

    async def _caught_up(self, unit: SimUnit, truth: Truth | None, limit_s: float = 60.0) -> None:
        """Wait until the hub has taken in the unit's fixes up to its clearing: closing earlier would
        refuse milestones a lagging hub has yet to detect (a busy machine, a dead zone's batch)."""
        if truth is None or truth.cleared is None:
            return
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            r = await self.api.get(f"/api/v1/units/{unit.unit_id}")
            position = r.json().get("position") if r.status_code == 200 else None
            if position is not None and position["ts"] >= truth.cleared:
                return
            await asyncio.sleep(0.5)

    async def respond(self, index: int, unit: SimUnit, case: str, *, after_clear: Literal["patrol", "stay"] = "stay",
                      category: str | None = None, priority: int | None = None,
                      plan: tuple[tuple[float, float], Plan] | None = None) -> Outcome:
        """Run one incident end to end; ``plan`` (incident, plan) overrides the case's own."""
        outcome = Outcome(index, case, unit.unit_id)
        await self.ready(unit, case)
        drawn_category, drawn_priority = draw_call(self.rng, BENCH_MIX)
        outcome.category = category or drawn_category
        radius = expected_radius(outcome.category)
        planned = plan or plan_case(case, unit, _now_ms(), self.rng, radius)
        if planned is None:
            outcome.problem = "no geometry for the case found"
            return outcome
        (lat, lon), chosen = planned
        chosen = dataclasses.replace(chosen, after_clear=after_clear)
        body = {"category": outcome.category, "priority": priority or max(2, drawn_priority), "lat": round(lat, 7),
                "lon": round(lon, 7), "summary": f"bench {case}: {SUMMARIES.get(outcome.category, '')}",
                "divert": False}
        r = await self.api.post("/api/v1/incidents", json=body)
        if r.status_code != 201:
            outcome.problem = f"incident refused: HTTP {r.status_code} {r.text[:200]}"
            return outcome
        view = r.json()
        outcome.incident_id = incident_id = view["id"]
        given = view.get("arrival_radius_m")
        outcome.radius_m = float(given) if isinstance(given, int | float) else DEFAULT_RADIUS_M
        waiter = self._cleared[incident_id] = asyncio.get_running_loop().create_future()
        self.sim.expect(incident_id, unit.unit_id, chosen, outcome.radius_m)
        r = await self.api.post(f"/api/v1/incidents/{incident_id}/dispatch", json={"unit_ids": [unit.unit_id]})
        if r.status_code != 200:
            outcome.problem = f"dispatch refused: HTTP {r.status_code} {r.text[:200]}"
            return outcome
        try:
            await asyncio.wait_for(waiter, self.clear_timeout_s)
        except TimeoutError:
            outcome.problem = f"the unit did not clear within {self.clear_timeout_s:.0f} s"
        await self._caught_up(unit, self.sim.truth.get(incident_id, unit.unit_id))
        await asyncio.sleep(self.settle_s)  # the detectors work through what the hub took in
        r = await self.api.post(f"/api/v1/incidents/{incident_id}/close", json={"reason": "bench"})
        if r.status_code != 200:
            outcome.problem = outcome.problem or f"close refused: HTTP {r.status_code} {r.text[:200]}"
        final = (await self.api.get(f"/api/v1/incidents/{incident_id}")).json()
        assignment: dict[str, Any] = next(
            (a for a in final.get("assignments", []) if a["unit_id"] == unit.unit_id), {})
        outcome.hub = {m: assignment.get(m) for m in MILESTONES}
        outcome.sources = dict(assignment.get("sources") or {})
        outcome.sla = list(final.get("sla") or [])
        outcome.truth = self.sim.truth.get(incident_id, unit.unit_id)
        if outcome.truth is None:
            outcome.problem = outcome.problem or "the simulator kept no truth"
        return outcome
