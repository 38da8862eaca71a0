"""Simulated drones on the wire: many ArduCopter-like vehicles speaking MAVLink 2 over UDP.

Each drone has its own UDP socket and its own system id (component 1), sends
its streams to a ground-station address like ArduPilot's ``--out udp:HOST:PORT``
and answers requests to wherever they came from. The codec is pymavlink's
(with MAVLink 2 signing); the transport is our own asyncio datagram endpoint,
and one tick task drives every :class:`~sim.copter.Copter` and its streams.
This module deliberately shares no code with the hub's ``drone/`` package, so
each side checks the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, cast

os.environ.setdefault("MAVLINK20", "1")
from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from sim.copter import FORCE_MAGIC, MISSION_COMMANDS, Copter, CopterConfig, LandedState, MissionItem, Mode, Result
from sim.stations import DroneDock

__all__ = ["DEFAULT_STREAMS", "DroneCounters", "DroneFleetSim", "SimDrone"]

log = logging.getLogger(__name__)

M = mavlink2
DEFAULT_STREAMS: Final = {  # message id -> interval in seconds, as ArduPilot's SRx_ rates give a GCS
    M.MAVLINK_MSG_ID_HEARTBEAT: 1.0,
    M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT: 0.25,
    M.MAVLINK_MSG_ID_SYS_STATUS: 1.0,
    M.MAVLINK_MSG_ID_BATTERY_STATUS: 1.0,
    M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE: 1.0,
    M.MAVLINK_MSG_ID_SYSTEM_TIME: 1.0,
    M.MAVLINK_MSG_ID_GPS_RAW_INT: 1.0,
    M.MAVLINK_MSG_ID_MISSION_CURRENT: 1.0,
}
_SIGNING_EPOCH_S: Final = 1_420_070_400  # 2015-01-01, MAVLink 2 signing timestamps count 10 us from here
_DUPLICATE_WINDOW_S: Final = 3.0


@dataclass(slots=True)
class DroneCounters:
    sent: int = 0
    received: int = 0
    refused: int = 0  # unsigned or wrongly signed while signing is on
    bad: int = 0  # CRC errors and other undecodable data
    dropped: int = 0  # lost to a cut link, either way
    ignored: int = 0  # addressed to another system
    commands: int = 0
    unsupported: int = 0


class SimDrone(asyncio.DatagramProtocol):
    """One vehicle's MAVLink endpoint: codec, socket, streams, commands and mission transfers."""

    def __init__(self, dock: DroneDock, copter: Copter, gcs: tuple[str, int], key: bytes | None,
                 boot_wall_s: float) -> None:
        self.dock = dock
        self.copter = copter
        self.gcs = gcs
        self.counters = DroneCounters()
        self.mav = mavlink2.MAVLink(self, srcSystem=dock.system_id, srcComponent=1)
        self.mav.robust_parsing = True  # undecodable data comes back as BAD_DATA instead of raising
        if key is not None:
            self.mav.signing.secret_key = key
            self.mav.signing.sign_outgoing = True
            self.mav.signing.timestamp = int((time.time() - _SIGNING_EPOCH_S) * 100_000)
            self.mav.check_signature = self._check_signature
        self.streams: dict[int, float] = dict(DEFAULT_STREAMS)
        self._due: dict[int, float] = {}
        self.cut_until = 0.0
        self.transport: asyncio.DatagramTransport | None = None
        self._dest = gcs
        self._recent: dict[tuple[Any, ...], tuple[int, float]] = {}  # duplicate COMMAND_LONG -> (result, when)
        self.missions = MissionReceiver(self)
        self._boot_wall_s = boot_wall_s

    # ------------------------------------------------------------ transport
    @property
    def drone_id(self) -> str:
        return self.dock.drone_id

    @property
    def local_addr(self) -> tuple[str, int]:
        assert self.transport is not None
        addr: tuple[str, int] = self.transport.get_extra_info("sockname")[:2]
        return addr

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def write(self, buf: bytes) -> None:
        """The file pymavlink's ``MAVLink.send`` writes to: one datagram per message."""
        if self.transport is None or self.cut:
            self.counters.dropped += 1
            return
        self.transport.sendto(buf, self._dest)
        self.counters.sent += 1

    @property
    def cut(self) -> bool:
        return time.monotonic() < self.cut_until

    def send(self, msg: Any, to: tuple[str, int] | None = None) -> None:
        self._dest = to or self.gcs
        self.mav.send(msg)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.cut:
            self.counters.dropped += 1
            return
        for msg in self.mav.parse_buffer(data) or ():
            if msg.get_type() == "BAD_DATA":
                if "signature" in str(getattr(msg, "reason", "")):
                    self.counters.refused += 1
                else:
                    self.counters.bad += 1
                continue
            self.counters.received += 1
            try:
                self._handle(msg, addr)
            except Exception:  # a bad message is rejected with a reason, never kills the endpoint
                log.exception("%s: cannot handle %s", self.drone_id, msg.get_type())

    def _check_signature(self, msgbuf: bytearray, src_system: int, src_component: int) -> bool:
        """pymavlink's check, minus its flaw: it records a stream's timestamp before verifying the signature,
        so one forged message with a future timestamp would lock the real sender out. ArduPilot verifies first."""
        signing = self.mav.signing
        saved = dict(signing.stream_timestamps)
        ok = bool(mavlink2.MAVLink.check_signature(self.mav, msgbuf, src_system, src_component))
        if not ok:
            signing.stream_timestamps = saved
        return ok

    # ----------------------------------------------------------------- tick
    def tick(self, sim_ms: int, now: float) -> None:
        self.copter.step(sim_ms)
        for event in self.copter.drain_events():
            if event.kind == "text":
                self.send(self.mav.statustext_encode(event.value, event.text[:50].encode()))
            elif event.kind == "mission_current":
                self._send_id(M.MAVLINK_MSG_ID_MISSION_CURRENT)
            else:
                self.send(self.mav.mission_item_reached_encode(event.value))
        for msg_id, interval in self.streams.items():
            if interval > 0 and now >= self._due.get(msg_id, 0.0):
                self._send_id(msg_id)
                # Keep the phase but never try to catch up on a burst of missed sends.
                self._due[msg_id] = max(self._due.get(msg_id, now) + interval, now + interval / 2)
        self.missions.tick(now)

    def _send_id(self, msg_id: int, to: tuple[str, int] | None = None) -> bool:
        msg = build_message(self, msg_id)
        if msg is None:
            return False
        self.send(msg, to)
        return True

    def sim_time_us(self) -> int:
        return int(self._boot_wall_s * 1e6) + (self.copter.now_ms - self.copter.boot_ms) * 1000

    # ------------------------------------------------------------- dispatch
    def _handle(self, msg: Any, addr: tuple[str, int]) -> None:
        kind = msg.get_type()
        if kind == "HEARTBEAT":
            if msg.type == M.MAV_TYPE_GCS:
                self.copter.gcs_heartbeat()
            return
        target = getattr(msg, "target_system", None)
        if target is not None and target not in (0, self.dock.system_id):
            self.counters.ignored += 1
            return
        src = (msg.get_srcSystem(), msg.get_srcComponent())
        if kind in ("COMMAND_LONG", "COMMAND_INT"):
            self._on_command(msg, kind == "COMMAND_INT", src, addr)
        elif kind == "SET_MODE":
            result = self._set_mode(msg.base_mode, msg.custom_mode)
            self.send(self.mav.command_ack_encode(M.MAVLINK_MSG_ID_SET_MODE, result, 0, 0, *src), addr)
        elif kind == "SET_POSITION_TARGET_GLOBAL_INT":
            if msg.type_mask & 0b111 == 0 and self.copter.mode is Mode.GUIDED:
                self.copter.goto(msg.lat_int / 1e7, msg.lon_int / 1e7, self._rel_alt(msg.coordinate_frame, msg.alt))
        else:
            self.missions.handle(kind, msg, src, addr)

    def _on_command(self, msg: Any, is_int: bool, src: tuple[int, int], addr: tuple[str, int]) -> None:
        self.counters.commands += 1
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
            self.counters.unsupported += 1
        self.send(self.mav.command_ack_encode(msg.command, result, 0, 0, *src), addr)
        if follow_up is not None:
            self._send_id(follow_up, addr)

    def _command(self, cmd: int, p: tuple[float, ...], frame: int, lat: float, lon: float,
                 z: float) -> tuple[int, int | None]:
        c = self.copter
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
            return self._set_interval(int(p[0]), p[1]), None
        requested = {M.MAV_CMD_REQUEST_MESSAGE: int(p[0]),
                     M.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES: M.MAVLINK_MSG_ID_AUTOPILOT_VERSION,
                     M.MAV_CMD_GET_HOME_POSITION: M.MAVLINK_MSG_ID_HOME_POSITION}.get(cmd)
        if requested is not None:
            return (Result.ACCEPTED, requested) if requested in message_ids() else (Result.FAILED, None)
        return Result.UNSUPPORTED, None

    def _set_mode(self, base_mode: int, custom_mode: int) -> int:
        if not base_mode & M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED:
            return Result.DENIED  # ArduPilot only maps custom modes
        return self.copter.set_mode(custom_mode)

    def _reposition(self, p: tuple[float, ...], frame: int, lat: float, lon: float, z: float) -> int:
        c = self.copter
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
        return z - self.copter.dock[2] if amsl else z

    def _set_interval(self, msg_id: int, interval_us: float) -> int:
        if msg_id not in message_ids():
            return Result.FAILED
        if interval_us < 0:
            self.streams[msg_id] = 0.0
        elif interval_us == 0:
            self.streams[msg_id] = DEFAULT_STREAMS.get(msg_id, 0.0)
        else:
            self.streams[msg_id] = max(interval_us / 1e6, 0.02)
        self._due[msg_id] = 0.0
        return Result.ACCEPTED


class DroneFleetSim:
    """N simulated drones on one asyncio loop; ``async with`` binds their sockets and starts the tick.

    ``speed`` runs the flight physics faster than real time (links, streams and
    timeouts stay in real time, as a ground station expects). ``keys`` maps a
    drone id to its MAVLink 2 signing key.
    """

    def __init__(self, docks: Iterable[DroneDock], gcs: tuple[str, int] = ("127.0.0.1", 14550), *,
                 host: str = "127.0.0.1", speed: float = 1.0, seed: int = 1, tick_hz: float = 20.0,
                 keys: dict[str, bytes] | None = None, config: CopterConfig | None = None) -> None:
        self.docks = list(docks)
        self.gcs = gcs
        self.host = host
        self.speed = speed
        self.tick_s = 1.0 / tick_hz
        self._wall0 = time.time()
        self._mono0 = time.monotonic()
        rng = random.Random(seed)
        keys = keys or {}
        now = self.sim_now_ms()
        self.drones = [
            SimDrone(d, Copter(d.lat, d.lon, d.amsl_m, now, random.Random(rng.random()), config),
                     gcs, keys.get(d.drone_id), self._wall0)
            for d in self.docks
        ]
        self._by_id = {d.drone_id: d for d in self.drones}
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0

    @property
    def copters(self) -> list[Copter]:
        return [d.copter for d in self.drones]

    def drone(self, drone_id: str) -> SimDrone:
        return self._by_id[drone_id]

    def sim_now_ms(self) -> int:
        return int(self._wall0 * 1000 + (time.monotonic() - self._mono0) * 1000 * self.speed)

    def cut_link(self, drone_id: str, seconds: float) -> None:
        """Radio loss: the drone neither sends nor hears anything for ``seconds`` of real time."""
        self.drone(drone_id).cut_until = time.monotonic() + seconds

    def set_battery(self, drone_id: str, pct: float) -> None:
        self.drone(drone_id).copter.set_battery(pct)

    def counters(self) -> dict[str, DroneCounters]:
        return {d.drone_id: d.counters for d in self.drones}

    async def __aenter__(self) -> DroneFleetSim:
        loop = asyncio.get_running_loop()
        try:
            for drone in self.drones:
                await loop.create_datagram_endpoint(functools.partial(_same, drone), local_addr=(self.host, 0))
        except BaseException:
            self._close()
            raise
        self._task = asyncio.create_task(self._run(), name="drone-fleet-tick")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._close()

    def _close(self) -> None:
        for drone in self.drones:
            if drone.transport is not None:
                drone.transport.close()

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            sim_ms = self.sim_now_ms()
            for drone in self.drones:
                try:
                    drone.tick(sim_ms, now)
                except Exception:
                    log.exception("%s: tick failed", drone.drone_id)
            self.ticks += 1
            await asyncio.sleep(max(0.0, self.tick_s - (time.monotonic() - now)))



def _same(drone: SimDrone) -> SimDrone:
    return drone


# ------------------------------------------------------------------ messages
_SENSORS: Final = (M.MAV_SYS_STATUS_SENSOR_3D_GYRO | M.MAV_SYS_STATUS_SENSOR_3D_ACCEL | M.MAV_SYS_STATUS_SENSOR_3D_MAG
                   | M.MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE | M.MAV_SYS_STATUS_SENSOR_GPS
                   | M.MAV_SYS_STATUS_SENSOR_BATTERY)
_CAPABILITIES: Final = (M.MAV_PROTOCOL_CAPABILITY_MISSION_FLOAT | M.MAV_PROTOCOL_CAPABILITY_MISSION_INT
                        | M.MAV_PROTOCOL_CAPABILITY_COMMAND_INT | M.MAV_PROTOCOL_CAPABILITY_MAVLINK2
                        | M.MAV_PROTOCOL_CAPABILITY_SET_POSITION_TARGET_GLOBAL_INT)
_AUTOPILOT_MODES: Final = frozenset({Mode.AUTO, Mode.GUIDED, Mode.RTL, Mode.LAND})
_CELLS: Final = 4


def _battery(c: Copter) -> tuple[int, int]:
    """Pack voltage (mV) of a 4S LiPo at this charge, and current (cA): about 30 A hovering, none disarmed."""
    volts = _CELLS * (3.5 + 0.7 * c.battery_pct / 100.0)
    amps = (28.0 + 1.2 * c.ground_speed()) if c.armed else 0.5
    return int(volts * 1000), int(amps * 100)


def build_message(d: SimDrone, msg_id: int) -> Any | None:
    """The current value of a streamable message, or None for one the drone does not send."""
    c, mav = d.copter, d.mav
    boot_ms = (c.now_ms - c.boot_ms) & 0xFFFFFFFF
    alt = c.body.alt
    amsl = c.dock[2] + alt
    if msg_id == M.MAVLINK_MSG_ID_HEARTBEAT:
        base = M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | M.MAV_MODE_FLAG_STABILIZE_ENABLED
        base |= M.MAV_MODE_FLAG_GUIDED_ENABLED if c.mode in _AUTOPILOT_MODES else 0
        base |= M.MAV_MODE_FLAG_SAFETY_ARMED if c.armed else 0
        status = M.MAV_STATE_ACTIVE if c.armed else M.MAV_STATE_STANDBY
        return mav.heartbeat_encode(M.MAV_TYPE_QUADROTOR, M.MAV_AUTOPILOT_ARDUPILOTMEGA, base, int(c.mode), status)
    if msg_id == M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT:
        glat, glon = c.gps_position()
        b = c.body
        return mav.global_position_int_encode(boot_ms, round(glat * 1e7), round(glon * 1e7), round(amsl * 1000),
                                              round(alt * 1000), round(b.vn * 100), round(b.ve * 100),
                                              round(-b.vz * 100), round(b.heading * 100) % 36000)
    if msg_id == M.MAVLINK_MSG_ID_GPS_RAW_INT:
        glat, glon = c.gps_position()
        return mav.gps_raw_int_encode(d.sim_time_us(), c.gps_fix_type, round(glat * 1e7), round(glon * 1e7),
                                      round(amsl * 1000), 80, 120, round(c.ground_speed() * 100),
                                      round(c.body.heading * 100) % 36000, c.satellites)
    if msg_id == M.MAVLINK_MSG_ID_SYS_STATUS:
        mv, ca = _battery(c)
        health = _SENSORS if c.gps_ok else _SENSORS & ~M.MAV_SYS_STATUS_SENSOR_GPS
        return mav.sys_status_encode(_SENSORS, _SENSORS, health, 150, mv, ca, round(c.battery_pct), 0, 0, 0, 0, 0, 0)
    if msg_id == M.MAVLINK_MSG_ID_BATTERY_STATUS:
        mv, ca = _battery(c)
        cells = [mv // _CELLS] * _CELLS + [0xFFFF] * (10 - _CELLS)
        used_mah = round((100.0 - c.battery_pct) / 100.0 * 10_000)  # a 10 Ah pack
        return mav.battery_status_encode(0, M.MAV_BATTERY_FUNCTION_ALL, M.MAV_BATTERY_TYPE_LIPO, 0x7FFF, cells, ca,
                                         used_mah, -1, round(c.battery_pct))
    if msg_id == M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE:
        return mav.extended_sys_state_encode(M.MAV_VTOL_STATE_UNDEFINED, int(c.landed_state))
    if msg_id == M.MAVLINK_MSG_ID_SYSTEM_TIME:
        return mav.system_time_encode(d.sim_time_us(), boot_ms)
    if msg_id == M.MAVLINK_MSG_ID_MISSION_CURRENT:
        total = max(0, len(c.mission) - 1)
        flying_auto = c.mode is Mode.AUTO and c.landed_state is not LandedState.ON_GROUND
        state = (M.MISSION_STATE_NO_MISSION if total == 0
                 else M.MISSION_STATE_ACTIVE if flying_auto else M.MISSION_STATE_NOT_STARTED)
        return mav.mission_current_encode(c.mission_current, total, state, int(c.mode is Mode.AUTO))
    if msg_id == M.MAVLINK_MSG_ID_HOME_POSITION:
        hlat, hlon, hamsl = c.home()
        return mav.home_position_encode(round(hlat * 1e7), round(hlon * 1e7), round(hamsl * 1000), 0, 0, 0,
                                        [1, 0, 0, 0], 0, 0, 0)
    if msg_id == M.MAVLINK_MSG_ID_ATTITUDE:
        yaw = math.radians(c.body.heading if c.body.heading <= 180 else c.body.heading - 360)
        return mav.attitude_encode(boot_ms, 0.0, 0.0, yaw, 0.0, 0.0, 0.0)
    if msg_id == M.MAVLINK_MSG_ID_VFR_HUD:
        return mav.vfr_hud_encode(c.ground_speed(), c.ground_speed(), round(c.body.heading), 50 if c.armed else 0,
                                  amsl, c.body.vz)
    if msg_id == M.MAVLINK_MSG_ID_AUTOPILOT_VERSION:
        version = (4 << 24) | (5 << 16) | (7 << 8) | M.FIRMWARE_VERSION_TYPE_OFFICIAL
        return mav.autopilot_version_encode(_CAPABILITIES, version, 0, 0, 0, [0] * 8, [0] * 8, [0] * 8, 0, 0,
                                            d.dock.system_id)
    return None


def message_ids() -> frozenset[int]:
    return _MESSAGE_IDS


_MESSAGE_IDS: Final = frozenset({
    M.MAVLINK_MSG_ID_HEARTBEAT, M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT, M.MAVLINK_MSG_ID_GPS_RAW_INT,
    M.MAVLINK_MSG_ID_SYS_STATUS, M.MAVLINK_MSG_ID_BATTERY_STATUS, M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE,
    M.MAVLINK_MSG_ID_SYSTEM_TIME, M.MAVLINK_MSG_ID_MISSION_CURRENT, M.MAVLINK_MSG_ID_HOME_POSITION,
    M.MAVLINK_MSG_ID_ATTITUDE, M.MAVLINK_MSG_ID_VFR_HUD, M.MAVLINK_MSG_ID_AUTOPILOT_VERSION,
})


# ------------------------------------------------------------ mission protocol
MAX_MISSION_ITEMS: Final = 200
_RETRY_S: Final = 1.0
_RETRIES: Final = 5
_FRAMES: Final = frozenset({M.MAV_FRAME_GLOBAL, M.MAV_FRAME_GLOBAL_RELATIVE_ALT, M.MAV_FRAME_GLOBAL_INT,
                            M.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT, M.MAV_FRAME_GLOBAL_TERRAIN_ALT,
                            M.MAV_FRAME_GLOBAL_TERRAIN_ALT_INT, M.MAV_FRAME_MISSION})


class MissionReceiver:
    """The vehicle side of the MAVLink mission protocol: uploads (with re-requests), downloads, clear, set current."""

    def __init__(self, drone: SimDrone) -> None:
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
