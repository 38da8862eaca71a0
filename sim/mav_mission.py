"""The vehicle side of the MAVLink mission protocol, for one simulated drone.

Uploads (the drone asks for each item, and asks again when one does not come),
downloads, clear and set-current, answered as ArduPilot answers them; a finished
upload replaces the :class:`~sim.copter.Copter`'s mission.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

os.environ.setdefault("MAVLINK20", "1")
from pymavlink.dialects.v20 import ardupilotmega as M

from sim.arducopter import MISSION_COMMANDS, MissionItem
from sim.mav_vehicle import Vehicle

__all__ = ["MAX_MISSION_ITEMS", "MissionReceiver"]

MAX_MISSION_ITEMS: Final = 200
_RETRY_S: Final = 1.0
_RETRIES: Final = 5
_FRAMES: Final = frozenset({M.MAV_FRAME_GLOBAL, M.MAV_FRAME_GLOBAL_RELATIVE_ALT, M.MAV_FRAME_GLOBAL_INT,
                            M.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT, M.MAV_FRAME_GLOBAL_TERRAIN_ALT,
                            M.MAV_FRAME_GLOBAL_TERRAIN_ALT_INT, M.MAV_FRAME_MISSION})


class MissionReceiver:
    """The vehicle side of the MAVLink mission protocol: uploads (with re-requests), downloads, clear, set current."""

    def __init__(self, drone: Vehicle) -> None:
        self.drone = drone
        self.items: list[MissionItem | None] = []
        self.next_seq = 0
        self.peer: tuple[int, int] = (0, 0)
        self.addr: tuple[str, int] | None = None
        self.last_s = 0.0
        self.retries = 0

    @property
    def uploading(self) -> bool:
        return self.addr is not None

    def handle(self, kind: str, msg: Any, src: tuple[int, int], addr: tuple[str, int]) -> None:
        d, mav = self.drone, self.drone.mav
        mission_type = getattr(msg, "mission_type", 0)
        if kind == "MISSION_COUNT":
            if mission_type != M.MAV_MISSION_TYPE_MISSION:
                self._ack(src, addr, M.MAV_MISSION_UNSUPPORTED, mission_type)
            elif msg.count > MAX_MISSION_ITEMS:
                self._ack(src, addr, M.MAV_MISSION_NO_SPACE)
            elif msg.count == 0:
                d.copter.set_mission([])
                self._ack(src, addr, M.MAV_MISSION_ACCEPTED)
            else:
                self.items, self.next_seq, self.peer, self.addr = [None] * msg.count, 0, src, addr
                self._request()
        elif kind in ("MISSION_ITEM_INT", "MISSION_ITEM") and self.uploading and src == self.peer:
            self._item(msg, kind == "MISSION_ITEM_INT", addr)
        elif kind == "MISSION_REQUEST_LIST":
            count = len(d.copter.mission) if mission_type == M.MAV_MISSION_TYPE_MISSION else 0
            d.send(mav.mission_count_encode(*src, count, mission_type), addr)
        elif kind in ("MISSION_REQUEST_INT", "MISSION_REQUEST"):
            self._send_item(msg.seq, kind == "MISSION_REQUEST_INT", src, addr)
        elif kind == "MISSION_CLEAR_ALL":
            d.copter.set_mission([])
            self._ack(src, addr, M.MAV_MISSION_ACCEPTED, mission_type)
        elif kind == "MISSION_SET_CURRENT":
            d.copter.set_mission_current(msg.seq)

    def tick(self, now: float) -> None:
        if self.uploading and now - self.last_s > _RETRY_S:
            if self.retries >= _RETRIES:
                assert self.addr is not None
                self._ack(self.peer, self.addr, M.MAV_MISSION_OPERATION_CANCELLED)
                self.addr = None
            else:
                self.retries += 1
                self._request()

    def _request(self) -> None:
        assert self.addr is not None
        self.last_s = time.monotonic()
        self.drone.send(self.drone.mav.mission_request_int_encode(*self.peer, self.next_seq), self.addr)

    def _item(self, msg: Any, is_int: bool, addr: tuple[str, int]) -> None:
        if msg.seq != self.next_seq:
            if msg.seq > self.next_seq:  # a gap: say so and keep asking for the one we need
                self._ack(self.peer, addr, M.MAV_MISSION_INVALID_SEQUENCE)
            return
        if msg.seq > 0 and msg.command not in MISSION_COMMANDS:
            self._ack(self.peer, addr, M.MAV_MISSION_UNSUPPORTED)
            self.addr = None
            return
        if msg.seq > 0 and msg.frame not in _FRAMES:
            self._ack(self.peer, addr, M.MAV_MISSION_UNSUPPORTED_FRAME)
            self.addr = None
            return
        scale = 1e7 if is_int else 1.0
        self.items[msg.seq] = MissionItem(msg.command, msg.x / scale, msg.y / scale, msg.z, msg.frame,
                                          msg.param1, msg.param2, msg.param3, msg.param4)
        self.next_seq += 1
        self.retries = 0
        if self.next_seq < len(self.items):
            self._request()
            return
        self.drone.copter.set_mission([item for item in self.items if item is not None])
        self._ack(self.peer, addr, M.MAV_MISSION_ACCEPTED)
        self.addr = None

    def _send_item(self, seq: int, as_int: bool, src: tuple[int, int], addr: tuple[str, int]) -> None:
        mission, mav = self.drone.copter.mission, self.drone.mav
        if not 0 <= seq < len(mission):
            self._ack(src, addr, M.MAV_MISSION_INVALID_SEQUENCE)
            return
        it = mission[seq]
        if seq == 0:  # item 0 is home, reported where home is now
            lat, lon, amsl = self.drone.copter.home()
            it = MissionItem(M.MAV_CMD_NAV_WAYPOINT, lat, lon, amsl, M.MAV_FRAME_GLOBAL)
        current = int(seq == self.drone.copter.mission_current)
        frame = {M.MAV_FRAME_GLOBAL_INT: M.MAV_FRAME_GLOBAL, M.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT:
                 M.MAV_FRAME_GLOBAL_RELATIVE_ALT}.get(it.frame, it.frame)
        if as_int:
            frame = {M.MAV_FRAME_GLOBAL: M.MAV_FRAME_GLOBAL_INT, M.MAV_FRAME_GLOBAL_RELATIVE_ALT:
                     M.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT}.get(frame, frame)
            msg = mav.mission_item_int_encode(*src, seq, frame, it.command, current, 1, it.param1, it.param2,
                                              it.param3, it.param4, round(it.lat * 1e7), round(it.lon * 1e7), it.alt)
        else:
            msg = mav.mission_item_encode(*src, seq, frame, it.command, current, 1, it.param1, it.param2, it.param3,
                                          it.param4, it.lat, it.lon, it.alt)
        self.drone.send(msg, addr)

    def _ack(self, peer: tuple[int, int], addr: tuple[str, int], result: int, mission_type: int = 0) -> None:
        self.drone.send(self.drone.mav.mission_ack_encode(*peer, result, mission_type), addr)
