"""Mission items and the patrol-route builder (pure).

Items are expressed with altitudes relative to home, which is what an operator
means by "fly at 40 m". :func:`wire_fields` gives the MISSION_ITEM_INT fields of an
item; the transfer protocol itself lives in :mod:`drone.mission_protocol`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypedDict

__all__ = [
    "MAV_CMD_NAV_LAND",
    "MAV_CMD_NAV_RETURN_TO_LAUNCH",
    "MAV_CMD_NAV_TAKEOFF",
    "MAV_CMD_NAV_WAYPOINT",
    "MAV_FRAME_GLOBAL_RELATIVE_ALT_INT",
    "MissionItem",
    "WireItem",
    "patrol_mission",
    "wire_fields",
]

MAV_CMD_NAV_WAYPOINT: Final = 16
MAV_CMD_NAV_RETURN_TO_LAUNCH: Final = 20
MAV_CMD_NAV_LAND: Final = 21
MAV_CMD_NAV_TAKEOFF: Final = 22
MAV_FRAME_GLOBAL_RELATIVE_ALT_INT: Final = 6


@dataclass(frozen=True)
class MissionItem:
    lat: float
    lon: float
    alt_m: float  # relative to home
    command: int = MAV_CMD_NAV_WAYPOINT
    hold_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat) and -90.0 <= self.lat <= 90.0):
            raise ValueError(f"latitude {self.lat} outside -90..90")
        if not (math.isfinite(self.lon) and -180.0 <= self.lon <= 180.0):
            raise ValueError(f"longitude {self.lon} outside -180..180")
        if not math.isfinite(self.alt_m) or not math.isfinite(self.hold_s) or self.hold_s < 0:
            raise ValueError("altitude and hold time must be finite, hold time >= 0")


class WireItem(TypedDict):
    seq: int
    frame: int
    command: int
    current: int
    autocontinue: int
    param1: float
    param2: float
    param3: float
    param4: float
    x: int
    y: int
    z: float


def wire_fields(item: MissionItem, seq: int) -> WireItem:
    """MISSION_ITEM_INT fields of ``item`` at position ``seq`` (lat/lon in degE7)."""
    # A waypoint's param1 is its hold time; for takeoff/land/RTL param1 means something
    # else (pitch, abort alt...) and 0 is the autopilot default.
    param1 = item.hold_s if item.command == MAV_CMD_NAV_WAYPOINT else 0.0
    return WireItem(
        seq=seq,
        frame=MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
        command=item.command,
        current=0,
        autocontinue=1,
        param1=param1,
        param2=0.0,
        param3=0.0,
        param4=0.0,
        x=round(item.lat * 1e7),
        y=round(item.lon * 1e7),
        z=float(item.alt_m),
    )


def patrol_mission(
    route: Sequence[tuple[float, float]],
    alt_m: float,
    *,
    home: tuple[float, float] | None = None,
    takeoff: bool = True,
    rtl: bool = True,
) -> list[MissionItem]:
    """A patrol: [home placeholder], [takeoff], one waypoint per route point, [RTL].

    ArduPilot always treats mission item 0 as home and overwrites it with the real
    home, so item 0 is a placeholder (``home`` or the first route point, at 0 m);
    without it the takeoff would be swallowed as "home".
    """
    if not route:
        raise ValueError("a patrol route needs at least one point")
    if not math.isfinite(alt_m) or alt_m <= 0:
        raise ValueError(f"patrol altitude must be > 0 m, got {alt_m}")
    first_lat, first_lon = route[0]
    home_lat, home_lon = home if home is not None else (first_lat, first_lon)
    items = [MissionItem(home_lat, home_lon, 0.0)]
    if takeoff:
        items.append(MissionItem(first_lat, first_lon, alt_m, command=MAV_CMD_NAV_TAKEOFF))
    items.extend(MissionItem(lat, lon, alt_m) for lat, lon in route)
    if rtl:
        items.append(MissionItem(0.0, 0.0, 0.0, command=MAV_CMD_NAV_RETURN_TO_LAUNCH))
    return items
