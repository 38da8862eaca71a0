"""The vehicle side of the MAVLink command protocol, for one simulated drone.

COMMAND_LONG and COMMAND_INT are acknowledged with the MAV_RESULT the
:class:`~sim.copter.Copter` gives; a COMMAND_LONG retried within a few seconds
(``confirmation`` > 0) gets the same answer again without a second effect.
SET_MODE and SET_POSITION_TARGET_GLOBAL_INT are handled here too.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any, Final

os.environ.setdefault("MAVLINK20", "1")
from pymavlink.dialects.v20 import ardupilotmega as M

from sim.arducopter import FORCE_MAGIC, Mode, Result
from sim.mav_telemetry import message_ids

if TYPE_CHECKING:
    from sim.drones import SimDrone

__all__ = ["COMMAND_MESSAGES", "CommandReceiver"]

COMMAND_MESSAGES: Final = frozenset({"COMMAND_LONG", "COMMAND_INT", "SET_MODE", "SET_POSITION_TARGET_GLOBAL_INT"})
_DUPLICATE_WINDOW_S: Final = 3.0


class CommandReceiver:
    """Carries out one drone's commands on its copter and answers them."""

    def __init__(self, drone: SimDrone) -> None:
        self.drone = drone
        self._recent: dict[tuple[Any, ...], tuple[int, float]] = {}  # duplicate COMMAND_LONG -> (result, when)

    def handle(self, kind: str, msg: Any, src: tuple[int, int], addr: tuple[str, int]) -> None:
        d = self.drone
        if kind in ("COMMAND_LONG", "COMMAND_INT"):
            self._on_command(msg, kind == "COMMAND_INT", src, addr)
        elif kind == "SET_MODE":
            result = self._set_mode(msg.base_mode, msg.custom_mode)
            d.send(d.mav.command_ack_encode(M.MAVLINK_MSG_ID_SET_MODE, result, 0, 0, *src), addr)
        elif kind == "SET_POSITION_TARGET_GLOBAL_INT" and msg.type_mask & 0b111 == 0 and d.copter.mode is Mode.GUIDED:
            d.copter.goto(msg.lat_int / 1e7, msg.lon_int / 1e7, self._rel_alt(msg.coordinate_frame, msg.alt))

    def _on_command(self, msg: Any, is_int: bool, src: tuple[int, int], addr: tuple[str, int]) -> None:
        d = self.drone
        d.counters.commands += 1
        params = (msg.param1, msg.param2, msg.param3, msg.param4)
        if is_int:
            where = (msg.frame, msg.x / 1e7, msg.y / 1e7, msg.z)
        else:
            where = (M.MAV_FRAME_GLOBAL_RELATIVE_ALT, msg.param5, msg.param6, msg.param7)
        key = (src, msg.command, params, where)
        now = time.monotonic()
        cached = self._recent.get(key)
        if not is_int and msg.confirmation > 0 and cached and now - cached[1] < _DUPLICATE_WINDOW_S:
            result = cached[0]  # a retry of a command already done: same answer, no second effect
            follow_up = None
        else:
            result, follow_up = self._command(msg.command, params, *where)
            self._recent = {k: v for k, v in self._recent.items() if now - v[1] < _DUPLICATE_WINDOW_S}
            self._recent[key] = (result, now)
        if result == Result.UNSUPPORTED:
            d.counters.unsupported += 1
        d.send(d.mav.command_ack_encode(msg.command, result, 0, 0, *src), addr)
        if follow_up is not None:
            d.send_by_id(follow_up, addr)

    def _command(self, cmd: int, p: tuple[float, ...], frame: int, lat: float, lon: float,
                 z: float) -> tuple[int, int | None]:
        c = self.drone.copter
        if cmd == M.MAV_CMD_COMPONENT_ARM_DISARM:
            force = round(p[1]) == FORCE_MAGIC
            return (c.arm(force) if round(p[0]) == 1 else c.disarm(force)), None
        if cmd == M.MAV_CMD_NAV_TAKEOFF:
            return c.takeoff(z), None
        if cmd == M.MAV_CMD_DO_SET_MODE:
            return self._set_mode(int(p[0]), int(p[1])), None
        if cmd == M.MAV_CMD_DO_REPOSITION:
            return self._reposition(p, frame, lat, lon, z), None
        if cmd == M.MAV_CMD_NAV_RETURN_TO_LAUNCH:
            return c.set_mode(Mode.RTL), None
        if cmd == M.MAV_CMD_NAV_LAND:
            return c.set_mode(Mode.LAND), None
        if cmd == M.MAV_CMD_MISSION_START:
            return c.mission_start(), None
        if cmd == M.MAV_CMD_DO_CHANGE_SPEED:
            return c.set_speed(p[1]), None
        if cmd == M.MAV_CMD_DO_SET_MISSION_CURRENT:
            return c.set_mission_current(int(p[0])), None
        if cmd == M.MAV_CMD_SET_MESSAGE_INTERVAL:
            return self.drone.set_interval(int(p[0]), p[1]), None
        requested = {M.MAV_CMD_REQUEST_MESSAGE: int(p[0]),
                     M.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES: M.MAVLINK_MSG_ID_AUTOPILOT_VERSION,
                     M.MAV_CMD_GET_HOME_POSITION: M.MAVLINK_MSG_ID_HOME_POSITION}.get(cmd)
        if requested is not None:
            return (Result.ACCEPTED, requested) if requested in message_ids() else (Result.FAILED, None)
        return Result.UNSUPPORTED, None

    def _set_mode(self, base_mode: int, custom_mode: int) -> int:
        if not base_mode & M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED:
            return Result.DENIED  # ArduPilot only maps custom modes
        return self.drone.copter.set_mode(custom_mode)

    def _reposition(self, p: tuple[float, ...], frame: int, lat: float, lon: float, z: float) -> int:
        c = self.drone.copter
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
            return Result.DENIED
        if c.mode is not Mode.GUIDED:
            if not int(p[1]) & M.MAV_DO_REPOSITION_FLAGS_CHANGE_MODE:
                return Result.DENIED
            if c.set_mode(Mode.GUIDED) != Result.ACCEPTED:
                return Result.FAILED
        if p[0] > 0:
            c.set_speed(p[0])
        alt = c.body.alt if math.isnan(z) else self._rel_alt(frame, z)
        return c.goto(lat, lon, alt)

    def _rel_alt(self, frame: int, z: float) -> float:
        """Metres above home from an altitude in ``frame`` (AMSL for the GLOBAL frames)."""
        amsl = frame in (M.MAV_FRAME_GLOBAL, M.MAV_FRAME_GLOBAL_INT)
        return z - self.drone.copter.dock[2] if amsl else z
