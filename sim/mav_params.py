"""ArduCopter's parameters for the simulated copter, and the vehicle side of the MAVLink parameter protocol.

The table (:data:`PARAMS`) names each simulated ArduCopter parameter, its
MAV_PARAM_TYPE, its range and units, and the :class:`~sim.arducopter.CopterConfig`
field it stands for: the configuration is the store, so a parameter set over
the wire changes how the copter flies at once and, like ArduPilot's storage,
outlives a reboot. Defaults are the config's defaults (a stock ArduCopter's
FS_GCS_ENABLE=0 and MAV_GCS_SYSID=255 among them). The table and its functions
are pure; :class:`ParamServer` answers PARAM_REQUEST_READ, PARAM_REQUEST_LIST
and PARAM_SET for one drone as ArduPilot does: PARAM_VALUE carries the value as a
float whatever its type, with param_count and param_index; an unknown name gets
no answer; an out-of-range value is ignored with a STATUSTEXT.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

os.environ.setdefault("MAVLINK20", "1")
from pymavlink.dialects.v20 import ardupilotmega as M

from sim.arducopter import CopterConfig
from sim.mav_vehicle import Vehicle

__all__ = ["PARAMS", "ParamServer", "ParamSpec", "ParamType", "apply_params", "check_value", "find_param",
           "param_value", "write_param"]

_LIST_PER_TICK: Final = 10  # PARAM_REQUEST_LIST answers paced like ArduPilot's, not in one burst
_NAME_LEN: Final = 16


class ParamType(IntEnum):
    """MAV_PARAM_TYPE of the simulated parameters."""

    INT8 = 2
    INT16 = 4
    INT32 = 6
    REAL32 = 9


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter: its name and type, its range in its own units, and the config field it stands for."""

    name: str
    type: ParamType
    field: str  # a CopterConfig attribute
    scale: float  # parameter units per config unit (100 for cm/s against m/s)
    low: float
    high: float

    @property
    def is_int(self) -> bool:
        return self.type is not ParamType.REAL32


PARAMS: Final[tuple[ParamSpec, ...]] = (
    ParamSpec("ARMING_CHECK", ParamType.INT32, "arming_check", 1, 0, 0xFFFFFF),
    ParamSpec("DISARM_DELAY", ParamType.INT8, "disarm_delay_s", 1, 0, 127),
    ParamSpec("FS_GCS_ENABLE", ParamType.INT8, "fs_gcs_enable", 1, 0, 7),
    ParamSpec("FS_GCS_TIMEOUT", ParamType.REAL32, "fs_gcs_timeout_s", 1, 2, 120),
    ParamSpec("LAND_SPEED", ParamType.INT16, "land_mps", 100, 30, 200),
    ParamSpec("MAV_GCS_SYSID", ParamType.INT16, "gcs_sysid", 1, 1, 255),
    ParamSpec("RTL_ALT", ParamType.INT32, "rtl_alt_m", 100, 200, 300_000),
    ParamSpec("RTL_LOIT_TIME", ParamType.INT32, "rtl_loiter_s", 1000, 0, 60_000),
    ParamSpec("WPNAV_ACCEL", ParamType.REAL32, "accel_mps2", 100, 50, 500),
    ParamSpec("WPNAV_RADIUS", ParamType.REAL32, "wp_radius_m", 100, 5, 1000),
    ParamSpec("WPNAV_SPEED", ParamType.REAL32, "cruise_mps", 100, 10, 2000),
    ParamSpec("WPNAV_SPEED_DN", ParamType.REAL32, "descent_mps", 100, 10, 500),
    ParamSpec("WPNAV_SPEED_UP", ParamType.REAL32, "climb_mps", 100, 10, 1000),
)
_INDEX: Final = {spec.name: index for index, spec in enumerate(PARAMS)}


def find_param(name: str) -> tuple[int, ParamSpec] | None:
    """``(index, spec)`` of the parameter called ``name`` (exact, NULs stripped), or None."""
    index = _INDEX.get(name.rstrip("\x00"))
    return None if index is None else (index, PARAMS[index])


def param_value(config: CopterConfig, spec: ParamSpec) -> float:
    """The parameter's current value in its own units, as PARAM_VALUE carries it."""
    value = float(getattr(config, spec.field)) * spec.scale
    return float(round(value)) if spec.is_int else value


def check_value(spec: ParamSpec, value: float) -> str:
    """Why ``value`` cannot be set (not a finite number, out of range), or "" when it can."""
    if not math.isfinite(value):
        return f"{spec.name}: not a number"
    stored = round(value) if spec.is_int else value
    if not spec.low <= stored <= spec.high:
        return f"{spec.name}: {value:g} out of range {spec.low:g}-{spec.high:g}"
    return ""


def write_param(config: CopterConfig, spec: ParamSpec, value: float) -> float:
    """Store a checked value in the config; the stored value (integers rounded) in parameter units."""
    if spec.is_int:
        value = float(round(value))
    native = value / spec.scale
    setattr(config, spec.field, round(native) if isinstance(getattr(config, spec.field), int) else native)
    return value


def apply_params(config: CopterConfig, params: Mapping[str, float]) -> None:
    """Set several parameters by name; KeyError for an unknown one, ValueError for a bad value (nothing set)."""
    checked = []
    for name, value in params.items():
        found = find_param(name)
        if found is None:
            raise KeyError(f"no parameter {name!r}")
        reason = check_value(found[1], value)
        if reason:
            raise ValueError(reason)
        checked.append((found[1], value))
    for spec, value in checked:
        write_param(config, spec, value)


class ParamServer:
    """The vehicle side of the parameter protocol for one drone: read, list (paced), set."""

    def __init__(self, drone: Vehicle) -> None:
        self.drone = drone
        self._queue: list[int] = []  # indexes still to send for a PARAM_REQUEST_LIST
        self._to: tuple[str, int] | None = None

    def handle(self, kind: str, msg: Any, addr: tuple[str, int]) -> bool:
        """Answer a parameter message; False for a message that is not one."""
        if kind == "PARAM_REQUEST_LIST":
            self._queue, self._to = list(range(len(PARAMS))), addr
        elif kind == "PARAM_REQUEST_READ":
            found = self._lookup(msg.param_id, msg.param_index)
            if found is not None:
                self._send(*found, addr)
        elif kind == "PARAM_SET":
            self._set(msg.param_id, msg.param_value, addr)
        else:
            return False
        return True

    def tick(self) -> None:
        """Send the next few PARAM_VALUEs of a list request."""
        if self._to is None:
            return
        batch, self._queue = self._queue[:_LIST_PER_TICK], self._queue[_LIST_PER_TICK:]
        for index in batch:
            self._send(index, PARAMS[index], self._to)
        if not self._queue:
            self._to = None

    def reset(self) -> None:
        """A reboot forgets a list transfer under way."""
        self._queue, self._to = [], None

    def get(self, name: str) -> float:
        """A parameter's value; KeyError for an unknown name."""
        return param_value(self.drone.copter.config, self._spec(name))

    def set(self, name: str, value: float) -> float:
        """Set a parameter (no PARAM_VALUE sent); the stored value. KeyError for an unknown name, ValueError
        for a bad value."""
        spec = self._spec(name)
        reason = check_value(spec, value)
        if reason:
            raise ValueError(reason)
        copter = self.drone.copter
        stored = write_param(copter.config, spec, value)
        if spec.field == "cruise_mps":  # ArduCopter's waypoint speed follows WPNAV_SPEED at once
            copter.speed_mps = copter.config.cruise_mps
        return stored

    @staticmethod
    def _spec(name: str) -> ParamSpec:
        found = find_param(name)
        if found is None:
            raise KeyError(f"no parameter {name!r}")
        return found[1]

    @staticmethod
    def _lookup(name: str, index: int) -> tuple[int, ParamSpec] | None:
        if index >= 0:  # by index; the name is ignored, as in ArduPilot
            return (index, PARAMS[index]) if index < len(PARAMS) else None
        return find_param(name)

    def _set(self, name: str, value: float, addr: tuple[str, int]) -> None:
        found = find_param(name)
        if found is None:
            return  # ArduPilot does not answer a PARAM_SET for a parameter it does not have
        index, spec = found
        reason = check_value(spec, value)
        if reason:
            self.drone.send_all(self.drone.mav.statustext_encode(M.MAV_SEVERITY_WARNING, reason[:50].encode()),
                                addr)
            return
        self.set(spec.name, value)
        for to in {addr, self.drone.gcs}:  # ArduPilot tells every ground station of the change
            self._send(index, spec, to)

    def _send(self, index: int, spec: ParamSpec, to: tuple[str, int]) -> None:
        d = self.drone
        value = param_value(d.copter.config, spec)
        d.send(d.mav.param_value_encode(spec.name.encode()[:_NAME_LEN], value, spec.type, len(PARAMS), index), to)
