"""The vehicle side of the MAVLink command protocol, for one simulated drone.

COMMAND_LONG and COMMAND_INT are acknowledged with the MAV_RESULT the
:class:`~sim.copter.Copter` gives, each refusal's STATUSTEXT sent just before
its ACK as ArduPilot does; a COMMAND_LONG retried within a few seconds
(``confirmation`` > 0) gets the same answer again without a second effect.
What must follow the ACK (a requested message, a reboot) runs after it.
Parameters are read defensively: a NaN or absurd number is refused, never raised.
SET_MODE and SET_POSITION_TARGET_GLOBAL_INT are handled here too.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

os.environ.setdefault("MAVLINK20", "1")
from pymavlink.dialects.v20 import ardupilotmega as M

from sim.arducopter import FORCE_MAGIC, REBOOT_FORCE_MAGIC, Mode, Result
from sim.mav_telemetry import message_ids
from sim.mav_vehicle import Vehicle

__all__ = ["COMMAND_MESSAGES", "Command", "CommandReceiver"]

COMMAND_MESSAGES: Final = frozenset({"COMMAND_LONG", "COMMAND_INT", "SET_MODE", "SET_POSITION_TARGET_GLOBAL_INT"})
_DUPLICATE_WINDOW_S: Final = 3.0
_AMSL_FRAMES: Final = frozenset({M.MAV_FRAME_GLOBAL, M.MAV_FRAME_GLOBAL_INT})
_RELATIVE_FRAMES: Final = frozenset({M.MAV_FRAME_GLOBAL_RELATIVE_ALT, M.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT})

After: TypeAlias = Callable[[], object] | None  # what to do once the ACK is out


@dataclass(frozen=True, slots=True)
class Command:
    """A COMMAND_LONG or COMMAND_INT: params 5 and 6 in degrees either way; ``frame`` None for COMMAND_LONG."""

    command: int
    p: tuple[float, float, float, float, float, float, float]
    frame: int | None

    @classmethod
    def of(cls, msg: Any, is_int: bool) -> Command:
        head = (msg.param1, msg.param2, msg.param3, msg.param4)
        if is_int:
            return cls(msg.command, (*head, msg.x / 1e7, msg.y / 1e7, msg.z), msg.frame)
        return cls(msg.command, (*head, msg.param5, msg.param6, msg.param7), None)


def _int(value: float) -> int | None:
    """A float parameter carrying an integer (an id, a mode): None when it is not a finite int32."""
    return int(value) if math.isfinite(value) and abs(value) < 2**31 else None


class CommandReceiver:
    """Carries out one drone's commands on its copter and answers them."""

    def __init__(self, drone: Vehicle) -> None:
        self.drone = drone
        self._recent: dict[tuple[Any, ...], tuple[int, float]] = {}  # duplicate COMMAND_LONG -> (result, when)

    def reset(self) -> None:
        """A reboot forgets the commands it has answered."""
        self._recent = {}

    def handle(self, kind: str, msg: Any, src: tuple[int, int], addr: tuple[str, int]) -> None:
        d = self.drone
        if kind in ("COMMAND_LONG", "COMMAND_INT"):
            self._on_command(msg, kind == "COMMAND_INT", src, addr)
        elif kind == "SET_MODE":
            result = self._set_mode(msg.base_mode, msg.custom_mode)
            d.flush_events(addr)
            d.send(d.mav.command_ack_encode(M.MAVLINK_MSG_ID_SET_MODE, result, 0, 0, *src), addr)
        elif kind == "SET_POSITION_TARGET_GLOBAL_INT" and msg.type_mask & 0b111 == 0 and d.copter.mode is Mode.GUIDED:
            alt = self._rel_alt(msg.coordinate_frame, msg.alt)
            if alt is not None:
                d.copter.goto(msg.lat_int / 1e7, msg.lon_int / 1e7, alt)

    def _on_command(self, msg: Any, is_int: bool, src: tuple[int, int], addr: tuple[str, int]) -> None:
        d = self.drone
        d.counters.commands += 1
        cmd = Command.of(msg, is_int)
        key = (src, cmd)
        now = time.monotonic()
        cached = self._recent.get(key)
        after: After = None
        if not is_int and msg.confirmation > 0 and cached and now - cached[1] < _DUPLICATE_WINDOW_S:
            result = cached[0]  # a retry of a command already done: same answer, no second effect
        else:
            result, after = self._command(cmd, addr)
            self._recent = {k: v for k, v in self._recent.items() if now - v[1] < _DUPLICATE_WINDOW_S}
            self._recent[key] = (result, now)
        if result == Result.UNSUPPORTED:
            d.counters.unsupported += 1
        d.flush_events(addr)  # the reason of a refusal goes out before its ACK
        d.send(d.mav.command_ack_encode(cmd.command, result, 0, 0, *src), addr)
        if after is not None:
            after()

    def _command(self, cmd: Command, addr: tuple[str, int]) -> tuple[int, After]:
        c, p, d = self.drone.copter, cmd.p, self.drone
        if cmd.command == M.MAV_CMD_COMPONENT_ARM_DISARM:
            return self._arm_disarm(p), None
        if cmd.command == M.MAV_CMD_NAV_TAKEOFF:
            return c.takeoff(p[6]), None
        if cmd.command == M.MAV_CMD_DO_SET_MODE:
            base, custom = _int(p[0]), _int(p[1])
            return (Result.DENIED if base is None or custom is None else self._set_mode(base, custom)), None
        if cmd.command == M.MAV_CMD_DO_REPOSITION:
            return self._reposition(cmd), None
        if cmd.command == M.MAV_CMD_DO_SET_HOME:
            return self._set_home(cmd), None
        if cmd.command == M.MAV_CMD_NAV_RETURN_TO_LAUNCH:
            return c.set_mode(Mode.RTL), None
        if cmd.command == M.MAV_CMD_NAV_LAND:
            return c.set_mode(Mode.LAND), None
        if cmd.command == M.MAV_CMD_MISSION_START:
            return c.mission_start(), None
        if cmd.command == M.MAV_CMD_DO_CHANGE_SPEED:
            return c.set_speed(p[1]), None
        if cmd.command == M.MAV_CMD_DO_SET_MISSION_CURRENT:
            seq = _int(p[0])
            return (Result.DENIED if seq is None else c.set_mission_current(seq)), None
        if cmd.command == M.MAV_CMD_SET_MESSAGE_INTERVAL:
            msg_id = _int(p[0])
            return (Result.FAILED if msg_id is None else d.rates.set_interval(msg_id, p[1])), None
        if cmd.command == M.MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN:
            return self._reboot(p)
        requested = {M.MAV_CMD_REQUEST_MESSAGE: _int(p[0]),
                     M.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES: M.MAVLINK_MSG_ID_AUTOPILOT_VERSION,
                     M.MAV_CMD_GET_HOME_POSITION: M.MAVLINK_MSG_ID_HOME_POSITION}.get(cmd.command, -1)
        if requested != -1:
            if requested is None or requested not in message_ids():
                return Result.FAILED, None
            msg_id = requested
            return Result.ACCEPTED, lambda: d.send_by_id(msg_id, addr)
        return Result.UNSUPPORTED, None

    def _arm_disarm(self, p: tuple[float, ...]) -> int:
        c = self.drone.copter
        force = p[1] == FORCE_MAGIC
        if p[0] == 1:
            return c.arm(force)
        if p[0] == 0:
            return c.disarm(force)
        return Result.UNSUPPORTED  # ArduPilot: param1 is 1 (arm) or 0 (disarm)

    def _reboot(self, p: tuple[float, ...]) -> tuple[int, After]:
        """PREFLIGHT_REBOOT_SHUTDOWN: param1 1 (or 3, to the bootloader) reboots, refused when armed unless
        param6 is ArduPilot's force magic; the ACK goes out first, then the autopilot goes silent."""
        d = self.drone
        if d.copter.armed and p[5] != REBOOT_FORCE_MAGIC:
            return Result.FAILED, None
        if p[0] not in (1, 3):
            return Result.UNSUPPORTED, None
        return Result.ACCEPTED, lambda: d.reboot(d.copter.config.reboot_s)

    def _set_home(self, cmd: Command) -> int:
        """DO_SET_HOME: param1 = 1 (or lat and lon both 0) means here, else the point in params 5/6/7
        (COMMAND_LONG: altitude AMSL; COMMAND_INT: in its frame). Either locks home until the next boot."""
        c, p = self.drone.copter, cmd.p
        if p[0] == 1 or (p[4] == 0 and p[5] == 0):
            return c.set_home_here()
        frame = M.MAV_FRAME_GLOBAL if cmd.frame is None else cmd.frame
        if frame in _AMSL_FRAMES:
            amsl = p[6]
        elif frame in _RELATIVE_FRAMES:
            amsl = c.home_amsl + p[6]
        else:
            return Result.DENIED
        return c.set_home(p[4], p[5], amsl)

    def _set_mode(self, base_mode: int, custom_mode: int) -> int:
        if not base_mode & M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED:
            return Result.DENIED  # ArduPilot only maps custom modes
        return self.drone.copter.set_mode(custom_mode)

    def _reposition(self, cmd: Command) -> int:
        c, p = self.drone.copter, cmd.p
        lat, lon, z = p[4], p[5], p[6]
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
            return Result.DENIED
        frame = M.MAV_FRAME_GLOBAL_RELATIVE_ALT if cmd.frame is None else cmd.frame
        alt = c.position()[2] if math.isnan(z) else self._rel_alt(frame, z)
        if alt is None:
            return Result.DENIED
        if c.mode is not Mode.GUIDED:
            if not (_int(p[1]) or 0) & M.MAV_DO_REPOSITION_FLAGS_CHANGE_MODE:
                return Result.DENIED
            if c.set_mode(Mode.GUIDED) != Result.ACCEPTED:
                return Result.FAILED
        if p[0] > 0:
            c.set_speed(p[0])
        return c.goto(lat, lon, alt)

    def _rel_alt(self, frame: int, z: float) -> float | None:
        """Metres above home from an altitude in ``frame`` (AMSL for the GLOBAL frames); None if not finite."""
        if not math.isfinite(z):
            return None
        return z - self.drone.copter.home_amsl if frame in _AMSL_FRAMES else z
