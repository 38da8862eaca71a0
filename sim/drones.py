"""Simulated drones on the wire: many ArduCopter-like vehicles speaking MAVLink 2 over UDP.

Each drone has its own UDP socket and its own system id (component 1), sends
its streams to a ground-station address like ArduPilot's ``--out udp:HOST:PORT``
and answers requests to wherever they came from. Like a stock ArduCopter it
streams nothing but its heartbeat until a ground station asks
(SET_MESSAGE_INTERVAL, REQUEST_DATA_STREAM); rates are per drone and lost when
it reboots (:meth:`SimDrone.reboot`: silent for a while, then back with its
boot clock at 0). The codec is pymavlink's (with MAVLink 2 signing); the
transport is our own asyncio datagram endpoint, and one tick task drives every
:class:`~sim.copter.Copter` and its streams. What a drone sends and answers is
in :mod:`sim.mav_telemetry`, :mod:`sim.mav_commands`, :mod:`sim.mav_mission`
and :mod:`sim.mav_params`, which see the drone only as a :class:`sim.mav_vehicle.Vehicle`.
None of them shares code with the hub's ``drone/`` package, so each side checks the other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import random
import secrets
import time
from collections.abc import Iterable
from typing import Any, Final, cast

os.environ.setdefault("MAVLINK20", "1")
from pymavlink.dialects.v20 import ardupilotmega as mavlink2

from devices.tasks import cancel_and_wait
from sim.arducopter import CopterConfig
from sim.copter import Copter
from sim.mav_commands import COMMAND_MESSAGES, CommandReceiver
from sim.mav_mission import MissionReceiver
from sim.mav_params import ParamServer, apply_params
from sim.mav_telemetry import DEFAULT_STREAMS, StreamRates, build_message
from sim.mav_vehicle import DroneCounters
from sim.stations import DroneDock

__all__ = ["DEFAULT_STREAMS", "DroneCounters", "DroneFleetSim", "SimDrone", "new_keys"]

log = logging.getLogger(__name__)

M = mavlink2
_SIGNING_EPOCH_S: Final = 1_420_070_400  # 2015-01-01, MAVLink 2 signing timestamps count 10 us from here


class SimDrone(asyncio.DatagramProtocol):
    """One vehicle's MAVLink endpoint: codec, socket, streams, commands and mission transfers."""

    def __init__(self, dock: DroneDock, copter: Copter, gcs: tuple[str, int], key: bytes | None) -> None:
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
        self.rates = StreamRates()
        self.cut_until = 0.0
        self.down_until: float | None = None  # rebooting: silent until then (monotonic)
        self.transport: asyncio.DatagramTransport | None = None
        self._dest = gcs
        self.commands = CommandReceiver(self)
        self.missions = MissionReceiver(self)
        self.params = ParamServer(self)

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
        if self.transport is None or self.cut or self.rebooting:
            self.counters.dropped += 1
            return
        self.transport.sendto(buf, self._dest)
        self.counters.sent += 1

    @property
    def cut(self) -> bool:
        return time.monotonic() < self.cut_until

    @property
    def streams(self) -> dict[int, float]:
        """Message id -> interval in seconds (real time) of what the drone streams now."""
        return self.rates.intervals

    @property
    def rebooting(self) -> bool:
        return self.down_until is not None

    def send(self, msg: Any, to: tuple[str, int] | None = None) -> None:
        self._dest = to or self.gcs
        self.mav.send(msg)

    def send_all(self, msg: Any, also: tuple[str, int] | None = None) -> None:
        """To the ground station and to ``also`` (a requester elsewhere): ArduPilot sends these on every link."""
        self.send(msg)
        if also is not None and also != self.gcs:
            self.send(msg, also)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.cut or self.rebooting:
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
                self.counters.failed += 1
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

    # -------------------------------------------------------------- streams
    def tick(self, sim_ms: int, now: float) -> None:
        if self.down_until is not None:
            if now < self.down_until:
                return
            self._boot(sim_ms)
        self.copter.step(sim_ms)
        self.flush_events()
        for msg_id in self.rates.due(now):
            self.send_by_id(msg_id)
        self.missions.tick(now)
        self.params.tick()

    def flush_events(self, also: tuple[str, int] | None = None) -> None:
        """Tell the ground station what the copter has to say (status texts, mission progress, a new home)
        now, e.g. a refusal's reason just before the refused command's ACK."""
        for event in self.copter.drain_events():
            if event.kind == "text":
                self.send_all(self.mav.statustext_encode(event.value, event.text[:50].encode()), also)
            elif event.kind == "mission_current":
                self.send_by_id(M.MAVLINK_MSG_ID_MISSION_CURRENT)
            elif event.kind == "home":
                self.send_by_id(M.MAVLINK_MSG_ID_HOME_POSITION)
            else:
                self.send(self.mav.mission_item_reached_encode(event.value))

    def send_by_id(self, msg_id: int, to: tuple[str, int] | None = None) -> bool:
        """Send the current value of message ``msg_id``; False for one the drone does not send."""
        msg = build_message(self, msg_id)
        if msg is None:
            return False
        self.send(msg, to)
        return True

    # -------------------------------------------------------------- reboot
    def reboot(self, down_s: float) -> None:
        """Power-cycle the autopilot: silent (sends and hears nothing) for ``down_s`` of real time, then it
        boots (:meth:`_boot`). The copter drops to the ground below where it was, disarmed."""
        self.down_until = time.monotonic() + max(0.0, down_s)
        self.copter.power_off()
        self.missions.addr = None  # an upload under way dies with the autopilot
        self.params.reset()
        self.commands.reset()

    def _boot(self, sim_ms: int) -> None:
        """Back from a reboot: stock stream rates, boot clock from 0, sequence numbers from 0; parameters,
        signing key and stored mission kept (ArduPilot keeps them in its storage)."""
        self.down_until = None
        self.rates.reset()
        self.mav.seq = 0
        self.copter.boot(sim_ms)

    # ------------------------------------------------------------- dispatch
    def _handle(self, msg: Any, addr: tuple[str, int]) -> None:
        kind = msg.get_type()
        if kind == "HEARTBEAT":
            if msg.type == M.MAV_TYPE_GCS:
                self.copter.gcs_heartbeat(msg.get_srcSystem())
            return
        target = getattr(msg, "target_system", None)
        if target is not None and target not in (0, self.dock.system_id):
            self.counters.ignored += 1
            return
        src = (msg.get_srcSystem(), msg.get_srcComponent())
        if kind in COMMAND_MESSAGES:
            self.commands.handle(kind, msg, src, addr)
        elif kind == "REQUEST_DATA_STREAM":
            self.rates.request_data_stream(msg.req_stream_id, msg.req_message_rate, msg.start_stop)
        elif not self.params.handle(kind, msg, addr):
            self.missions.handle(kind, msg, src, addr)


def new_keys(docks: Iterable[DroneDock]) -> dict[str, bytes]:
    """A fresh random 32-byte MAVLink 2 signing key per drone."""
    return {d.drone_id: secrets.token_bytes(32) for d in docks}


class DroneFleetSim:
    """N simulated drones on one asyncio loop; ``async with`` binds their sockets and starts the tick.

    ``speed`` runs the copters' clocks and flight physics faster than real time;
    the autopilot's own intervals (FS_GCS_TIMEOUT, the 30 s PreArm report) are on
    that clock, while links, stream rates and reboots stay in real time, as a
    ground station expects (so with ``speed`` S a 1 Hz GCS heartbeat is S
    simulated seconds apart: keep FS_GCS_TIMEOUT above that). ``keys`` maps a
    drone id to its MAVLink 2 signing key; a drone not in it flies unsigned.
    Without ``keys`` every drone signs with a fresh key (``self.keys``, to give the
    ground station): a fielded drone signs, so the simulator does by default too.
    Unsigned drones take an explicit ``keys={}``. ``config`` is copied per drone
    and ``params`` (ArduCopter names, e.g. ``{"FS_GCS_ENABLE": 1}``) applied to
    every copy: each drone then has its own parameters (:meth:`set_param`).
    """

    def __init__(self, docks: Iterable[DroneDock], gcs: tuple[str, int] = ("127.0.0.1", 14550), *,
                 host: str = "127.0.0.1", speed: float = 1.0, seed: int = 1, tick_hz: float = 20.0,
                 keys: dict[str, bytes] | None = None, config: CopterConfig | None = None,
                 params: dict[str, float] | None = None) -> None:
        self.docks = list(docks)
        self.gcs = gcs
        self.host = host
        self.speed = speed
        self.tick_s = 1.0 / tick_hz
        self._wall0 = time.time()
        self._mono0 = time.monotonic()
        rng = random.Random(seed)
        self.keys: dict[str, bytes] = new_keys(self.docks) if keys is None else dict(keys)
        base = dataclasses.replace(config or CopterConfig())
        apply_params(base, params or {})
        now = self.sim_now_ms()
        self.drones = [  # each its own copy of the config: parameters are per autopilot
            SimDrone(d, Copter(d.lat, d.lon, d.amsl_m, now, random.Random(rng.random()), dataclasses.replace(base)),
                     gcs, self.keys.get(d.drone_id))
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

    def pose(self, drone_id: str) -> tuple[float, float, float]:
        """Where the drone is and where it faces: ``(lat, lon, heading in degrees from north)``, for its camera."""
        copter = self.drone(drone_id).copter
        lat, lon, _ = copter.position()
        return lat, lon, copter.body.heading

    def sim_now_ms(self) -> int:
        return int(self._wall0 * 1000 + (time.monotonic() - self._mono0) * 1000 * self.speed)

    def cut_link(self, drone_id: str, seconds: float) -> None:
        """Radio loss: the drone neither sends nor hears anything for ``seconds`` of real time."""
        self.drone(drone_id).cut_until = time.monotonic() + seconds

    def set_battery(self, drone_id: str, pct: float) -> None:
        self.drone(drone_id).copter.set_battery(pct)

    def set_fault(self, drone_id: str, text: str | None) -> None:
        """Inject a sensor fault the pre-arm checks report as ``text`` (e.g. "Gyros inconsistent"); None clears."""
        self.drone(drone_id).copter.set_fault(text)

    def set_param(self, drone_id: str, name: str, value: float) -> float:
        """Set one drone's parameter as a PARAM_SET would (no PARAM_VALUE is sent); the stored value.
        KeyError for an unknown name, ValueError for a value out of range."""
        return self.drone(drone_id).params.set(name, value)

    def get_param(self, drone_id: str, name: str) -> float:
        return self.drone(drone_id).params.get(name)

    def power_cycle(self, drone_id: str, down_s: float = 3.0) -> None:
        """Reboot the drone's autopilot at any time, even in flight: silent for ``down_s`` (real time), then
        back on the ground below where it was, disarmed, with its boot clock from 0 and stock stream rates."""
        self.drone(drone_id).reboot(down_s)

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
        await cancel_and_wait(self._task)
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
