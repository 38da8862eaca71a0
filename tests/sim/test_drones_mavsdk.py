"""The drone simulator against real MAVLink peers.

A flight driven by MAVSDK (a ground station, in-process C++ core) through
MAVProxy (a separate process, routing between them, asking for ArduCopter's
stream groups with REQUEST_DATA_STREAM), MAVSDK on its own asking with
SET_MESSAGE_INTERVAL, and protocol details checked with pymavlink over real UDP
sockets: signing, targeting, duplicates, mission-transfer errors, stream rates,
link cuts. Like a stock ArduCopter the simulator streams nothing but heartbeats
until a peer asks (tests/sim/test_copter_stock.py has the parity cases).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("MAVLINK20", "1")
from pymavlink.dialects.v20 import ardupilotmega as M

from geo.geodesy import haversine_m, offset
from sim.copter import CopterConfig, Mode
from sim.drones import DroneFleetSim
from sim.stations import DroneDock

mavsdk = pytest.importorskip("mavsdk.asyncio")
from mavsdk.asyncio.plugins.action import ActionAsync  # noqa: E402
from mavsdk.asyncio.plugins.mission_raw import MissionItem, MissionRawAsync  # noqa: E402
from mavsdk.asyncio.plugins.telemetry import FlightMode, TelemetryAsync  # noqa: E402

DOCK = DroneDock("UAV-01", 1, 34.2610, 117.1859, "Central Police Station")
MAVPROXY = Path(sys.executable).parent / "mavproxy.py"
pytestmark = pytest.mark.timeout(120)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mavproxy(master_port: int, out_port: int, log: Path) -> Any:
    """MAVProxy as a plain router: no state dir, no console or map, only the link module."""
    cmd = [str(MAVPROXY), f"--master=udpin:127.0.0.1:{master_port}", f"--out=udp:127.0.0.1:{out_port}",
           "--daemon", "--non-interactive", "--no-state", "--default-modules=link"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def until(subscription: AsyncGenerator[Any, None], done: Callable[[Any], bool], timeout: float) -> Any:
    """The first value of a MAVSDK subscription for which ``done`` holds."""
    async def scan() -> Any:
        async for value in subscription:
            if done(value):
                return value
        raise AssertionError("subscription ended")

    try:
        return await asyncio.wait_for(scan(), timeout)
    finally:
        await subscription.aclose()


async def test_mavsdk_flies_the_sim_through_mavproxy(tmp_path: Path) -> None:
    master, out = free_udp_port(), free_udp_port()
    config = CopterConfig(rtl_loiter_s=1.0)
    with mavproxy(master, out, tmp_path / "mavproxy.log"):
        # Unsigned on purpose (keys={}): this ground station (MAVSDK through MAVProxy) is given no key.
        async with DroneFleetSim([DOCK], ("127.0.0.1", master), speed=5.0, config=config, keys={}) as fleet:
            cfg = mavsdk.Configuration.create_with_component_type(mavsdk.ComponentType.GROUND_STATION)
            async with mavsdk.Mavsdk(cfg) as sdk:
                await sdk.add_any_connection(f"udpin://127.0.0.1:{out}")
                system = await sdk.first_autopilot(timeout_s=15.0)
                assert system is not None and await system.is_connected()
                assert await system.get_system_id() == DOCK.system_id
                tel, action, mission = TelemetryAsync(system), ActionAsync(system), MissionRawAsync(system)

                # Telemetry as a GCS sees it: at the dock, full battery, STABILIZE. MAVSDK asks for nothing here:
                # MAVProxy's REQUEST_DATA_STREAM (all groups, 4 Hz) turns the streams on. Its request at start-up
                # goes to the vehicles it has registered, none yet, so the first one that counts is its periodic
                # re-request 15 s later: hence the long wait, the same with a stock ArduCopter.
                pos = await until(tel.subscribe_position(), lambda p: p.latitude_deg != 0, 20)
                assert fleet.drone(DOCK.drone_id).streams[M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT] == 0.25
                assert haversine_m(pos.latitude_deg, pos.longitude_deg, DOCK.lat, DOCK.lon) < 10
                assert pos.absolute_altitude_m == pytest.approx(DOCK.amsl_m, abs=0.5)
                battery = await until(tel.subscribe_battery(), lambda b: b.remaining_percent > 0, 10)
                assert battery.remaining_percent == pytest.approx(100, abs=1)
                assert await until(tel.subscribe_flight_mode(), lambda m: True, 10) == FlightMode.STABILIZED

                # Arm and take off: MAVSDK switches to GUIDED and sends NAV_TAKEOFF with its altitude.
                await action.arm()
                await until(tel.subscribe_armed(), bool, 5)
                await action.set_takeoff_altitude(15.0)
                await action.takeoff()
                await until(tel.subscribe_in_air(), bool, 10)
                await until(tel.subscribe_position(), lambda p: p.relative_altitude_m > 14.0, 15)
                assert await until(tel.subscribe_flight_mode(), lambda m: True, 5) == FlightMode.OFFBOARD

                # Go to a point 150 m away (DO_REPOSITION, AMSL altitude).
                target = offset(DOCK.lat, DOCK.lon, 120.0, 90.0)
                await action.goto_location(target[0], target[1], DOCK.amsl_m + 20.0, 0.0)
                await until(tel.subscribe_position(),
                            lambda p: haversine_m(p.latitude_deg, p.longitude_deg, *target) < 6
                            and abs(p.relative_altitude_m - 20.0) < 1.0, 20)

                # A short mission flown in AUTO, progress seen by MAVSDK.
                wp1 = offset(DOCK.lat, DOCK.lon, 200.0, 0.0)
                wp2 = offset(DOCK.lat, DOCK.lon, 100.0, -60.0)
                items = [_item(0, M.MAV_CMD_NAV_WAYPOINT, DOCK.lat, DOCK.lon, 0.0, current=1),
                         _item(1, M.MAV_CMD_NAV_WAYPOINT, *wp1, 25.0),
                         _item(2, M.MAV_CMD_NAV_WAYPOINT, *wp2, 25.0)]
                await mission.upload_mission(items)
                assert len(fleet.copters[0].mission) == 3  # the sim holds what MAVSDK uploaded
                progress: list[int] = []
                watch = until(mission.subscribe_mission_progress(),
                              lambda p: _note(progress, p.current) == 2, 30)
                watcher = asyncio.ensure_future(watch)
                await asyncio.sleep(0.2)
                await mission.start_mission()
                await watcher
                assert await until(tel.subscribe_flight_mode(), lambda m: True, 5) == FlightMode.MISSION
                assert [p for p in progress if p in (1, 2)][:1] == [1] and progress[-1] == 2
                await until(tel.subscribe_position(),
                            lambda p: haversine_m(p.latitude_deg, p.longitude_deg, *wp2) < 6, 20)

                # Home: RTL climbs, returns, lands and disarms.
                await action.return_to_launch()
                await until(tel.subscribe_flight_mode(), lambda m: m == FlightMode.RETURN_TO_LAUNCH, 5)
                await until(tel.subscribe_in_air(), lambda air: not air, 40)
                await until(tel.subscribe_armed(), lambda armed: not armed, 10)
                pos = await until(tel.subscribe_position(), lambda p: True, 5)
                assert haversine_m(pos.latitude_deg, pos.longitude_deg, DOCK.lat, DOCK.lon) < 10
                assert pos.relative_altitude_m == pytest.approx(0.0, abs=0.1)
            counters = fleet.drone(DOCK.drone_id).counters
            assert counters.commands >= 6 and counters.refused == 0 and counters.bad == 0


async def test_mavsdk_alone_gets_telemetry_once_it_sets_message_intervals() -> None:
    port = free_udp_port()
    async with DroneFleetSim([DOCK], ("127.0.0.1", port), keys={}) as fleet:
        cfg = mavsdk.Configuration.create_with_component_type(mavsdk.ComponentType.GROUND_STATION)
        async with mavsdk.Mavsdk(cfg) as sdk:
            await sdk.add_any_connection(f"udpin://127.0.0.1:{port}")
            system = await sdk.first_autopilot(timeout_s=15.0)
            assert system is not None
            tel = TelemetryAsync(system)
            with pytest.raises(TimeoutError):  # a stock autopilot: heartbeats only, no position
                await until(tel.subscribe_position(), lambda p: True, 2.5)
            await tel.set_rate_position(4.0)  # MAV_CMD_SET_MESSAGE_INTERVAL
            await tel.set_rate_in_air(1.0)
            pos = await until(tel.subscribe_position(), lambda p: p.latitude_deg != 0, 5)
            assert haversine_m(pos.latitude_deg, pos.longitude_deg, DOCK.lat, DOCK.lon) < 10
            assert await until(tel.subscribe_in_air(), lambda air: True, 5) is False
            streams = fleet.drone(DOCK.drone_id).streams
            assert streams[M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT] == 0.25
            assert streams[M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE] == 1.0


def _note(seen: list[int], value: int) -> int:
    seen.append(value)
    return value


def _item(seq: int, command: int, lat: float, lon: float, alt: float, current: int = 0) -> MissionItem:
    return MissionItem(seq=seq, frame=M.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT, command=command, current=current,
                       autocontinue=1, param1=0.0, param2=0.0, param3=0.0, param4=math.nan,
                       x=round(lat * 1e7), y=round(lon * 1e7), z=alt, mission_type=0)


# ----------------------------------------------------------- pymavlink peer
def gcs_endpoint(system: int, key: bytes | None) -> tuple[socket.socket, Any]:
    """A ground station's non-blocking loopback UDP socket and pymavlink codec (signing with ``key``, if any)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    mav = M.MAVLink(None, system, 190)
    mav.robust_parsing = True
    if key is not None:
        mav.signing.secret_key = key
        mav.signing.sign_outgoing = True
        mav.signing.timestamp = int((time.time() - 1_420_070_400) * 100_000)
    return sock, mav


class Gcs:
    """A minimal ground station on a real UDP socket, with pymavlink's codec."""

    def __init__(self, key: bytes | None = None, system: int = 255) -> None:
        self.sock, self.mav = gcs_endpoint(system, key)

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", int(self.sock.getsockname()[1]))

    def send(self, msg: Any, to: tuple[str, int]) -> None:
        self.sock.sendto(msg.pack(self.mav), to)
        self.mav.seq = (self.mav.seq + 1) % 256

    def command(self, to: tuple[str, int], command: int, *params: float, target: int = 1,
                confirmation: int = 0) -> None:
        p = [*params, *[0.0] * (7 - len(params))]
        self.send(self.mav.command_long_encode(target, 1, command, confirmation, *p), to)

    async def collect(self, seconds: float, kinds: set[str] | None = None) -> list[Any]:
        loop = asyncio.get_running_loop()
        out: list[Any] = []
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), left)
            except TimeoutError:
                break
            for msg in self.mav.parse_buffer(data) or ():
                if kinds is None or msg.get_type() in kinds:
                    out.append(msg)
        return out

    def close(self) -> None:
        self.sock.close()


@contextlib.asynccontextmanager
async def fleet_and_gcs(key: bytes | None = None, **kw: Any) -> AsyncIterator[tuple[DroneFleetSim, Gcs]]:
    gcs = Gcs(key)
    try:
        async with DroneFleetSim([DOCK], gcs.addr, keys={DOCK.drone_id: key} if key else {}, **kw) as fleet:
            yield fleet, gcs
    finally:
        gcs.close()


async def test_the_sim_signs_by_default_with_a_fresh_key_per_drone() -> None:
    keyless = Gcs()
    try:
        async with DroneFleetSim([DOCK], keyless.addr) as fleet:
            key = fleet.keys[DOCK.drone_id]
            assert len(key) == 32 and key != bytes(32)
            drone = fleet.drone(DOCK.drone_id)
            heard = await keyless.collect(1.0)
            # What it sends is signed (MAVLink 2 incompat flag 0x01; a keyless codec does not check it)...
            assert heard and all(bytes(m.get_msgbuf())[2] & 0x01 for m in heard)
            keyless.command(drone.local_addr, M.MAV_CMD_DO_SET_MODE, M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, Mode.LOITER)
            await asyncio.sleep(0.5)
            assert drone.counters.refused == 1 and drone.counters.commands == 0  # ...and it hears signed only
            keyed = Gcs(key)
            try:
                keyed.command(drone.local_addr, M.MAV_CMD_DO_SET_MODE, M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
                              Mode.LOITER)
                await asyncio.sleep(0.5)
            finally:
                keyed.close()
            assert drone.counters.commands == 1 and fleet.copters[0].mode is Mode.LOITER
        another = DroneFleetSim([DOCK], keyless.addr)
        assert another.keys[DOCK.drone_id] != key  # fresh per fleet, never a built-in key
    finally:
        keyless.close()


async def test_signing_refuses_unsigned_and_wrongly_signed_commands() -> None:
    key = bytes(range(32))
    async with fleet_and_gcs(key) as (fleet, signed):
        drone = fleet.drone(DOCK.drone_id)
        to = drone.local_addr
        unsigned, forged = Gcs(), Gcs(b"\x01" * 32)
        try:
            for peer in (unsigned, forged):
                peer.command(to, M.MAV_CMD_DO_SET_MODE, M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, Mode.LOITER)
            await asyncio.sleep(0.5)
            assert drone.counters.refused == 2 and drone.counters.commands == 0
            assert fleet.copters[0].mode is Mode.STABILIZE
            signed.command(to, M.MAV_CMD_DO_SET_MODE, M.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, Mode.LOITER)
            acks = await signed.collect(1.5, {"COMMAND_ACK"})
        finally:
            unsigned.close()
            forged.close()
        assert [(a.command, a.result) for a in acks] == [(M.MAV_CMD_DO_SET_MODE, M.MAV_RESULT_ACCEPTED)]
        assert fleet.copters[0].mode is Mode.LOITER
        assert signed.mav.signing.goodsig_count > 0  # what the drone sends is signed with the key
        assert signed.mav.signing.badsig_count == 0


async def test_commands_targeting_duplicates_and_unsupported() -> None:
    async with fleet_and_gcs() as (fleet, gcs):
        drone = fleet.drone(DOCK.drone_id)
        to = drone.local_addr
        gcs.command(to, M.MAV_CMD_DO_SET_MODE, 1, Mode.GUIDED, target=9)  # another system: ignored
        gcs.command(to, 31000)  # MAV_CMD_USER_1: nothing simulated
        gcs.command(to, M.MAV_CMD_DO_SET_MODE, 1, Mode.GUIDED, target=0)  # broadcast
        gcs.command(to, M.MAV_CMD_COMPONENT_ARM_DISARM, 1)
        gcs.command(to, M.MAV_CMD_NAV_TAKEOFF, 0, 0, 0, 0, 0, 0, 10)
        gcs.command(to, M.MAV_CMD_NAV_TAKEOFF, 0, 0, 0, 0, 0, 0, 10, confirmation=1)  # a retry
        acks = await gcs.collect(1.5, {"COMMAND_ACK"})
        assert [(a.command, a.result) for a in acks] == [
            (31000, M.MAV_RESULT_UNSUPPORTED),
            (M.MAV_CMD_DO_SET_MODE, M.MAV_RESULT_ACCEPTED),
            (M.MAV_CMD_COMPONENT_ARM_DISARM, M.MAV_RESULT_ACCEPTED),
            (M.MAV_CMD_NAV_TAKEOFF, M.MAV_RESULT_ACCEPTED),
            (M.MAV_CMD_NAV_TAKEOFF, M.MAV_RESULT_ACCEPTED),  # same answer, not "already flying"
        ]
        assert all(a.target_system == 255 and a.target_component == 190 for a in acks)
        assert drone.counters.ignored == 1 and drone.counters.unsupported == 1
        gcs.command(to, M.MAV_CMD_NAV_TAKEOFF, 0, 0, 0, 0, 0, 0, 10)  # a new attempt, not a retry
        assert [a.result for a in await gcs.collect(1.0, {"COMMAND_ACK"})] == [M.MAV_RESULT_FAILED]


async def test_mission_upload_errors_and_re_requests() -> None:
    async with fleet_and_gcs() as (fleet, gcs):
        to = fleet.drone(DOCK.drone_id).local_addr
        gcs.send(gcs.mav.mission_count_encode(1, 1, 1000), to)
        acks = await gcs.collect(0.5, {"MISSION_ACK"})
        assert [a.type for a in acks] == [M.MAV_MISSION_NO_SPACE]

        gcs.send(gcs.mav.mission_count_encode(1, 1, 2), to)
        requests = await gcs.collect(1.6, {"MISSION_REQUEST_INT"})
        assert [r.seq for r in requests] == [0, 0]  # asked again after a second of silence
        gcs.send(gcs.mav.mission_item_int_encode(1, 1, 1, 6, 16, 0, 1, 0, 0, 0, 0, 0, 0, 20), to)  # skips seq 0
        assert [a.type for a in await gcs.collect(0.3, {"MISSION_ACK"})] == [M.MAV_MISSION_INVALID_SEQUENCE]
        gcs.send(gcs.mav.mission_item_int_encode(1, 1, 0, 6, 16, 0, 1, 0, 0, 0, 0, 0, 0, 0), to)
        gcs.send(gcs.mav.mission_item_int_encode(1, 1, 1, 6, M.MAV_CMD_DO_SET_SERVO, 0, 1, 0, 0, 0, 0, 0, 0, 0), to)
        acks = await gcs.collect(0.5, {"MISSION_ACK"})
        assert [a.type for a in acks] == [M.MAV_MISSION_UNSUPPORTED]
        assert fleet.copters[0].mission == []

        lat, lon = offset(DOCK.lat, DOCK.lon, 100.0, 0.0)
        gcs.send(gcs.mav.mission_count_encode(1, 1, 2), to)
        await gcs.collect(0.2)
        gcs.send(gcs.mav.mission_item_encode(1, 1, 0, 3, 16, 0, 1, 0, 0, 0, 0, DOCK.lat, DOCK.lon, 0), to)
        await gcs.collect(0.2)
        gcs.send(gcs.mav.mission_item_int_encode(1, 1, 1, 6, 16, 0, 1, 0, 0, 0, 0, round(lat * 1e7),
                                                 round(lon * 1e7), 30), to)
        assert [a.type for a in await gcs.collect(0.5, {"MISSION_ACK"})] == [M.MAV_MISSION_ACCEPTED]
        assert fleet.copters[0].mission[1].lat == pytest.approx(lat, abs=1e-7)

        gcs.send(gcs.mav.mission_request_list_encode(1, 1), to)  # and download it again
        assert [c.count for c in await gcs.collect(0.5, {"MISSION_COUNT"})] == [2]
        gcs.send(gcs.mav.mission_request_int_encode(1, 1, 1), to)
        (item,) = await gcs.collect(0.5, {"MISSION_ITEM_INT"})
        assert (item.seq, item.x, item.z) == (1, round(lat * 1e7), 30)


async def test_stream_rates_follow_set_message_interval_and_the_link_can_be_cut() -> None:
    async with fleet_and_gcs() as (fleet, gcs):
        to = fleet.drone(DOCK.drone_id).local_addr
        gcs.command(to, M.MAV_CMD_SET_MESSAGE_INTERVAL, M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT, 50_000)  # 20 Hz
        gcs.command(to, M.MAV_CMD_REQUEST_MESSAGE, M.MAVLINK_MSG_ID_HOME_POSITION)
        msgs = await gcs.collect(2.0)
        kinds = [m.get_type() for m in msgs]
        assert 30 <= kinds.count("GLOBAL_POSITION_INT") <= 44
        assert 1 <= kinds.count("HEARTBEAT") <= 3
        assert set(kinds) == {"GLOBAL_POSITION_INT", "HEARTBEAT", "HOME_POSITION", "COMMAND_ACK"}  # nothing unasked
        (home,) = [m for m in msgs if m.get_type() == "HOME_POSITION"]
        assert (home.latitude, home.altitude) == (round(DOCK.lat * 1e7), 40_000)
        beat = next(m for m in msgs if m.get_type() == "HEARTBEAT")
        assert (beat.type, beat.autopilot, beat.custom_mode) == (M.MAV_TYPE_QUADROTOR, M.MAV_AUTOPILOT_ARDUPILOTMEGA, 0)

        fleet.cut_link(DOCK.drone_id, 1.0)
        gcs.command(to, M.MAV_CMD_COMPONENT_ARM_DISARM, 1)
        assert await gcs.collect(0.8) == []
        assert not fleet.copters[0].armed  # the command was lost with the link
        # The link is back 0.2 s into this window; heartbeats come at 1 Hz, so wait a whole period after that.
        assert len(await gcs.collect(1.6, {"HEARTBEAT"})) >= 1
