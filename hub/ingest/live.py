"""The live picture: newest fix and status of every device, folded into units.

Pure domain code: no I/O, time passed in. A fix older than the newest one
already known for its device (a replayed or store-and-forward fix) goes to
history only; it never moves the live position backwards. Neither does a fix
dated further ahead of the hub's clock than ``max_future_ms`` take the live
position: the codec refuses those already, and this keeps one that slipped
through from freezing the device (every true fix would be "older").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devices.payloads import MAX_FUTURE_SKEW_MS, Fix, Status


@dataclass(slots=True)
class DeviceLive:
    device_id: str
    unit_id: str | None
    kind: str | None = None
    fix: Fix | None = None
    state: str | None = None  # last status state: online/offline
    status_ts: int = 0
    battery: float | None = None
    last_seen_ms: int = 0  # hub time of the last message


@dataclass(slots=True)
class UnitLive:
    unit_id: str
    name: str
    kind: str
    devices: list[str]
    home: dict[str, float] | None = None
    capabilities: list[str] = field(default_factory=list)
    status: str = "available"
    fix: Fix | None = None
    fix_device: str | None = None
    online_seen: bool = False  # online flag as last sent to the live feed


def position_view(fix: Fix | None) -> dict[str, Any] | None:
    if fix is None:
        return None
    return {"ts": fix.ts, "lat": fix.lat, "lon": fix.lon, "acc": fix.acc, "speed": fix.speed,
            "heading": fix.heading}


class LiveState:
    """Devices and units as the hub sees them now, with change tracking for the live feed."""

    def __init__(self, stale_after_ms: int = 120_000, max_future_ms: int = MAX_FUTURE_SKEW_MS) -> None:
        self.stale_after_ms = stale_after_ms
        self.max_future_ms = max_future_ms
        self.devices: dict[str, DeviceLive] = {}
        self.units: dict[str, UnitLive] = {}
        self._dirty: set[str] = set()

    # ------------------------------------------------------------ registry
    def registered_kind(self, device_id: str, kind: str) -> None:
        """The kind a device was provisioned with: its kind until its own status says one (a device behind a
        gateway may never send one)."""
        dev = self.devices.get(device_id)
        if dev is not None and dev.kind is None:
            dev.kind = kind

    def register_unit(self, unit_id: str, name: str, kind: str, devices: list[str],
                      home: dict[str, float] | None = None, capabilities: list[str] | None = None) -> None:
        """Create or replace a unit; devices it no longer owns are detached."""
        old = self.units.get(unit_id)
        if old is not None:
            for device_id in old.devices:
                dev = self.devices.get(device_id)
                if dev is not None and device_id not in devices:
                    dev.unit_id = None
        unit = UnitLive(unit_id, name, kind, list(devices), home, list(capabilities or []))
        if old is not None:
            unit.status = old.status
        for device_id in devices:
            dev = self.devices.get(device_id)
            if dev is None:
                self.devices[device_id] = DeviceLive(device_id, unit_id)
            else:
                if dev.unit_id and dev.unit_id != unit_id and dev.unit_id in self.units:
                    other = self.units[dev.unit_id]
                    other.devices = [d for d in other.devices if d != device_id]
                    dev.unit_id = unit_id
                    self._refold(other)
                    self._dirty.add(other.unit_id)
                dev.unit_id = unit_id
        self.units[unit_id] = unit
        self._refold(unit)
        self._dirty.add(unit_id)

    def is_known(self, device_id: str) -> bool:
        return device_id in self.devices

    # -------------------------------------------------------------- updates
    def apply_fix(self, device_id: str, fix: Fix, now_ms: int) -> bool:
        """Take a fix into the live picture; True when it is the device's newest.

        The newest fix of a device that last said ``offline`` brings it back online
        when it is newer than that status (it reconnected, or uploads what it held).
        """
        dev = self.devices[device_id]
        dev.last_seen_ms = now_ms
        if fix.ts > now_ms + self.max_future_ms:
            return False  # history only: the live picture never orders by a future time
        if fix.battery is not None:
            dev.battery = fix.battery
        if dev.fix is not None and fix.ts <= dev.fix.ts:
            return False
        dev.fix = fix
        if dev.state == "offline" and fix.ts > dev.status_ts:
            dev.state = "online"
            if dev.unit_id:
                self._dirty.add(dev.unit_id)
        unit = self.units.get(dev.unit_id) if dev.unit_id else None
        if unit is not None and _better(fix, device_id, unit):
            unit.fix = fix
            unit.fix_device = device_id
            self._dirty.add(unit.unit_id)
        return True

    def apply_status(self, device_id: str, status: Status, now_ms: int) -> bool:
        """Take a status. Statuses apply in arrival order, not by ``ts``: the Last
        Will is composed when the device connects, so its ``offline`` carries an
        older ``ts`` than the ``online`` it ends, yet it is the newer news."""
        dev = self.devices[device_id]
        dev.last_seen_ms = now_ms
        dev.status_ts = status.ts
        dev.state = status.state
        if status.kind:
            dev.kind = status.kind
        if status.battery is not None:
            dev.battery = status.battery
        if dev.unit_id:
            self._dirty.add(dev.unit_id)
        return True

    def set_unit_status(self, unit_id: str, status: str) -> None:
        self.units[unit_id].status = status
        self._dirty.add(unit_id)

    def _refold(self, unit: UnitLive) -> None:
        unit.fix, unit.fix_device = None, None
        for device_id in unit.devices:
            dev = self.devices.get(device_id)
            if dev is not None and dev.fix is not None and _better(dev.fix, device_id, unit):
                unit.fix, unit.fix_device = dev.fix, device_id

    # ---------------------------------------------------------------- views
    def device_online(self, dev: DeviceLive, now_ms: int) -> bool:
        if dev.state == "offline":
            return False
        fresh = dev.fix is not None and now_ms - dev.fix.ts <= self.stale_after_ms
        return fresh or (dev.state == "online" and now_ms - dev.last_seen_ms <= self.stale_after_ms)

    def unit_online(self, unit: UnitLive, now_ms: int) -> bool:
        return any(self.device_online(self.devices[d], now_ms) for d in unit.devices if d in self.devices)

    def unit_view(self, unit_id: str, now_ms: int, *, full: bool = False) -> dict[str, Any]:
        unit = self.units[unit_id]
        online = self.unit_online(unit, now_ms)
        unit.online_seen = online
        view: dict[str, Any] = {
            "unit_id": unit.unit_id, "name": unit.name, "kind": unit.kind,
            "status": unit.status if online else "offline", "online": online,
            "position": position_view(unit.fix),
        }
        if full:
            view["home"] = unit.home
            view["capabilities"] = unit.capabilities
            view["devices"] = [self.device_view(d, now_ms) for d in unit.devices if d in self.devices]
        return view

    def device_view(self, device_id: str, now_ms: int) -> dict[str, Any]:
        dev = self.devices[device_id]
        return {"device_id": dev.device_id, "kind": dev.kind, "online": self.device_online(dev, now_ms),
                "battery": dev.battery, "last_fix_ts": dev.fix.ts if dev.fix else None}

    def snapshot(self, now_ms: int) -> list[dict[str, Any]]:
        return [self.unit_view(u, now_ms) for u in self.units]

    def sweep(self, now_ms: int) -> int:
        """Mark units whose online flag changed by the passing of time (fixes gone stale)."""
        changed = 0
        for unit in self.units.values():
            if self.unit_online(unit, now_ms) != unit.online_seen:
                self._dirty.add(unit.unit_id)
                changed += 1
        return changed

    def take_changes(self, now_ms: int, *, views: bool = True) -> list[dict[str, Any]]:
        """Views of the units changed since the last call (each unit once)."""
        dirty, self._dirty = self._dirty, set()
        if not views:
            return []
        return [self.unit_view(u, now_ms) for u in dirty if u in self.units]


def _better(fix: Fix, device_id: str, unit: UnitLive) -> bool:
    """Should ``fix`` become the unit's position? Newest wins; a near tie goes to the more accurate."""
    current = unit.fix
    if current is None:
        return True
    if device_id == unit.fix_device:
        return fix.ts > current.ts
    if fix.ts > current.ts + 2000:
        return True
    if fix.ts < current.ts - 2000:
        return False
    return (fix.acc if fix.acc is not None else 50.0) < (current.acc if current.acc is not None else 50.0)


CAMERA_KINDS = frozenset({"bodycam", "camera"})  # body cameras and mounted ones (a drone's gimbal camera)


def camera_devices(live: LiveState, unit_id: str) -> list[str]:
    """The unit's cameras: live `kind` "bodycam" or "camera", or (kind unknown) an id ending in "-cam"."""
    unit = live.units.get(unit_id)
    if unit is None:
        return []
    found = []
    for device_id in unit.devices:
        dev = live.devices.get(device_id)
        kind = dev.kind if dev is not None else None
        if kind in CAMERA_KINDS or (kind is None and device_id.endswith("-cam")):
            found.append(device_id)
    return found
