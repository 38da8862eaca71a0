"""The simulated copter is as strict as a stock ArduCopter 4.7 (issue 14): one test per parity case.

A ground station made of pymavlink and a real UDP socket talks to :class:`~sim.drones.DroneFleetSim`:
zero stream rates until asked, ArduCopter's REQUEST_DATA_STREAM groups, HOME_POSITION pushed when home
changes, the parameter protocol, a GCS failsafe that follows FS_GCS_ENABLE and MAV_GCS_SYSID, arming
refusals explained in STATUSTEXT with the pre-arm health bit, reboot, home reset at arming unless
DO_SET_HOME locked it, and the autopilot's clock offset. Last, hostile parameter and command messages
thrown at one endpoint (Hypothesis).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

os.environ.setdefault("MAVLINK20", "1")
from pymavlink.dialects.v20 import ardupilotmega as M

from geo.geodesy import haversine_m, offset
from sim.arducopter import REBOOT_FORCE_MAGIC, CopterConfig, MissionItem, Mode, NavCmd
from sim.copter import Copter
from sim.drones import DroneFleetSim, SimDrone
from sim.mav_params import PARAMS, find_param, param_value
from sim.stations import DroneDock
from tests.sim.test_drones_mavsdk import gcs_endpoint

DOCK = DroneDock("UAV-01", 1, 34.2610, 117.1859, "Central Police Station")
OTHER = DroneDock("UAV-02", 2, 34.2700, 117.1900, "North Station")
GPI, SYS_STATUS, EXT_STATE = (M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT, M.MAVLINK_MSG_ID_SYS_STATUS,
                              M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE)
pytestmark = pytest.mark.timeout(90)


# ------------------------------------------------------------------ the ground station
class Peer:
    """A ground station on a real UDP socket: pymavlink's codec, an optional heartbeat, a log of what it heard."""

    def __init__(self, system: int = 255, key: bytes | None = None) -> None:
        self.sock, self.mav = gcs_endpoint(system, key)
        self.heard: list[tuple[float, Any]] = []  # (host time received, message), everything read so far
        self._pending: list[Any] = []  # read after what :meth:`until` returned: the next collect's first
        self._beats: asyncio.Task[None] | None = None
        self.last_beat = 0.0

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", int(self.sock.getsockname()[1]))

    def send(self, msg: Any, to: tuple[str, int]) -> None:
        self.sock.sendto(msg.pack(self.mav), to)
        self.mav.seq = (self.mav.seq + 1) % 256

    def command(self, to: tuple[str, int], command: int, *params: float) -> None:
        p = [*params, *[0.0] * (7 - len(params))]
        self.send(self.mav.command_long_encode(1, 1, command, 0, *p), to)

    def command_int(self, to: tuple[str, int], command: int, frame: int, lat: float, lon: float, z: float,
                    *params: float) -> None:
        p = [*params, *[0.0] * (4 - len(params))]
        self.send(self.mav.command_int_encode(1, 1, frame, command, 0, 0, *p, round(lat * 1e7), round(lon * 1e7),
                                              z), to)

    async def collect(self, seconds: float, kinds: set[str] | None = None) -> list[Any]:
        """Everything (of ``kinds``) heard in the next ``seconds``."""
        loop = asyncio.get_running_loop()
        out = [m for m in self._pending if kinds is None or m.get_type() in kinds]
        self._pending = []
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), left)
            except TimeoutError:
                break
            for msg in self.mav.parse_buffer(data) or ():
                self.heard.append((time.time(), msg))
                if kinds is None or msg.get_type() in kinds:
                    out.append(msg)
        return out

    async def until(self, kind: str, match: Callable[[Any], bool] = lambda m: True, timeout: float = 3.0) -> Any:
        """The first ``kind`` message for which ``match`` holds, heard within ``timeout``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while (left := end - loop.time()) > 0:
            heard = await self.collect(min(left, 0.1))
            for i, msg in enumerate(heard):
                if msg.get_type() == kind and match(msg):
                    self._pending = heard[i + 1:]
                    return msg
        raise AssertionError(f"no matching {kind} in {timeout} s")

    def received(self, msg: Any) -> float:
        """The host time ``msg`` was heard."""
        return next(t for t, m in self.heard if m is msg)

    async def ack(self, to: tuple[str, int], command: int, *params: float) -> int:
        self.command(to, command, *params)
        return int((await self.until("COMMAND_ACK", lambda a: a.command == command)).result)

    async def ack_int(self, to: tuple[str, int], command: int, frame: int, lat: float, lon: float, z: float,
                      *params: float) -> int:
        self.command_int(to, command, frame, lat, lon, z, *params)
        return int((await self.until("COMMAND_ACK", lambda a: a.command == command)).result)

    def beat(self, to: tuple[str, int], hz: float = 4.0) -> None:
        """Send GCS heartbeats to the drone until :meth:`stop_beating`."""
        async def run() -> None:
            while True:
                self.send(self.mav.heartbeat_encode(M.MAV_TYPE_GCS, M.MAV_AUTOPILOT_INVALID, 0, 0, 0), to)
                self.last_beat = time.time()
                await asyncio.sleep(1.0 / hz)
        self._beats = asyncio.create_task(run())

    async def stop_beating(self) -> float:
        """Stop the heartbeats; the host time of the last one sent."""
        if self._beats is not None:
            self._beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beats
        return self.last_beat

    async def close(self) -> None:
        await self.stop_beating()
        self.sock.close()


@contextlib.asynccontextmanager
async def stock(system: int = 255, key: bytes | None = None,
                **kw: Any) -> AsyncIterator[tuple[DroneFleetSim, Peer, tuple[str, int]]]:
    """One drone with stock parameters (unless ``params`` says otherwise) and a ground station of ``system``."""
    peer = Peer(system, key)
    try:
        async with DroneFleetSim([DOCK], peer.addr, keys={DOCK.drone_id: key} if key else {}, **kw) as fleet:
            yield fleet, peer, fleet.drone(DOCK.drone_id).local_addr
    finally:
        await peer.close()


def kinds(msgs: list[Any]) -> set[str]:
    return {m.get_type() for m in msgs}


def texts(msgs: list[Any]) -> list[str]:
    return [m.text for m in msgs if m.get_type() == "STATUSTEXT"]


async def take_off(peer: Peer, to: tuple[str, int], alt: float = 15.0) -> None:
    """GUIDED, arm, take off, and watch GLOBAL_POSITION_INT (asked for at 5 Hz) until at ``alt``."""
    assert await peer.ack(to, M.MAV_CMD_SET_MESSAGE_INTERVAL, GPI, 200_000) == M.MAV_RESULT_ACCEPTED
    assert await peer.ack(to, M.MAV_CMD_DO_SET_MODE, 1, Mode.GUIDED) == M.MAV_RESULT_ACCEPTED
    assert await peer.ack(to, M.MAV_CMD_COMPONENT_ARM_DISARM, 1) == M.MAV_RESULT_ACCEPTED
    assert await peer.ack(to, M.MAV_CMD_NAV_TAKEOFF, 0, 0, 0, 0, 0, 0, alt) == M.MAV_RESULT_ACCEPTED
    await peer.until("GLOBAL_POSITION_INT", lambda p: p.relative_alt > (alt - 0.5) * 1000, 15)


async def goto(peer: Peer, to: tuple[str, int], lat: float, lon: float, alt: float) -> None:
    assert await peer.ack_int(to, M.MAV_CMD_DO_REPOSITION, M.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT, lat, lon, alt,
                              -1, M.MAV_DO_REPOSITION_FLAGS_CHANGE_MODE) == M.MAV_RESULT_ACCEPTED


def mode_is(mode: Mode) -> Callable[[Any], bool]:
    return lambda beat: beat.get_srcSystem() == DOCK.system_id and beat.custom_mode == mode


def from_dock(p: Any) -> float:
    return haversine_m(p.lat / 1e7, p.lon / 1e7, DOCK.lat, DOCK.lon)


# ------------------------------------------------------------------------- streams
async def test_only_heartbeats_until_set_message_interval() -> None:
    async with stock() as (_, peer, to):
        first = await peer.collect(2.0)
        assert kinds(first) == {"HEARTBEAT"} and 1 <= len(first) <= 3  # 1 Hz, nothing else unasked

        assert await peer.ack(to, M.MAV_CMD_SET_MESSAGE_INTERVAL, GPI, 100_000) == M.MAV_RESULT_ACCEPTED
        heard = await peer.collect(1.0)
        assert kinds(heard) == {"HEARTBEAT", "GLOBAL_POSITION_INT"}
        assert 8 <= [m.get_type() for m in heard].count("GLOBAL_POSITION_INT") <= 12

        # STATUSTEXT is pushed, never an interval message; an unknown id is refused as well.
        for msg_id in (M.MAVLINK_MSG_ID_STATUSTEXT, 9999):
            assert await peer.ack(to, M.MAV_CMD_SET_MESSAGE_INTERVAL, msg_id, 1e6) == M.MAV_RESULT_FAILED
        # 0 is the default rate: off, as for every message but the heartbeat; -1 is off.
        assert await peer.ack(to, M.MAV_CMD_SET_MESSAGE_INTERVAL, GPI, 0) == M.MAV_RESULT_ACCEPTED
        await peer.collect(0.2)
        assert kinds(await peer.collect(1.0)) == {"HEARTBEAT"}
        assert await peer.ack(to, M.MAV_CMD_SET_MESSAGE_INTERVAL, M.MAVLINK_MSG_ID_HEARTBEAT, -1) == 0
        assert await peer.collect(1.5) == []
        assert await peer.ack(to, M.MAV_CMD_SET_MESSAGE_INTERVAL, M.MAVLINK_MSG_ID_HEARTBEAT, 0) == 0
        assert kinds(await peer.collect(1.2)) == {"HEARTBEAT"}


async def test_request_data_stream_turns_on_arducopters_groups() -> None:
    groups = {
        M.MAV_DATA_STREAM_EXTENDED_STATUS: {"SYS_STATUS", "MISSION_CURRENT", "GPS_RAW_INT"},
        M.MAV_DATA_STREAM_POSITION: {"GLOBAL_POSITION_INT"},
        M.MAV_DATA_STREAM_EXTRA1: {"ATTITUDE"},
        M.MAV_DATA_STREAM_EXTRA2: {"VFR_HUD"},
        M.MAV_DATA_STREAM_EXTRA3: {"SYSTEM_TIME", "BATTERY_STATUS"},
    }
    async with stock() as (_, peer, to):
        for stream_id, expected in groups.items():
            peer.send(peer.mav.request_data_stream_encode(1, 1, stream_id, 10, 1), to)
            heard = await peer.collect(0.8)
            assert kinds(heard) - {"HEARTBEAT"} == expected, stream_id
            assert all(4 <= [m.get_type() for m in heard].count(kind) <= 10 for kind in expected)  # 10 Hz
            peer.send(peer.mav.request_data_stream_encode(1, 1, stream_id, 10, 0), to)  # stop
            await peer.collect(0.2)
            assert kinds(await peer.collect(0.6)) <= {"HEARTBEAT"}
        peer.send(peer.mav.request_data_stream_encode(1, 1, M.MAV_DATA_STREAM_ALL, 4, 1), to)
        await peer.collect(0.3)
        assert kinds(await peer.collect(1.0)) - {"HEARTBEAT"} == set().union(*groups.values())
        peer.send(peer.mav.request_data_stream_encode(1, 1, M.MAV_DATA_STREAM_ALL, 0, 0), to)
        await peer.collect(0.3)
        assert kinds(await peer.collect(1.0)) <= {"HEARTBEAT"}


async def test_extended_sys_state_is_in_no_group_only_asked_for() -> None:
    async with stock() as (_, peer, to):
        peer.send(peer.mav.request_data_stream_encode(1, 1, M.MAV_DATA_STREAM_ALL, 10, 1), to)
        heard = kinds(await peer.collect(1.5))
        assert "GLOBAL_POSITION_INT" in heard
        assert not heard & {"EXTENDED_SYS_STATE", "HOME_POSITION"}
        assert await peer.ack(to, M.MAV_CMD_SET_MESSAGE_INTERVAL, EXT_STATE, 500_000) == M.MAV_RESULT_ACCEPTED
        state = await peer.until("EXTENDED_SYS_STATE", timeout=1.0)
        assert state.landed_state == M.MAV_LANDED_STATE_ON_GROUND


async def test_home_position_is_pushed_when_home_changes() -> None:
    async with stock() as (_, peer, to):
        assert "HOME_POSITION" not in kinds(await peer.collect(1.2))
        assert await peer.ack(to, M.MAV_CMD_DO_SET_MODE, 1, Mode.GUIDED) == M.MAV_RESULT_ACCEPTED
        assert await peer.ack(to, M.MAV_CMD_COMPONENT_ARM_DISARM, 1) == M.MAV_RESULT_ACCEPTED  # home reset
        home = [m for _, m in peer.heard if m.get_type() == "HOME_POSITION"]
        assert len(home) == 1 and (home[0].latitude, home[0].altitude) == (round(DOCK.lat * 1e7), 40_000)

        spot = offset(DOCK.lat, DOCK.lon, 300.0, 0.0)
        assert await peer.ack_int(to, M.MAV_CMD_DO_SET_HOME, M.MAV_FRAME_GLOBAL_INT, *spot, 45.0) == 0
        moved = [m for _, m in peer.heard if m.get_type() == "HOME_POSITION"][-1]
        assert (moved.latitude, moved.longitude, moved.altitude) == (round(spot[0] * 1e7), round(spot[1] * 1e7),
                                                                     45_000)
        far = offset(DOCK.lat, DOCK.lon, 60_000.0, 0.0)  # beyond 50 km: ArduPilot refuses it
        assert await peer.ack(to, M.MAV_CMD_DO_SET_HOME, 0, 0, 0, 0, *far, 40.0) == M.MAV_RESULT_FAILED
        assert "HOME_POSITION" not in kinds(await peer.collect(0.5))


# ---------------------------------------------------------------------- parameters
async def test_params_read_list_set_and_kept_over_reboot() -> None:
    async with stock(config=CopterConfig(reboot_s=1.0)) as (_, peer, to):
        peer.send(peer.mav.param_request_read_encode(1, 1, b"FS_GCS_ENABLE", -1), to)
        value = await peer.until("PARAM_VALUE")
        index = value.param_index
        assert (value.param_id, value.param_value, value.param_type) == ("FS_GCS_ENABLE", 0.0,
                                                                         M.MAV_PARAM_TYPE_INT8)
        assert value.param_count == len(PARAMS) and 0 <= index < len(PARAMS)
        peer.send(peer.mav.param_request_read_encode(1, 1, b"ignored", index), to)  # by index
        assert (await peer.until("PARAM_VALUE")).param_id == "FS_GCS_ENABLE"
        peer.send(peer.mav.param_request_read_encode(1, 1, b"NO_SUCH_PARAM", -1), to)
        peer.send(peer.mav.param_request_read_encode(1, 1, b"", len(PARAMS)), to)
        assert await peer.collect(0.5, {"PARAM_VALUE"}) == []  # nothing, as ArduPilot

        peer.send(peer.mav.param_request_list_encode(1, 1), to)
        listed = {v.param_index: v for v in await peer.collect(1.0, {"PARAM_VALUE"})}
        assert sorted(listed) == list(range(len(PARAMS)))
        stock_values = {v.param_id: (v.param_value, v.param_type) for v in listed.values()}
        assert stock_values["FS_GCS_TIMEOUT"] == (5.0, M.MAV_PARAM_TYPE_REAL32)
        assert stock_values["MAV_GCS_SYSID"] == (255.0, M.MAV_PARAM_TYPE_INT16)
        assert stock_values["ARMING_CHECK"] == (1.0, M.MAV_PARAM_TYPE_INT32)
        assert {"WPNAV_SPEED", "WPNAV_SPEED_UP", "RTL_ALT", "DISARM_DELAY"} <= set(stock_values)

        peer.send(peer.mav.param_set_encode(1, 1, b"FS_GCS_ENABLE", 1.0, M.MAV_PARAM_TYPE_INT8), to)
        assert (await peer.until("PARAM_VALUE")).param_value == 1.0
        peer.send(peer.mav.param_set_encode(1, 1, b"FS_GCS_TIMEOUT", 500.0, M.MAV_PARAM_TYPE_REAL32), to)
        refusal = await peer.until("STATUSTEXT")
        assert "FS_GCS_TIMEOUT" in refusal.text and "range" in refusal.text
        peer.send(peer.mav.param_set_encode(1, 1, b"NO_SUCH_PARAM", 1.0, M.MAV_PARAM_TYPE_REAL32), to)
        assert await peer.collect(0.5, {"PARAM_VALUE"}) == []

        assert await peer.ack(to, M.MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN, 1) == M.MAV_RESULT_ACCEPTED
        await peer.until("STATUSTEXT", lambda t: t.text.startswith("ArduCopter V4.7"), 3.0)
        for name, expected in ((b"FS_GCS_ENABLE", 1.0), (b"FS_GCS_TIMEOUT", 5.0)):
            peer.send(peer.mav.param_request_read_encode(1, 1, name, -1), to)
            assert (await peer.until("PARAM_VALUE")).param_value == expected  # kept, and the refused set was not


# ----------------------------------------------------------------------- failsafe
async def test_default_params_fly_on_when_the_gcs_goes_silent() -> None:
    async with stock(speed=4.0) as (fleet, peer, to):
        peer.beat(to)
        await take_off(peer, to)
        target = offset(DOCK.lat, DOCK.lon, 600.0, 0.0)
        await goto(peer, to, *target, 15.0)
        await peer.collect(0.5)
        await peer.stop_beating()
        before = from_dock(await peer.until("GLOBAL_POSITION_INT"))
        heard = await peer.collect(3.0)  # 12 s of flight: more than twice FS_GCS_TIMEOUT
        beats = [m for m in heard if m.get_type() == "HEARTBEAT"]
        assert beats and all(b.custom_mode == Mode.GUIDED for b in beats)
        assert not any("Failsafe" in t for t in texts(heard))
        after = from_dock([m for m in heard if m.get_type() == "GLOBAL_POSITION_INT"][-1])
        assert after > before + 80  # still on its way to the target, 600 m out
        assert not fleet.copters[0].gcs_failsafe


async def test_fs_gcs_enable_1_returns_after_fs_gcs_timeout_without_heartbeats_from_255() -> None:
    speed = 2.0
    async with stock(speed=speed, params={"FS_GCS_ENABLE": 1}) as (_, peer, to):
        peer.beat(to)
        await take_off(peer, to)
        await goto(peer, to, *offset(DOCK.lat, DOCK.lon, 0.0, 400.0), 15.0)
        await peer.collect(0.5)
        last = await peer.stop_beating()
        text = await peer.until("STATUSTEXT", lambda t: t.text == "GCS Failsafe", 6.0)
        fired = peer.received(text)
        assert text.severity == M.MAV_SEVERITY_CRITICAL
        assert 4.6 <= (fired - last) * speed <= 6.5  # FS_GCS_TIMEOUT is 5 s of the copter's time
        beat = await peer.until("HEARTBEAT", mode_is(Mode.RTL), 2.0)
        assert beat.system_status == M.MAV_STATE_CRITICAL  # ArduCopter's word for "a failsafe is on"


async def test_heartbeats_from_another_system_never_arm_the_failsafe() -> None:
    async with stock(system=250, speed=4.0, params={"FS_GCS_ENABLE": 1}) as (fleet, peer, to):
        peer.beat(to)
        await take_off(peer, to)
        await peer.stop_beating()
        heard = await peer.collect(2.5)  # 10 s of the copter's time, twice FS_GCS_TIMEOUT
        assert all(b.custom_mode == Mode.GUIDED for b in heard if b.get_type() == "HEARTBEAT")
        assert not any("Failsafe" in t for t in texts(heard))

        # The hub's way out: MAV_GCS_SYSID set to its own system id; then its heartbeats count.
        peer.send(peer.mav.param_set_encode(1, 1, b"MAV_GCS_SYSID", 250.0, M.MAV_PARAM_TYPE_INT16), to)
        assert (await peer.until("PARAM_VALUE")).param_value == 250.0
        peer.beat(to)
        await peer.collect(0.5)
        await peer.stop_beating()
        await peer.until("STATUSTEXT", lambda t: t.text == "GCS Failsafe", 3.0)
        await peer.until("HEARTBEAT", mode_is(Mode.RTL), 2.0)
        assert fleet.copters[0].gcs_failsafe


# -------------------------------------------------------------------------- arming
async def test_arm_refusal_explained_before_its_failed_ack_with_prearm_health() -> None:
    prearm, gyro = M.MAV_SYS_STATUS_PREARM_CHECK, M.MAV_SYS_STATUS_SENSOR_3D_GYRO
    async with stock(speed=20.0) as (fleet, peer, to):
        assert await peer.ack(to, M.MAV_CMD_SET_MESSAGE_INTERVAL, SYS_STATUS, 200_000) == M.MAV_RESULT_ACCEPTED
        healthy = await peer.until("SYS_STATUS")
        assert healthy.onboard_control_sensors_health & (prearm | gyro) == prearm | gyro

        fleet.set_fault(DOCK.drone_id, "Gyros inconsistent")
        status = await peer.until("SYS_STATUS", lambda s: not s.onboard_control_sensors_health & prearm)
        assert status.onboard_control_sensors_present & prearm and status.onboard_control_sensors_enabled & prearm
        assert not status.onboard_control_sensors_health & gyro
        assert "PreArm: Gyros inconsistent" in texts([m for _, m in peer.heard])  # reported at once
        peer.heard.clear()
        assert await peer.ack(to, M.MAV_CMD_COMPONENT_ARM_DISARM, 1) == M.MAV_RESULT_FAILED
        said = [m for _, m in peer.heard if m.get_type() in ("STATUSTEXT", "COMMAND_ACK")]
        refused = next(i for i, m in enumerate(said) if m.get_type() == "COMMAND_ACK")
        assert refused > 0 and (said[refused - 1].text, said[refused - 1].severity) == (
            "Arm: Gyros inconsistent", M.MAV_SEVERITY_ERROR)  # the reason, just before the FAILED ack
        # While disarmed and failing, the copter repeats the reason every 30 s of its time (20x real time here):
        # the next one 1.5 s after the first, the one after that 3 s after it.
        reports = texts(await peer.collect(2.0))
        assert reports.count("PreArm: Gyros inconsistent") == 1

        fleet.set_fault(DOCK.drone_id, None)
        await peer.until("SYS_STATUS", lambda s: s.onboard_control_sensors_health & prearm)
        assert await peer.ack(to, M.MAV_CMD_DO_SET_MODE, 1, Mode.GUIDED) == M.MAV_RESULT_ACCEPTED
        assert await peer.ack(to, M.MAV_CMD_COMPONENT_ARM_DISARM, 1) == M.MAV_RESULT_ACCEPTED

        # A refused mode change is explained the same way, before its FAILED ack.
        fleet.copters[0].gps.fix_type = 1
        peer.heard.clear()
        assert await peer.ack(to, M.MAV_CMD_DO_SET_MODE, 1, Mode.LOITER) == M.MAV_RESULT_FAILED
        said = [m for _, m in peer.heard if m.get_type() in ("STATUSTEXT", "COMMAND_ACK")]
        refused = next(i for i, m in enumerate(said) if m.get_type() == "COMMAND_ACK")
        assert refused > 0 and said[refused - 1].text.startswith("Flight mode change failed")


# -------------------------------------------------------------------------- reboot
async def test_reboot_over_the_wire_silence_then_a_fresh_boot() -> None:
    key = bytes(range(32))
    async with stock(key=key, config=CopterConfig(reboot_s=1.5)) as (fleet, peer, to):
        copter = fleet.copters[0]
        copter.set_mission([MissionItem(NavCmd.WAYPOINT, DOCK.lat, DOCK.lon, 0.0, frame=0),
                            MissionItem(NavCmd.TAKEOFF, alt=20.0)])
        assert await peer.ack(to, M.MAV_CMD_SET_MESSAGE_INTERVAL, GPI, 200_000) == M.MAV_RESULT_ACCEPTED
        peer.send(peer.mav.param_set_encode(1, 1, b"WPNAV_SPEED", 800.0, M.MAV_PARAM_TYPE_REAL32), to)
        assert (await peer.until("PARAM_VALUE")).param_value == 800.0
        assert await peer.ack(to, M.MAV_CMD_DO_SET_HOME, 1) == M.MAV_RESULT_ACCEPTED and copter.home_locked
        await peer.collect(1.5)
        assert await peer.ack(to, M.MAV_CMD_REQUEST_MESSAGE, M.MAVLINK_MSG_ID_SYSTEM_TIME) == 0
        up_ms = (await peer.until("SYSTEM_TIME")).time_boot_ms
        assert up_ms > 1_500

        assert await peer.ack(to, M.MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN, 1) == M.MAV_RESULT_ACCEPTED
        peer.command(to, M.MAV_CMD_DO_SET_MODE, 1, Mode.LOITER)  # lost: the autopilot hears nothing now
        assert await peer.collect(1.3) == []
        boot = await peer.until("STATUSTEXT", timeout=1.5)
        assert boot.text == "ArduCopter V4.7.0-dev (sim)"
        assert await peer.ack(to, M.MAV_CMD_REQUEST_MESSAGE, M.MAVLINK_MSG_ID_SYSTEM_TIME) == 0
        assert (await peer.until("SYSTEM_TIME")).time_boot_ms < 1_000 < up_ms  # the boot clock restarted
        after = await peer.collect(1.2)
        assert kinds(after) <= {"HEARTBEAT", "HOME_POSITION"}  # stream rates are stock again
        assert all(b.custom_mode == Mode.STABILIZE and not b.base_mode & M.MAV_MODE_FLAG_SAFETY_ARMED
                   for b in after if b.get_type() == "HEARTBEAT")
        peer.send(peer.mav.param_request_read_encode(1, 1, b"WPNAV_SPEED", -1), to)
        assert (await peer.until("PARAM_VALUE")).param_value == 800.0  # parameters kept
        peer.send(peer.mav.mission_request_list_encode(1, 1), to)
        assert (await peer.until("MISSION_COUNT")).count == 2  # the stored mission kept
        assert not copter.home_locked and copter.mode is Mode.STABILIZE
        assert peer.mav.signing.badsig_count == 0 and peer.mav.signing.goodsig_count > 0  # the same key


async def test_reboot_refused_while_armed_unless_forced() -> None:
    async with stock(config=CopterConfig(reboot_s=1.0)) as (fleet, peer, to):
        assert await peer.ack(to, M.MAV_CMD_DO_SET_MODE, 1, Mode.GUIDED) == M.MAV_RESULT_ACCEPTED
        assert await peer.ack(to, M.MAV_CMD_COMPONENT_ARM_DISARM, 1) == M.MAV_RESULT_ACCEPTED
        assert await peer.ack(to, M.MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN, 1) == M.MAV_RESULT_FAILED
        assert "HEARTBEAT" in kinds(await peer.collect(1.2))
        assert await peer.ack(to, M.MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN, 1, 0, 0, 0, 0,
                              REBOOT_FORCE_MAGIC) == M.MAV_RESULT_ACCEPTED
        assert await peer.collect(0.8) == []
        await peer.until("STATUSTEXT", lambda t: t.text.startswith("ArduCopter"), 2.0)
        assert not fleet.copters[0].armed


async def test_power_cycle_in_flight_leaves_it_on_the_ground_below() -> None:
    async with stock(speed=4.0) as (fleet, peer, to):
        await take_off(peer, to, 20.0)
        await goto(peer, to, *offset(DOCK.lat, DOCK.lon, 100.0, 0.0), 20.0)
        where = await peer.until("GLOBAL_POSITION_INT", lambda p: from_dock(p) > 60, 10)
        fleet.power_cycle(DOCK.drone_id, down_s=1.0)
        copter = fleet.copters[0]
        assert not copter.armed and copter.position()[2] == 0.0
        assert await peer.collect(0.8) == []
        await peer.until("STATUSTEXT", lambda t: t.text.startswith("ArduCopter"), 1.5)
        lat, lon, _ = copter.position()
        assert haversine_m(lat, lon, where.lat / 1e7, where.lon / 1e7) < 20  # below where it was
        assert haversine_m(*copter.home()[:2], lat, lon) < 0.01  # and home is there now


# ---------------------------------------------------------------------------- home
async def test_home_reset_at_arming_unless_do_set_home_locked_it() -> None:
    config = CopterConfig(rtl_loiter_s=0.0, land_slow_alt_m=0.0)
    async with stock(speed=6.0, config=config) as (_, peer, to):
        await take_off(peer, to)
        away = offset(DOCK.lat, DOCK.lon, 0.0, 120.0)
        await goto(peer, to, *away, 15.0)
        await peer.until("GLOBAL_POSITION_INT", lambda p: haversine_m(p.lat / 1e7, p.lon / 1e7, *away) < 3, 15)
        assert await peer.ack(to, M.MAV_CMD_NAV_LAND) == M.MAV_RESULT_ACCEPTED
        await peer.until("HEARTBEAT", lambda b: not b.base_mode & M.MAV_MODE_FLAG_SAFETY_ARMED, 15)

        # A stock ArduCopter arming here makes this spot home.
        assert await peer.ack(to, M.MAV_CMD_DO_SET_MODE, 1, Mode.GUIDED) == M.MAV_RESULT_ACCEPTED
        assert await peer.ack(to, M.MAV_CMD_COMPONENT_ARM_DISARM, 1) == M.MAV_RESULT_ACCEPTED
        reset = [m for _, m in peer.heard if m.get_type() == "HOME_POSITION"][-1]
        assert haversine_m(reset.latitude / 1e7, reset.longitude / 1e7, *away) < 3
        assert await peer.ack(to, M.MAV_CMD_COMPONENT_ARM_DISARM, 0) == M.MAV_RESULT_ACCEPTED

        # Home set to the dock locks it: arming keeps it, and RTL lands at the dock.
        assert await peer.ack_int(to, M.MAV_CMD_DO_SET_HOME, M.MAV_FRAME_GLOBAL_INT, DOCK.lat, DOCK.lon,
                                  DOCK.amsl_m) == M.MAV_RESULT_ACCEPTED
        peer.heard.clear()
        await take_off(peer, to)
        assert "HOME_POSITION" not in {m.get_type() for _, m in peer.heard}  # arming did not move it
        assert await peer.ack(to, M.MAV_CMD_GET_HOME_POSITION) == M.MAV_RESULT_ACCEPTED
        home = await peer.until("HOME_POSITION")
        assert (home.latitude, home.longitude) == (round(DOCK.lat * 1e7), round(DOCK.lon * 1e7))
        assert await peer.ack(to, M.MAV_CMD_NAV_RETURN_TO_LAUNCH) == M.MAV_RESULT_ACCEPTED
        await peer.until("HEARTBEAT", lambda b: not b.base_mode & M.MAV_MODE_FLAG_SAFETY_ARMED, 20)
        landed = await peer.until("GLOBAL_POSITION_INT")
        assert from_dock(landed) < 8 and landed.relative_alt < 200  # at the dock (GPS error aside)


# --------------------------------------------------------------------------- clock
async def test_system_time_runs_the_autopilots_offset_from_the_host() -> None:
    async with stock() as (_, peer, to):
        assert await peer.ack(to, M.MAV_CMD_SET_MESSAGE_INTERVAL, M.MAVLINK_MSG_ID_SYSTEM_TIME, 250_000) == 0
        for _ in range(3):
            msg = await peer.until("SYSTEM_TIME")
            offset_ms = msg.time_unix_usec / 1000 - peer.received(msg) * 1000
            assert -2650 - 150 < offset_ms < -2650 + 50  # SITL's clock ran 2.65 s behind the host's
            assert msg.time_boot_ms < 10_000
        assert await peer.ack(to, M.MAV_CMD_REQUEST_MESSAGE, M.MAVLINK_MSG_ID_GPS_RAW_INT) == 0
        gps = await peer.until("GPS_RAW_INT")  # built on request, from the copter's last tick (50 ms)
        assert -2650 - 150 < gps.time_usec / 1000 - peer.received(gps) * 1000 < -2650 + 50


# ------------------------------------------------------------------ the fleet's hooks
def test_fleet_params_are_per_drone_and_checked() -> None:
    fleet = DroneFleetSim([DOCK, OTHER], keys={}, params={"FS_GCS_ENABLE": 1, "WPNAV_SPEED": 800})
    assert fleet.get_param(DOCK.drone_id, "FS_GCS_ENABLE") == 1.0
    assert fleet.copters[0].config.fs_gcs_enable == 1 and fleet.copters[0].speed_mps == 8.0
    assert fleet.set_param(OTHER.drone_id, "MAV_GCS_SYSID", 250.4) == 250.0  # an INT16: rounded
    assert fleet.copters[1].config.gcs_sysid == 250 and fleet.copters[0].config.gcs_sysid == 255
    with pytest.raises(KeyError):
        fleet.set_param(DOCK.drone_id, "FS_GCS_ENABLED", 1)
    with pytest.raises(ValueError, match="range"):
        fleet.set_param(DOCK.drone_id, "FS_GCS_TIMEOUT", 1.0)
    with pytest.raises(KeyError):
        DroneFleetSim([DOCK], keys={}, params={"NOPE": 1})
    assert CopterConfig().clock_offset_ms == -2650 and CopterConfig().reboot_s == 3.0


# ---------------------------------------------------------- hostile input (Hypothesis)
class _Endpoint(SimDrone):
    """A drone endpoint with no socket: what it would send is parsed back into ``out``."""

    def __init__(self) -> None:
        super().__init__(DOCK, Copter(DOCK.lat, DOCK.lon, DOCK.amsl_m, 1_795_000_000_000, random.Random(1)),
                         ("127.0.0.1", 9), None)
        self.out: list[Any] = []
        self._reader = M.MAVLink(None, 255, 190)

    def write(self, buf: bytes) -> None:
        self.out.extend(self._reader.parse_buffer(buf) or ())


_NAMES = [spec.name for spec in PARAMS]
_COMMANDS = [M.MAV_CMD_COMPONENT_ARM_DISARM, M.MAV_CMD_NAV_TAKEOFF, M.MAV_CMD_DO_SET_MODE, M.MAV_CMD_DO_REPOSITION,
             M.MAV_CMD_DO_SET_HOME, M.MAV_CMD_NAV_RETURN_TO_LAUNCH, M.MAV_CMD_NAV_LAND, M.MAV_CMD_MISSION_START,
             M.MAV_CMD_DO_CHANGE_SPEED, M.MAV_CMD_DO_SET_MISSION_CURRENT, M.MAV_CMD_SET_MESSAGE_INTERVAL,
             M.MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN, M.MAV_CMD_REQUEST_MESSAGE, M.MAV_CMD_GET_HOME_POSITION]
_floats = st.floats(width=32) | st.sampled_from([0.0, 1.0, -1.0, 3.0, 21196.0, float(REBOOT_FORCE_MAGIC), math.nan])
_name = st.sampled_from(_NAMES).map(str.encode) | st.binary(max_size=16)
_target = st.sampled_from([0, 1, 1, 1, 2])
_byte = st.integers(0, 255)
_message = st.one_of(  # (pymavlink encoder, its arguments)
    st.tuples(st.just("param_set"), _target, _byte, _name, _floats, _byte),
    st.tuples(st.just("param_request_read"), _target, _byte, _name, st.integers(-32768, 32767)),
    st.tuples(st.just("param_request_list"), _target, _byte),
    st.tuples(st.just("command_long"), _target, _byte, st.sampled_from(_COMMANDS) | st.integers(0, 65535), _byte,
              *[_floats] * 7),
)


@given(st.lists(_message, max_size=25))
@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_param_and_command_messages_never_crash_nor_invent_parameters(messages: list[tuple[Any, ...]]) -> None:
    drone, peer, reader = _Endpoint(), M.MAVLink(None, 255, 190), M.MAVLink(None, 1, 1)
    before = {spec.name: param_value(drone.copter.config, spec) for spec in PARAMS}
    untouched = vars_of(drone.copter.config)
    set_names: set[str] = set()
    sim_ms, now = drone.copter.now_ms, time.monotonic()
    for kind, *args in messages:
        buf = getattr(peer, f"{kind}_encode")(*args).pack(peer)
        peer.seq = (peer.seq + 1) % 256
        if kind == "param_set":
            set_names.add(reader.parse_buffer(buf)[0].param_id)  # the name as the drone reads it
        drone.datagram_received(buf, ("127.0.0.1", 14550))
        sim_ms, now = sim_ms + 100, now + 100.0  # far enough for a reboot to end before the next message
        drone.tick(sim_ms, now)
    assert drone.counters.failed == 0 and drone.counters.bad == 0
    replies = [m for m in drone.out if m.get_type() == "PARAM_VALUE"]
    assert all(find_param(m.param_id) is not None and m.param_count == len(PARAMS) for m in replies)
    for spec in PARAMS:
        value = param_value(drone.copter.config, spec)
        if spec.name not in set_names:
            assert value == before[spec.name], spec.name
        assert spec.low <= value <= spec.high
    named_fields = {spec.field for spec in PARAMS}
    assert {k: v for k, v in vars_of(drone.copter.config).items() if k not in named_fields} == {
        k: v for k, v in untouched.items() if k not in named_fields}


def vars_of(config: CopterConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}
