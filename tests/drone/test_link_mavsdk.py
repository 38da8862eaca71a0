"""MavlinkLink against MAVSDK (PyPI wheel, C++ core) acting as the autopilot.

MAVSDK's server plugins play the vehicle: TelemetryServer publishes, MissionRawServer
takes missions, ActionServer answers arm/takeoff. What MAVSDK 4.1 does not do:
it never ACKs a command no plugin handles (no MAV_RESULT_UNSUPPORTED), its modes
are PX4's (so ArduCopter set_mode cannot be checked here), and its heartbeat says
MAV_AUTOPILOT_GENERIC, so ``state.mode`` stays None.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

mavsdk = pytest.importorskip("mavsdk")
from mavsdk.plugins.action_server import ActionServer  # noqa: E402
from mavsdk.plugins.mission_raw_server import MissionRawServer  # noqa: E402
from mavsdk.plugins.telemetry_server import (  # noqa: E402
    Battery,
    Heading,
    LandedState,
    Position,
    TelemetryServer,
    VelocityNed,
    VtolState,
)

from drone import CommandTimeout, MavlinkLink, patrol_mission  # noqa: E402
from drone.codec import mavlink  # noqa: E402
from drone.mission import wire_fields  # noqa: E402

pytestmark = pytest.mark.timeout(40)
# MAVSDK prints its log to stdout; keep test output readable (True = handled).
mavsdk.log_subscribe(lambda level, message, file, line: level < mavsdk.LogLevel.WARN)


@dataclass
class Autopilot:
    sdk: Any
    telemetry: Any
    action: Any
    mission: Any
    missions: list[Any]
    arms: list[Any]


@contextmanager
def mavsdk_autopilot(system_id: int, url: str) -> Iterator[Autopilot]:
    sdk = mavsdk.Mavsdk(mavsdk.Configuration.create_manual(system_id, 1, True))
    try:
        assert sdk.add_any_connection(url) == mavsdk.ConnectionResult.SUCCESS
        component = sdk.server_component()
        pilot = Autopilot(sdk, TelemetryServer(component), ActionServer(component), MissionRawServer(component),
                          [], [])
        pilot.action.set_armable(True, True)
        pilot.action.set_disarmable(True, True)
        pilot.action.set_allow_takeoff(True)
        # Callbacks run on MAVSDK's thread; list.append is atomic enough for the test to poll.
        pilot.mission.subscribe_incoming_mission(lambda result, plan, _ud: pilot.missions.append((result, plan)))
        pilot.action.subscribe_arm_disarm(lambda result, arm, _ud: pilot.arms.append(arm))
        yield pilot
    finally:
        sdk.destroy()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _eventually(check: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_heartbeat_and_telemetry_reach_vehicle_state() -> None:
    async with MavlinkLink("udpin:127.0.0.1:0") as link:
        with mavsdk_autopilot(7, f"udpout://127.0.0.1:{link.local_address[1]}") as pilot:
            vehicle = await link.wait_vehicle(7, 5.0)
            assert (vehicle.component_id, vehicle.state.autopilot, vehicle.state.link_ok) == (1, 0, True)
            pilot.telemetry.publish_position(Position(52.5200, 13.4050, 120.0, 35.0), VelocityNed(3.0, 4.0, -1.0),
                                             Heading(270.0))
            # MAVSDK's remaining_percent is a 0..1 fraction despite its name; it truncates to 63 %.
            pilot.telemetry.publish_battery(Battery(15.9, 0.64))
            pilot.telemetry.publish_extended_sys_state(VtolState.UNDEFINED, LandedState.IN_AIR)
            state = await vehicle.wait_for("position", lambda s: s.lat is not None, 3.0)
            assert (state.lat, state.lon) == pytest.approx((52.52, 13.405))
            assert (state.alt_msl_m, state.relative_alt_m, state.heading_deg) == pytest.approx((120.0, 35.0, 270.0))
            assert state.ground_speed_mps == pytest.approx(5.0) and state.vz == pytest.approx(-1.0)
            await vehicle.wait_for("battery", lambda s: s.battery_pct is not None, 3.0)
            assert state.battery_pct is not None and state.position_ts_ms is not None
            assert 63.0 <= state.battery_pct <= 64.0 and state.voltage_v == pytest.approx(15.9, abs=0.01)
            await vehicle.wait_for("landed", lambda s: s.landed_state == "in_air", 3.0)
            assert abs(state.position_ts_ms - time.time() * 1000) < 5000  # hub receive time (no SYSTEM_TIME)


async def test_mission_upload_is_received_item_by_item() -> None:
    items = patrol_mission([(52.52, 13.40), (52.53, 13.41), (52.525, 13.42)], 45.0, home=(52.51, 13.39))
    async with MavlinkLink("udpin:127.0.0.1:0") as link:
        with mavsdk_autopilot(8, f"udpout://127.0.0.1:{link.local_address[1]}") as pilot:
            vehicle = await link.wait_vehicle(8, 5.0)
            await vehicle.upload_mission(items)
            await _eventually(lambda: pilot.missions != [], 3.0)
            result, plan = pilot.missions[0]
            assert result.name == "SUCCESS"
            got = [(i.seq, i.frame, i.command, i.x, i.y, i.z, i.param1, i.autocontinue) for i in plan.mission_items]
            want = [(f["seq"], f["frame"], f["command"], f["x"], f["y"], f["z"], f["param1"], f["autocontinue"])
                    for f in (wire_fields(item, seq) for seq, item in enumerate(items))]
            assert got == want and len(got) == 6


async def test_arm_and_takeoff_are_acked_and_shown() -> None:
    async with MavlinkLink("udpin:127.0.0.1:0") as link:
        with mavsdk_autopilot(9, f"udpout://127.0.0.1:{link.local_address[1]}") as pilot:
            vehicle = await link.wait_vehicle(9, 5.0)
            await vehicle.arm()  # returns once ACCEPTED *and* the heartbeat shows armed
            assert vehicle.state.armed and pilot.arms[0].arm and not pilot.arms[0].force
            result = await vehicle.command_long(mavlink.MAV_CMD_NAV_TAKEOFF, (0, 0, 0, 0, 0, 0, 20.0))
            assert result == mavlink.MAV_RESULT_ACCEPTED
            await vehicle.set_message_interval("GLOBAL_POSITION_INT", 5.0)  # TelemetryServer ACKs it


async def test_unsupported_command_times_out_with_retries() -> None:
    async with MavlinkLink("udpin:127.0.0.1:0") as link:
        with mavsdk_autopilot(10, f"udpout://127.0.0.1:{link.local_address[1]}"):
            vehicle = await link.wait_vehicle(10, 5.0)
            sent_before = link.stats["sent"]
            started = time.monotonic()
            with pytest.raises(CommandTimeout, match="31010"):
                await vehicle.command_long(31010, (1, 2, 3), timeout_s=0.3, retries=2)
            assert 0.85 < time.monotonic() - started < 2.0
            assert link.stats["sent"] - sent_before >= 3


async def test_udpout_link_to_a_listening_mavsdk() -> None:
    port = _free_udp_port()
    with mavsdk_autopilot(11, f"udpin://127.0.0.1:{port}") as pilot:
        # MAVSDK learns our address from our 1 Hz GCS heartbeat, then talks back.
        async with MavlinkLink(f"udpout:127.0.0.1:{port}") as link:
            vehicle = await link.wait_vehicle(11, 5.0)
            await vehicle.arm()
            assert pilot.arms and vehicle.state.armed
            assert link.stats["bad_crc"] == link.stats["parse_errors"] == 0
