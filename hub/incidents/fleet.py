"""The fleet as dispatch sees it: the live picture kept in step with the dispatch recommender.

The recommender (`hub.domain.dispatch`) is pure; this adapter feeds it. Fixes reach it from the
ingest listener (`observe`); units registered, re-registered or changed since the last
recommendation are brought in by a cheap incremental pass (`sync`) rather than a rebuild, so a
dispatch with 10,000 live units costs a few milliseconds. A unit's status is set in both places
at once (`set_status`).
"""

from __future__ import annotations

from collections.abc import Collection

from devices.payloads import Fix
from hub.domain.dispatch import Candidate, Recommendation, Recommender
from hub.ingest.live import LiveState, UnitLive

__all__ = ["DRONE_KIND", "Fleet"]

DRONE_KIND = "drone"  # drones are sent by the drone endpoint, never as an incident's ground unit
TAK_KIND = "tak"  # allied TAK users (hub.gateways.tak): shown on the map, never the hub's to dispatch
NOT_RECOMMENDED = frozenset({DRONE_KIND, TAK_KIND})
MAX_FIX_AGE_MS = 60_000


class Fleet:
    def __init__(self, live: LiveState, recommender: Recommender | None = None) -> None:
        self.live = live
        self.recommender = recommender if recommender is not None else Recommender()  # an empty one is falsy
        # The UnitLive object and status each unit was last synced from, units whose online flag may have
        # changed, units synced as offline, and every unit kind seen.
        self._synced: dict[str, tuple[UnitLive, str]] = {}
        self._resync: set[str] = set()
        self._synced_offline: set[str] = set()
        self._kinds: set[str] = set()

    def observe(self, unit_id: str, fixes: list[Fix], status_changed: bool) -> None:
        """Ingest listener: the unit got fixes and/or a device status (synchronous and cheap)."""
        if status_changed or unit_id in self._synced_offline:
            self._resync.add(unit_id)  # its online flag may have changed
        if fixes and unit_id in self.recommender:
            self.recommender.move_unit(unit_id, max(fixes, key=lambda f: f.ts))

    def set_status(self, unit_id: str, status: str) -> None:
        if unit_id in self.live.units:
            self.live.set_unit_status(unit_id, status)
        if unit_id in self.recommender:
            self.recommender.set_status(unit_id, status)

    def recommend(self, lat: float, lon: float, now_ms: int, count: int, *,
                  exclude: Collection[str] = (), kinds: Collection[str] | None = None) -> list[Recommendation]:
        """The best `count` available ground units (drones only when `kinds` asks for them), minus `exclude`.
        Allied TAK users (kind "tak") are on the map but not the hub's to send: never recommended unless asked."""
        self.sync(now_ms)
        wanted = kinds if kinds is not None else [k for k in self._kinds if k not in NOT_RECOMMENDED]
        if not wanted:
            return []
        found = self.recommender.recommend(lat, lon, now_ms, count=count + len(exclude), kinds=wanted,
                                           max_fix_age_ms=MAX_FIX_AGE_MS)
        return [r for r in found if r.unit_id not in exclude][:count]

    def sync(self, now_ms: int) -> None:
        """Bring units registered, re-registered or changed since the last call into the recommender.

        Incremental: a pass over the registry compares object identity and status only (cheap; a
        re-registration makes a new UnitLive); fixes reach the recommender from `observe`; the online
        check runs only for units that got a status message or a fix while synced as offline. Online
        turns false by time alone only when no device has a fix younger than ``stale_after_ms``, and a
        unit is only recommended with a fix younger than ``MAX_FIX_AGE_MS``, so with ``stale_after_ms``
        at least that, a flag left stale this way cannot make a unit wrongly eligible; below it, every
        unit is re-checked each call.
        """
        live, synced, resync = self.live, self._synced, self._resync
        full = live.stale_after_ms < MAX_FIX_AGE_MS
        for unit_id, unit in live.units.items():
            seen = synced.get(unit_id)
            if full or seen is None or seen[0] is not unit or seen[1] != unit.status:
                resync.add(unit_id)
        self._resync = set()
        for unit_id in resync:
            changed = live.units.get(unit_id)
            if changed is not None:
                self._sync_unit(unit_id, changed, now_ms)

    def _sync_unit(self, unit_id: str, unit: UnitLive, now_ms: int) -> None:
        online = self.live.unit_online(unit, now_ms)
        seen = self._synced.get(unit_id)
        if unit_id not in self.recommender or seen is None or seen[0] is not unit:  # kind, capabilities, devices
            self.recommender.update_unit(
                Candidate(unit_id, unit.kind, frozenset(unit.capabilities), unit.status, online, unit.fix))
            self._kinds.add(unit.kind)
        else:
            self.recommender.set_status(unit_id, unit.status, online=online)
            if unit.fix is not None:
                self.recommender.move_unit(unit_id, unit.fix)
        self._synced[unit_id] = (unit, unit.status)
        if online:
            self._synced_offline.discard(unit_id)
        else:
            self._synced_offline.add(unit_id)
