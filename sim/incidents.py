"""Calls for the simulated city: incidents arrive at random, get dispatched and are closed.

:class:`IncidentGenerator` plays the callers and the dispatcher against a hub's HTTP API:

- it posts incidents as a Poisson stream at ``rate_per_min``, category and priority drawn from a
  city 110 centre's mix (``MIX``), at addresses on or near the road graph;
- priority 1 is dispatched by the hub itself on creation; for the others, or a priority 1 the hub
  could not place, the dispatcher asks for the best unit (``{"auto": true}``) after a short delay,
  again while no unit is free, and gives up (closes the incident) after ``give_up_s``;
- it closes an incident ``close_delay_s`` after its unit clears (hook :meth:`unit_cleared` to
  :attr:`sim.runner.CitySim.on_clear`; with ``close_any`` also incidents others created), and any
  incident still open after ``max_open_s``.

The hub diverts non-police categories to the 12345 hotline by its rules; those are left to it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Self

import httpx

from sim.city import City
from sim.scenarios import random_address

__all__ = ["MIX", "CallType", "IncidentGenerator", "arrival_gaps", "draw_call"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallType:
    """A category of call, how common it is, and the weights of its priorities (1 highest)."""

    category: str
    weight: float
    priorities: tuple[tuple[int, float], ...]


# A city 110 centre's day, roughly: property crime, disputes and traffic lead; violent crime, fire and
# medical calls are rarer but mostly urgent. Weights are relative.
MIX: Final = (
    CallType("theft", 20.0, ((2, 1.0), (3, 6.0), (4, 3.0))),
    CallType("dispute", 14.0, ((2, 2.0), (3, 6.0), (4, 2.0))),
    CallType("traffic_accident", 14.0, ((1, 1.0), (2, 5.0), (3, 4.0))),
    CallType("noise", 8.0, ((3, 3.0), (4, 7.0))),
    CallType("suspicious_person", 8.0, ((2, 3.0), (3, 7.0))),
    CallType("assault", 7.0, ((1, 5.0), (2, 5.0))),
    CallType("medical", 6.0, ((1, 4.0), (2, 6.0))),
    CallType("burglary", 6.0, ((2, 6.0), (3, 4.0))),
    CallType("domestic_violence", 4.0, ((1, 6.0), (2, 4.0))),
    CallType("robbery", 3.0, ((1, 8.0), (2, 2.0))),
    CallType("missing_person", 3.0, ((1, 3.0), (2, 7.0))),
    CallType("fraud", 3.0, ((3, 5.0), (4, 5.0))),
    CallType("fire", 2.0, ((1, 9.0), (2, 1.0))),
    CallType("consumer_dispute", 2.0, ((4, 1.0),)),  # non-emergency, non-police: the hub diverts it to 12345
)
SUMMARIES: Final = {"theft": "bicycle stolen", "dispute": "argument between neighbours", "noise": "loud music",
                    "traffic_accident": "two cars collided", "suspicious_person": "man trying car doors",
                    "assault": "fight outside a bar", "medical": "person collapsed", "burglary": "shop broken into",
                    "domestic_violence": "shouting and screaming", "robbery": "phone snatched at knifepoint",
                    "missing_person": "child not home from school", "fraud": "phone scam reported",
                    "fire": "smoke from a window", "consumer_dispute": "refund refused"}


def draw_call(rng: random.Random, mix: Sequence[CallType] = MIX) -> tuple[str, int]:
    """A category and a priority from ``mix``."""
    call = rng.choices(mix, weights=[c.weight for c in mix])[0]
    priority = rng.choices([p for p, _ in call.priorities], weights=[w for _, w in call.priorities])[0]
    return call.category, priority


def arrival_gaps(rng: random.Random, rate_per_min: float) -> Iterator[float]:
    """Seconds between calls of a Poisson stream: exponential gaps of mean ``60 / rate_per_min``."""
    if rate_per_min <= 0:
        raise ValueError("rate_per_min must be > 0")
    while True:
        yield rng.expovariate(rate_per_min / 60.0)


class IncidentGenerator:
    """Posts, dispatches and closes incidents at a hub (see the module doc). Use as ``async with``."""

    def __init__(self, hub_url: str, token: str, city: City, *, rate_per_min: float, seed: int = 11,
                 mix: Sequence[CallType] = MIX, dispatch_delay_s: tuple[float, float] = (5.0, 30.0),
                 retry_s: float = 30.0, give_up_s: float = 600.0, close_delay_s: tuple[float, float] = (10.0, 60.0),
                 max_open_s: float = 7200.0, radii: dict[str, float] | None = None, close_any: bool = False,
                 support_share: tuple[float, float] = (0.2, 1.2)) -> None:
        self.hub_url = hub_url.rstrip("/")
        self.token = token
        self.city = city
        self.rate_per_min = rate_per_min
        self.rng = random.Random(seed)  # what the calls are and where
        self.schedule_rng = random.Random(seed + 1)  # when they come: its own stream, so the schedule is the seed's
        self.mix = mix
        self.dispatch_delay_s = dispatch_delay_s
        self.retry_s = retry_s
        self.give_up_s = give_up_s
        self.close_delay_s = close_delay_s
        self.max_open_s = max_open_s
        self.radii = radii if radii is not None else {}  # incident_id -> arrival radius, for the simulator's truth
        self.close_any = close_any  # also close incidents others created once a simulated unit cleared them
        self.created: list[dict[str, Any]] = []  # the incidents as the hub returned them on creation
        self.counts = {"posted": 0, "refused": 0, "diverted": 0, "auto_dispatched": 0, "dispatched": 0,
                       "no_unit": 0, "closed": 0, "errors": 0}
        self._open: dict[str, float] = {}  # incident_id -> monotonic creation time, while we may close it
        self._tasks: set[asyncio.Task[None]] = set()
        # The analyst's timers: minutes long, so not waited for by wait_idle (cancelled on exit).
        self._support: set[asyncio.Task[None]] = set()
        self.support_share = support_share  # the analyst's delay, as a share of the policy's `supported` target
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._http = httpx.AsyncClient(base_url=self.hub_url, headers={"Authorization": f"Bearer {self.token}"},
                                       timeout=10.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in [*self._tasks, *self._support]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._support, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("use the generator as `async with IncidentGenerator(...)`")
        return self._http

    # ------------------------------------------------------------- the calls
    async def run(self, duration_s: float | None = None) -> int:
        """Post calls for ``duration_s`` seconds (forever when None); how many were posted.

        Calls are due at absolute times, so a slow POST does not slow the stream down.
        """
        started = time.monotonic()
        due = started
        next_sweep = started + 30.0
        for gap in arrival_gaps(self.schedule_rng, self.rate_per_min):
            due += gap
            if duration_s is not None and due - started > duration_s:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self.post_one()
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + 30.0
        if duration_s is not None:
            await asyncio.sleep(max(0.0, started + duration_s - time.monotonic()))
        return self.counts["posted"]

    async def post_one(self) -> dict[str, Any] | None:
        """Post one call from the mix at a random address; the incident as created, None if refused."""
        category, priority = draw_call(self.rng, self.mix)
        lat, lon = random_address(self.city, self.rng)
        body = {"category": category, "priority": priority, "lat": round(lat, 7), "lon": round(lon, 7),
                "address": f"near {lat:.5f}, {lon:.5f}", "summary": SUMMARIES.get(category, category)}
        try:
            r = await self.http.post("/api/v1/incidents", json=body)
        except httpx.HTTPError as exc:
            self.counts["errors"] += 1
            log.warning("incident not posted: %s", exc)
            return None
        if r.status_code != 201:
            self.counts["refused"] += 1
            log.warning("hub refused an incident: HTTP %d %s", r.status_code, r.text[:200])
            return None
        view: dict[str, Any] = r.json()
        self.counts["posted"] += 1
        self.created.append(view)
        incident_id = view["id"]
        if isinstance(view.get("arrival_radius_m"), int | float):
            self.radii[incident_id] = float(view["arrival_radius_m"])
        if view.get("status") == "diverted":
            self.counts["diverted"] += 1
            return view
        self._open[incident_id] = time.monotonic()
        targets = {t.get("milestone"): t.get("seconds") for t in view.get("sla") or [] if isinstance(t, dict)}
        support_s = targets.get("supported")
        if isinstance(support_s, int):
            task = asyncio.create_task(self._support_later(incident_id, support_s))
            self._support.add(task)
            task.add_done_callback(self._support.discard)
        if view.get("assignments"):
            self.counts["auto_dispatched"] += 1
        else:
            self._spawn(self._dispatch_later(incident_id))
        return view

    # ------------------------------------------------------------ dispatcher
    async def _support_later(self, incident_id: str, target_s: int) -> None:
        """The analyst attaches support (研判赋能): mostly within the policy's target, sometimes late."""
        await asyncio.sleep(self.rng.uniform(*self.support_share) * target_s)
        if incident_id not in self._open:
            return
        try:
            await self.http.post(f"/api/v1/incidents/{incident_id}/events",
                                 json={"type": "supported", "text": "analyst support (simulated)"})
        except httpx.HTTPError as exc:
            log.warning("support of %s not posted: %s", incident_id, exc)

    async def _dispatch_later(self, incident_id: str) -> None:
        await asyncio.sleep(self.rng.uniform(*self.dispatch_delay_s))
        deadline = time.monotonic() + self.give_up_s
        while incident_id in self._open:
            try:
                r = await self.http.post(f"/api/v1/incidents/{incident_id}/dispatch", json={"auto": True})
            except httpx.HTTPError as exc:
                log.warning("dispatch of %s failed: %s", incident_id, exc)
            else:
                if r.status_code == 200:
                    self.counts["dispatched"] += 1
                    return
                if r.status_code != 409:  # 409: nobody free now, or the incident moved on
                    log.warning("dispatch of %s refused: HTTP %d %s", incident_id, r.status_code, r.text[:200])
                    return
            if time.monotonic() + self.retry_s > deadline:
                self.counts["no_unit"] += 1
                await self.close(incident_id, "no unit available (simulated dispatcher gave up)")
                return
            await asyncio.sleep(self.retry_s)

    def unit_cleared(self, unit_id: str, incident_id: str) -> None:
        """A simulated unit cleared the incident: close it a little later, as a dispatcher would."""
        if self.close_any:
            self._open.setdefault(incident_id, time.monotonic())
        if incident_id in self._open:
            self._spawn(self._close_later(incident_id, f"cleared by {unit_id} (simulated)"))

    async def _close_later(self, incident_id: str, reason: str) -> None:
        await asyncio.sleep(self.rng.uniform(*self.close_delay_s))
        await self.close(incident_id, reason)

    async def close(self, incident_id: str, reason: str) -> None:
        if self._open.pop(incident_id, None) is None:
            return
        try:
            r = await self.http.post(f"/api/v1/incidents/{incident_id}/close", json={"reason": reason})
        except httpx.HTTPError as exc:
            log.warning("close of %s failed: %s", incident_id, exc)
            return
        if r.status_code == 200:
            self.counts["closed"] += 1
        elif r.status_code != 409:  # 409: closed by someone else already
            log.warning("close of %s refused: HTTP %d %s", incident_id, r.status_code, r.text[:200])

    def _sweep(self) -> None:
        """Close what stayed open too long (a unit that never cleared, a hub that escalated elsewhere)."""
        now = time.monotonic()
        for incident_id, created in list(self._open.items()):
            if now - created > self.max_open_s:
                self._spawn(self.close(incident_id, "open too long (simulated dispatcher)"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        """Wait for the pending dispatches and closes (tests, a bounded run's end)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

