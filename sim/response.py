"""One unit carrying out one dispatch: turnout, the drive, stops on the way, the stay on scene, clearing.

A :class:`Response` moves its :class:`~sim.traffic.SimVehicle` through a :class:`~sim.scenarios.Plan`
on a clock the caller passes in, and returns what the device side must do (hold or release the
uplink, send the contact event, clear) as :class:`Action` values; the runner does the I/O. It also
feeds the response's :class:`~sim.truth.ResponseTruth`. Changes that shape the trajectory
(moving off after the turnout, leaving a stop on the way) happen at their exact instant, not at
the next tick, so the truth's "first sample after the turnout" is exact.

Phases: ``turnout`` (standing, waiting to leave) -> ``driving`` -> [``via`` resting on the way ->
``driving``]* -> ``on_scene`` -> ``cleared``; ``cancelled`` from any of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final, Literal

from geo.geodesy import haversine_m
from sim.scenarios import Plan
from sim.traffic import SimVehicle
from sim.truth import ResponseTruth

__all__ = ["DEFAULT_TIMING", "Action", "Response", "Timing"]

Phase = Literal["turnout", "driving", "via", "on_scene", "cleared", "cancelled"]
ActionKind = Literal["hold", "release", "contact", "clear"]


@dataclass(frozen=True, slots=True)
class Timing:
    """The simulator's default ranges, in seconds, for what a plan leaves open."""

    turnout_s: tuple[float, float] = (15.0, 90.0)
    contact_after_s: tuple[float, float] = (20.0, 90.0)
    on_scene_s: tuple[float, float] = (600.0, 1200.0)
    # A dead zone's batch lands this long before the unit clears (and the incident may be closed).
    release_before_clear_s: float = 30.0


DEFAULT_TIMING: Final = Timing()


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    ts: int


class Response:
    def __init__(self, vehicle: SimVehicle, plan: Plan, incident_id: str, zone: tuple[float, float],
                 radius_m: float, dispatched_ms: int, now_ms: int, rng: random.Random,
                 timing: Timing = DEFAULT_TIMING, unit_id: str = "", cmd_id: str = "") -> None:
        self.vehicle = vehicle
        self.cmd_id = cmd_id
        self.plan = plan
        self.incident_id = incident_id
        self.zone = zone
        self.rng = rng
        self.timing = timing
        self.truth = ResponseTruth(incident_id, unit_id, plan.case, zone, radius_m, dispatched_ms)
        self.phase: Phase = "turnout"
        self._legs = [(s.lat, s.lon, s.hold_s) for s in plan.via]
        self._leg_hold_s = 0.0  # how long to rest at the end of the leg being driven
        self._leg_until: int | None = None
        self.depart_at: int | None = None
        self.stopped_at: int | None = None
        self.held_from: int | None = None
        self.release_at: int | None = None
        self.contact_at: int | None = None
        self.clear_at: int | None = None
        self._released = False
        vehicle.advance(now_ms)
        # A car driving at dispatch keeps going (it may stand at a red light: part of driving);
        # a parked one, or one still standing on a scene, leaves after its turnout.
        if vehicle.state == "driving":
            self._drive_next()
        else:
            turnout = plan.turnout_s if plan.turnout_s is not None else rng.uniform(*timing.turnout_s)
            self.depart_at = now_ms + int(turnout * 1000)

    @property
    def active(self) -> bool:
        return self.phase not in ("cleared", "cancelled")

    @property
    def held(self) -> bool:
        """Whether the unit's uplink is held now (it is in the dead zone)."""
        return self.held_from is not None and not self._released

    def advance(self, now_ms: int) -> list[Action]:
        """Move the car to ``now_ms`` through every scheduled change before it; the device side's actions."""
        actions: list[Action] = []
        while self.active:
            due = self._next_due()
            if due is None or due > now_ms:
                break
            self.vehicle.advance(due)
            actions += self._on_due(due)
        self.vehicle.advance(now_ms)
        if self.active:
            actions += self._watch(now_ms)
        return actions

    def cancel(self, now_ms: int) -> list[Action]:
        """The dispatch was withdrawn: leave and patrol; hand back a held uplink."""
        self.vehicle.advance(now_ms)
        actions = [Action("release", now_ms)] if self.held else []
        self._released = True
        self.phase = "cancelled"
        self.truth.notes["cancelled"] = f"at +{(now_ms - self.truth.dispatched_ms) / 1000:.0f} s"
        self.vehicle.resume_patrol()
        return actions

    # ------------------------------------------------------------- schedule
    def _next_due(self) -> int | None:
        times = [t for t in (self.depart_at if self.phase == "turnout" else None,
                             self._leg_until if self.phase == "via" else None,
                             None if self._released else self.release_at,
                             self.contact_at, self.clear_at) if t is not None]
        return min(times) if times else None

    def _on_due(self, t: int) -> list[Action]:
        if self.phase == "turnout" and t == self.depart_at:
            self.depart_at = None
            self._drive_next()
            return []
        if self.phase == "via" and t == self._leg_until:
            self._leg_until = None
            self._drive_next()
            return []
        if not self._released and t == self.release_at:
            self._released = True
            assert self.held_from is not None
            self.truth.uplink_held = (self.held_from, t)
            return [Action("release", t)]
        if t == self.contact_at:
            self.contact_at = None
            self.truth.contact_ms = t
            return [Action("contact", t)]
        # clear_at
        self.clear_at = None
        self.phase = "cleared"
        self.truth.cleared_ms = t
        if self.plan.after_clear == "patrol":
            self.vehicle.resume_patrol()
        else:
            self.vehicle.park()
        return [Action("clear", t)]

    def _drive_next(self) -> None:
        if self._legs:
            lat, lon, self._leg_hold_s = self._legs.pop(0)
        else:
            lat, lon = self.plan.rest_at or self.zone
            self._leg_hold_s = -1.0  # the scene: no hold, the stay
        self.phase = "driving"
        self.vehicle.drive_to_point(lat, lon)

    # ---------------------------------------------------------------- state
    def _watch(self, now_ms: int) -> list[Action]:
        """Changes the car's own movement brings: resting at a stop, nearing the scene in a dead zone."""
        actions: list[Action] = []
        final = self._leg_hold_s < 0.0
        dz = self.plan.dead_zone
        if dz is not None and self.held_from is None and final and self.phase == "driving" \
                and haversine_m(*self.zone, *self.vehicle.position) <= dz.start_within_m:
            self.held_from = now_ms
            actions.append(Action("hold", now_ms))
        if self.phase == "driving" and self.vehicle.state == "on_scene":
            if not final:
                self.phase = "via"
                self._leg_until = now_ms + int(self._leg_hold_s * 1000)
            else:
                self._on_scene(now_ms)
                if dz is not None and self.held_from is None:
                    self.held_from = now_ms
                    actions.append(Action("hold", now_ms))
        if dz is not None and self.held_from is not None and self.stopped_at is not None and self.release_at is None:
            self.release_at = max(self.held_from + int(dz.span_s * 1000), self.stopped_at + int(dz.after_stop_s * 1000))
            assert self.clear_at is not None
            self.clear_at = max(self.clear_at, self.release_at + int(self.timing.release_before_clear_s * 1000))
            self.truth.notes["dead_zone"] = (f"uplink held {(self.release_at - self.held_from) / 1000:.0f} s from "
                                             f"{(self.stopped_at - self.held_from) / 1000:.0f} s before the stop")
        return actions

    def _on_scene(self, now_ms: int) -> None:
        self.phase = "on_scene"
        self.stopped_at = now_ms
        self.truth.stopped(now_ms)
        plan, timing, rng = self.plan, self.timing, self.rng
        contact = plan.contact_after_s if plan.contact_after_s is not None else rng.uniform(*timing.contact_after_s)
        stay = plan.on_scene_s if plan.on_scene_s is not None else rng.uniform(*timing.on_scene_s)
        self.contact_at = now_ms + int(contact * 1000)
        self.clear_at = now_ms + int(max(stay, contact + 1.0) * 1000)
