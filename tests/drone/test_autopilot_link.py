"""Setting up a stock ArduCopter like a ground station, against the FakeAutopilot on real loopback sockets:
refusals with their STATUSTEXT, parameters, home read-back, the stream keeper, and signing without a key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from drone import CommandRejected, DroneError, MavlinkLink, SigningError, SigningKey, Vehicle
from drone.codec import mavlink
from drone.errors import ParamError
from drone.signing import Admission
from drone.streams import WANTED, StreamKeeper
from tests.drone.peer import FakeAutopilot

pytestmark = pytest.mark.timeout(60)
M = mavlink
KEY = SigningKey(bytes.fromhex("3c" * 32), link_id=2)


async def _eventually(check: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def _copter(system_id: int, **link_options: Any) -> AsyncIterator[tuple[MavlinkLink, FakeAutopilot, Vehicle]]:
    async with MavlinkLink("udpin:127.0.0.1:0", **link_options) as link, \
            FakeAutopilot(system_id, link.local_address) as fake:
        yield link, fake, await link.wait_vehicle(system_id, 3.0)


# ---------------------------------------------------------------------------- refusals with reasons
async def test_arm_refusal_carries_the_autopilots_text() -> None:
    async with _copter(71) as (_link, fake, vehicle):
        fake.say(M.MAV_SEVERITY_CRITICAL, "PreArm: old news")  # before the command: not its reason
        await vehicle.wait_for("statustext", lambda s: s.statustext == "PreArm: old news", 2.0)

        def refuse_arming(msg: Any) -> list[int]:
            fake.say(M.MAV_SEVERITY_CRITICAL, "Arm: Gyros inconsistent")
            loop = asyncio.get_running_loop()  # chatter right after the ACK, inside the grace: kept, not chosen
            loop.call_later(0.05, fake.say, M.MAV_SEVERITY_INFO, "EKF3 IMU0 initialised")
            return [M.MAV_RESULT_FAILED]
        fake.on_command = refuse_arming
        with pytest.raises(CommandRejected) as info:
            await vehicle.arm()
        assert str(info.value) == "command 400 rejected: MAV_RESULT_FAILED: Arm: Gyros inconsistent"
        assert info.value.reason == "Arm: Gyros inconsistent"
        assert info.value.texts == ["Arm: Gyros inconsistent", "EKF3 IMU0 initialised"]
        assert [t.text for t in vehicle.state.texts][-2:] == info.value.texts


async def test_every_command_carries_texts_and_a_silent_refusal_has_no_reason() -> None:
    async with _copter(72) as (_link, fake, vehicle):
        def refuse(msg: Any) -> list[int]:
            if msg.command == M.MAV_CMD_DO_SET_MODE:
                fake.say(M.MAV_SEVERITY_INFO, "Mode change to GUIDED failed: requires position")
                return [M.MAV_RESULT_FAILED]
            return [M.MAV_RESULT_DENIED]
        fake.on_command = refuse
        with pytest.raises(CommandRejected) as info:
            await vehicle.set_mode("GUIDED")
        assert info.value.reason == "Mode change to GUIDED failed: requires position"  # INFO, but the only one
        with pytest.raises(CommandRejected) as silent:
            await vehicle.takeoff(30.0)
        assert silent.value.texts == [] and silent.value.reason is None
        assert str(silent.value) == "command 22 rejected: MAV_RESULT_DENIED"


# ---------------------------------------------------------------------------- parameters
async def test_read_and_set_parameters() -> None:
    async with _copter(73) as (_link, fake, vehicle):
        assert await vehicle.read_param("FS_GCS_ENABLE") == 0.0
        assert vehicle.state.params["FS_GCS_ENABLE"] == 0.0 and vehicle.state.param_types["FS_GCS_ENABLE"] == 2
        assert await vehicle.set_param("FS_GCS_ENABLE", 1) == 1.0
        assert fake.params["FS_GCS_ENABLE"] == (1.0, 2) and fake.of_type("PARAM_SET")[-1].param_type == 2
        assert vehicle.state.params["FS_GCS_ENABLE"] == 1.0
        request = fake.of_type("PARAM_REQUEST_READ")[0]
        assert (request.param_index, request.target_system) == (-1, 73)
        # Never read: REAL32 unless told; the echo is compared as float32.
        assert await vehicle.set_param("MAV_GCS_SYSID", 250, param_type=4) == 250.0
        fake.params["ANGLE_MAX"] = (4500.0, 9)
        assert await vehicle.set_param("ANGLE_MAX", 0.1) == pytest.approx(0.1)
        assert fake.of_type("PARAM_SET")[-1].param_type == 9


async def test_refused_and_unknown_parameters() -> None:
    async with _copter(74) as (_link, fake, vehicle):
        fake.read_only.add("MAV_GCS_SYSID")
        with pytest.raises(ParamError) as refused:
            await vehicle.set_param("MAV_GCS_SYSID", 250)
        assert refused.value.name == "MAV_GCS_SYSID"
        assert str(refused.value) == ("vehicle 74 refused MAV_GCS_SYSID = 250: it still holds 255: "
                                      "Param write denied (MAV_GCS_SYSID)")
        started = time.monotonic()
        with pytest.raises(ParamError, match="no value for parameter SYSID_MYGCS after 2 requests") as unknown:
            await vehicle.read_param("SYSID_MYGCS", timeout_s=0.2, retries=1)
        assert unknown.value.name == "SYSID_MYGCS" and time.monotonic() - started >= 0.4
        assert len([m for m in fake.of_type("PARAM_REQUEST_READ") if m.param_id == "SYSID_MYGCS"]) == 2
        with pytest.raises(ParamError, match="SYSID_MYGCS"):
            await vehicle.set_param("SYSID_MYGCS", 1, timeout_s=0.1, retries=0)
        with pytest.raises(ValueError):
            await vehicle.read_param("A_NAME_LONGER_THAN_16")


# ---------------------------------------------------------------------------- home
async def test_set_home_is_read_back() -> None:
    async with _copter(75) as (_link, fake, vehicle):
        await vehicle.set_home(34.2610, 117.1859, 52.5)
        assert fake.home == pytest.approx((34.2610, 117.1859, 52.5))
        cmd = fake.of_type("COMMAND_INT")[0]
        assert (cmd.command, cmd.frame, cmd.param1, cmd.x, cmd.y, cmd.z) == (
            M.MAV_CMD_DO_SET_HOME, M.MAV_FRAME_GLOBAL, 0.0, 342610000, 1171859000, 52.5)
        request = fake.of_type("COMMAND_LONG")[-1]
        assert (request.command, request.param1) == (M.MAV_CMD_REQUEST_MESSAGE, M.MAVLINK_MSG_ID_HOME_POSITION)
        assert vehicle.state.home == pytest.approx((34.2610, 117.1859, 52.5))


async def test_set_home_that_does_not_take_is_an_error() -> None:
    async with _copter(76) as (_link, fake, vehicle):
        default = fake.on_command
        # ACCEPTED, but the home stays where it was (52.52, 13.405): the read-back says so.
        fake.on_command = lambda msg: [0] if msg.command == M.MAV_CMD_DO_SET_HOME else default(msg)
        with pytest.raises(DroneError, match=r"home reads back 1\d\d\.\d m from where it was set"):
            await vehicle.set_home(52.521, 13.405, 45.0, timeout_s=0.5)


# ---------------------------------------------------------------------------- stream keeper
async def test_stock_autopilot_streams_only_after_the_keepers_requests() -> None:
    async with _copter(77) as (link, fake, vehicle):
        beats = len([m for m in fake.received if m.get_type() == "HEARTBEAT"])
        await vehicle.wait_for("heartbeat", lambda s: s.last_heartbeat is not None, 1.0)
        await _eventually(lambda: len(fake.of_type("HEARTBEAT")) >= beats + 2)  # two rounds of ours: nothing asked
        assert vehicle.state.lat is None and set(vehicle.state.last_seen) == {"HEARTBEAT"}
        keeper = StreamKeeper(vehicle, WANTED)
        keeper.start()
        try:
            await vehicle.wait_for("position", lambda s: s.lat is not None, 3.0)
            await _eventually(lambda: keeper.problem() is None, 8.0)
            assert keeper.status() == dict.fromkeys(WANTED, "ok")
            asked = {int(m.param1): int(m.param2) for m in fake.of_type("COMMAND_LONG")
                     if m.command == M.MAV_CMD_SET_MESSAGE_INTERVAL}
            assert asked[M.MAVLINK_MSG_ID_GLOBAL_POSITION_INT] == 250_000
            assert asked[M.MAVLINK_MSG_ID_HOME_POSITION] == 5_000_000
            assert M.MAVLINK_MSG_ID_STATUSTEXT not in asked and len(asked) == len(WANTED)
            assert keeper.requests == dict.fromkeys(WANTED, 1)
            assert vehicle.state.home is not None and vehicle.state.prearm_ok is True
            assert vehicle.state.landed_state == "on_ground"
        finally:
            await keeper.stop()
        assert keeper.exited.is_set() and link.stats["listener_dropped"] == 0


async def test_a_refused_a_silent_and_an_unanswered_message_are_named() -> None:
    async with _copter(78) as (_link, fake, vehicle):
        fake.refuse_streams[M.MAVLINK_MSG_ID_EXTENDED_SYS_STATE] = (M.MAV_RESULT_DENIED, "Unknown message")
        default = fake.on_command
        ignored = M.MAVLINK_MSG_ID_ATTITUDE
        fake.on_command = lambda msg: None if msg.param1 == ignored else default(msg)
        wanted = {"GLOBAL_POSITION_INT": 4.0, "EXTENDED_SYS_STATE": 1.0, "VFR_HUD": 2.0, "ATTITUDE": 2.0}
        keeper = StreamKeeper(vehicle, wanted, verify_s=1.0)
        keeper.start()
        try:
            await _eventually(lambda: keeper.status()["ATTITUDE"] == "no answer", 6.0)
            assert keeper.status() == {
                "GLOBAL_POSITION_INT": "ok",
                "EXTENDED_SYS_STATE": "refused: MAV_RESULT_DENIED: Unknown message",
                "VFR_HUD": "missing (accepted, none arrived)",  # the autopilot has none to send
                "ATTITUDE": "no answer",
            }
            assert keeper.problem() == ("no landed state: EXTENDED_SYS_STATE at 1 Hz refused by the autopilot "
                                        "(MAV_RESULT_DENIED: Unknown message)")
        finally:
            await keeper.stop()


async def test_keeper_stops_cleanly_at_any_moment() -> None:
    async with _copter(85) as (_link, fake, vehicle):
        fake.on_command = lambda msg: None  # requests stay in flight: stop() must abandon them
        for i in range(15):
            keeper = StreamKeeper(vehicle, WANTED)
            keeper.start()
            await asyncio.sleep(i * 0.017)  # a different moment of the keeper's round each time
            await asyncio.wait_for(keeper.stop(), 2.0)
            assert keeper.exited.is_set() and vehicle.subscriptions == 0
            await keeper.stop()  # idempotent


async def _keeper_recovers_a_reboot(vehicle: Vehicle, fake: FakeAutopilot, pause_s: float) -> StreamKeeper:
    keeper = StreamKeeper(vehicle, WANTED)
    keeper.start()
    await _eventually(lambda: keeper.problem() is None, 8.0)
    assert vehicle.state.reboots == 0 and keeper.requests["GLOBAL_POSITION_INT"] == 1
    fake.heartbeats = False
    await asyncio.sleep(pause_s)  # the autopilot is restarting (set-up, not an assertion)
    fake.reboot()  # boot clock from 0, every rate forgotten
    fake.heartbeats = True
    rebooted = time.monotonic()
    await vehicle.wait_for("reboot", lambda s: s.reboots == 1, 8.0)
    await vehicle.wait_for("position", lambda s: s.lat is not None, 5.0)
    await _eventually(lambda: keeper.problem() is None, 8.0)
    assert all(seen > rebooted for seen in vehicle.state.last_seen.values())  # all from the new boot
    assert keeper.requests["GLOBAL_POSITION_INT"] >= 2
    return keeper


async def test_reboot_without_a_heartbeat_gap_is_recovered_from_overdue_messages() -> None:
    async with _copter(79) as (_link, fake, vehicle):
        keeper = await _keeper_recovers_a_reboot(vehicle, fake, 0.0)
        assert vehicle.state.heartbeat_gap_s is None
        await keeper.stop()


async def test_reboot_with_a_heartbeat_gap_is_recovered() -> None:
    async with _copter(80, heartbeat_timeout_s=5.0) as (_link, fake, vehicle):  # the gap, not a link loss
        keeper = await _keeper_recovers_a_reboot(vehicle, fake, 2.8)
        assert vehicle.state.heartbeat_gap_s is not None and vehicle.state.heartbeat_gap_s > 2.5
        await keeper.stop()


# ---------------------------------------------------------------------------- signed, no key
async def test_signing_drone_without_a_hub_key_is_marked_and_refused_at_once() -> None:
    async with MavlinkLink("udpin:127.0.0.1:0") as link, FakeAutopilot(81, link.local_address, key=KEY) as fake:
        changes: list[str] = []
        link.vehicle(81).on_change(lambda v, kind: changes.append(kind))
        vehicle = await link.wait_vehicle(81, 3.0)  # heard, so the map shows it
        assert link.signed_unkeyed == {81} and vehicle.state.signed_unkeyed and changes[0] == "signing"
        started = time.monotonic()
        with pytest.raises(SigningError, match="the hub has no key for it: it would ignore this command"):
            await vehicle.arm()
        with pytest.raises(SigningError):
            await vehicle.read_param("FS_GCS_ENABLE")
        assert time.monotonic() - started < 0.5  # at once, not after the command's retries
        keeper = StreamKeeper(vehicle, {"GLOBAL_POSITION_INT": 4.0})
        keeper.start()
        try:
            await _eventually(lambda: keeper.status()["GLOBAL_POSITION_INT"].startswith("not sent: "))
            assert keeper.problem() == ("no position: GLOBAL_POSITION_INT could not be requested: drone signs its "
                                        "MAVLink but the hub has no key for it: it would ignore this command")
        finally:
            await keeper.stop()
        assert fake.of_type("COMMAND_LONG") == [] and fake.of_type("PARAM_REQUEST_READ") == []


async def test_fleet_link_refuses_or_hears_a_signing_drone_without_key() -> None:
    admission = Admission(fleet=frozenset({82, 83}), unsigned=frozenset({83}))
    async with (
        MavlinkLink("udpin:127.0.0.1:0", admission=admission) as link,
        FakeAutopilot(82, link.local_address, key=KEY),
        FakeAutopilot(83, link.local_address, key=KEY),
        FakeAutopilot(84, link.local_address, key=KEY),  # outside the fleet: a stranger, not ours to report
    ):
        opted_in = await link.wait_vehicle(83, 3.0)
        await _eventually(lambda: link.stats["signed_no_key"] >= 3)
        assert link.signed_unkeyed == {82, 83} and 82 not in link.vehicles and opted_in.state.signed_unkeyed
        assert link.refused[82] == {"signed_no_key": link.stats["signed_no_key"]}
        assert 83 not in link.refused and link.refused[84] == {"outside_fleet": link.stats["outside_fleet"]}
