"""MavlinkLink against a scripted pymavlink autopilot on real loopback sockets.

Covers what MAVSDK cannot be made to do on demand: going silent, signing, several
system ids on one port, IN_PROGRESS, dropped commands, legacy mission requests.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from drone import (
    CommandRejected,
    CommandTimeout,
    LinkLost,
    MavlinkLink,
    MissionError,
    MissionItem,
    SigningKey,
    SigningKeys,
    Vehicle,
    WaitTimeout,
)
from drone.codec import encode, mavlink, new_codec
from drone.signing import Admission, signature_valid
from tests.drone.peer import FakeAutopilot

pytestmark = pytest.mark.timeout(30)
KEY = SigningKey(bytes.fromhex("5a" * 32), link_id=1)


async def _eventually(check: Any, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_link_loss_detected_within_5s_and_restored() -> None:
    events: list[tuple[str, bool]] = []
    async with (  # default heartbeat_timeout_s=3.0
        MavlinkLink("udpin:127.0.0.1:0") as link,
        FakeAutopilot(21, link.local_address) as fake,
    ):
        vehicle = await link.wait_vehicle(21, 3.0)
        vehicle.on_change(lambda v, kind: events.append((kind, v.state.link_ok)) if kind == "link" else None)
        fake.heartbeats = False
        silent_since = time.monotonic()
        await vehicle.wait_for("link", lambda s: not s.link_ok, 5.0)
        assert vehicle.state.lost_at is not None
        detection = vehicle.state.lost_at - silent_since
        assert 2.5 < detection < 4.0, detection  # 3 s timeout, checked every 0.25 s
        fake.heartbeats = True
        await vehicle.wait_for("link", lambda s: s.link_ok, 2.0)
        assert vehicle.state.restored_at is not None and vehicle.state.restored_at > vehicle.state.lost_at
    assert events == [("link", False), ("link", True)]


async def test_gcs_heartbeat_reaches_the_vehicle_at_1hz() -> None:
    async with (
        MavlinkLink("udpin:127.0.0.1:0", system_id=245, component_id=191) as link,
        FakeAutopilot(22, link.local_address) as fake,
    ):
        await link.wait_vehicle(22, 3.0)
        await _eventually(lambda: len(fake.of_type("HEARTBEAT")) >= 2, 3.0)
        hb = fake.of_type("HEARTBEAT")[0]
        assert (hb.type, hb.autopilot) == (mavlink.MAV_TYPE_GCS, mavlink.MAV_AUTOPILOT_INVALID)
        assert (hb.get_srcSystem(), hb.get_srcComponent()) == (245, 191)


async def test_signed_vehicle_drops_unsigned_and_forged_frames() -> None:
    keys = SigningKeys({23: KEY})
    async with (
        MavlinkLink("udpin:127.0.0.1:0", keys=keys) as link,
        FakeAutopilot(23, link.local_address, key=KEY) as fake,
    ):
        vehicle = await link.wait_vehicle(23, 3.0)
        assert link.stats["bad_signature"] == 0
        seen: list[Any] = []
        link.subscribe(lambda v, m: seen.append(m) if m.get_type() == "COMMAND_ACK" else None)
        ack = mavlink.MAVLink_command_ack_message(400, 0, 0, 0, 250, 190)
        # Unsigned ACK from the same system id: dropped and counted.
        fake.send_raw(encode(new_codec(23, 1), ack))
        # Signed with the wrong key: dropped and counted.
        wrong = new_codec(23, 1)
        wrong.signing.secret_key, wrong.signing.sign_outgoing = bytes(32), True
        # Same stream (link id) and a far-future timestamp: if it were recorded before the
        # signature check, every genuine frame after it would look like a replay.
        wrong.signing.link_id = KEY.link_id
        wrong.signing.timestamp = fake.codec.signing.timestamp + 10**9
        fake.send_raw(encode(wrong, ack))
        await _eventually(lambda: link.stats["bad_signature"] == 2)
        assert seen == []
        # A correct signature is accepted; replaying that very frame is not.
        good = encode(fake.codec, ack)
        fake.send_raw(good)
        await _eventually(lambda: len(seen) == 1)
        fake.send_raw(good)
        await _eventually(lambda: link.stats["bad_signature"] == 3)
        assert len(seen) == 1 and seen[0].get_signed()

        # Outgoing: the command and our heartbeats arrive signed with the vehicle's key.
        assert await vehicle.command_long(mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH) == 0
        cmd = fake.of_type("COMMAND_LONG")[-1]
        assert cmd.get_signed() and cmd.get_link_id() == KEY.link_id
        frame = bytes(cmd.get_msgbuf())
        assert signature_valid(KEY.secret, frame) and not signature_valid(bytes(32), frame)
        await _eventually(lambda: any(m.get_signed() for m in fake.of_type("HEARTBEAT")))
        assert fake.rejected_frames == 0  # nothing unsigned was sent to it


async def test_unkeyed_vehicle_is_unsigned_both_ways_next_to_a_keyed_one() -> None:
    async with (
        MavlinkLink("udpin:127.0.0.1:0", keys=SigningKeys({24: KEY})) as link,
        FakeAutopilot(25, link.local_address) as plain,
    ):
        vehicle = await link.wait_vehicle(25, 3.0)
        await vehicle.command_long(mavlink.MAV_CMD_NAV_LAND)
        assert not plain.of_type("COMMAND_LONG")[0].get_signed()
        assert link.stats["bad_signature"] == 0 and 24 not in link.vehicles


async def test_a_fleet_link_hears_its_fleet_only() -> None:
    # 61 signs (keyed), 62 is let in unsigned, 63 is in the fleet without key or opt-in, 64 is outside the fleet.
    admission = Admission(fleet=frozenset({61, 62, 63}), unsigned=frozenset({62}))
    appeared: list[int] = []
    async with (
        MavlinkLink("udpin:127.0.0.1:0", keys=SigningKeys({61: KEY}), admission=admission,
                    on_vehicle=lambda v: appeared.append(v.system_id)) as link,
        FakeAutopilot(61, link.local_address, key=KEY) as signed,
        FakeAutopilot(62, link.local_address) as opted_in,
        FakeAutopilot(63, link.local_address) as no_key,
        FakeAutopilot(64, link.local_address) as stranger,
        FakeAutopilot(65, link.local_address, key=SigningKey(bytes(32))) as signed_stranger,
    ):
        await link.wait_vehicle(61, 3.0)
        await link.wait_vehicle(62, 3.0)
        await _eventually(lambda: link.stats["outside_fleet"] >= 10 and link.stats["refused_unsigned"] >= 5)
        await asyncio.sleep(2.2)  # two rounds of our 1 Hz heartbeat
        assert sorted(appeared) == [61, 62] and sorted(link.vehicles) == [61, 62]
        assert signed.of_type("HEARTBEAT") and opted_in.of_type("HEARTBEAT")
        for ignored in (no_key, stranger, signed_stranger):  # no state, no heartbeat, nothing at all
            assert ignored.received == [], ignored.system_id
        assert set(link.refused) == {63, 64, 65}
        assert link.refused[63] == {"refused_unsigned": link.stats["refused_unsigned"]}
        assert link.refused[64].keys() == link.refused[65].keys() == {"outside_fleet"}
        assert link.stats["bad_signature"] == 0 and signed.rejected_frames == 0
        # A keyed fleet drone stays keyed: an unsigned frame with its id is refused, not let in.
        fake_61 = encode(new_codec(61, 1), mavlink.MAVLink_command_ack_message(400, 0, 0, 0, 250, 190))
        stranger.send_raw(fake_61)
        await _eventually(lambda: link.refused.get(61) == {"bad_signature": 1})


async def test_tcpin_fleet_link_ignores_a_stranger() -> None:
    async with MavlinkLink("tcpin:127.0.0.1:0", admission=Admission(fleet=frozenset({7}))) as server:
        host, port = server.local_address
        # The stranger is a whole link of its own (system 51) that would answer our heartbeat if it got one.
        async with MavlinkLink(f"tcp:{host}:{port}", system_id=51, component_id=1) as stranger:
            await _eventually(lambda: server.stats["outside_fleet"] >= 2, 5.0)
            await asyncio.sleep(1.5)
            assert server.vehicles == {} and 250 not in stranger.vehicles
            assert stranger.stats["received"] == 0


async def test_several_systems_on_one_udpin_port() -> None:
    appeared: list[int] = []
    async with (
        MavlinkLink("udpin:127.0.0.1:0", on_vehicle=lambda v: appeared.append(v.system_id)) as link,
        FakeAutopilot(31, link.local_address) as a,
        FakeAutopilot(32, link.local_address) as b,
    ):
        va, vb = await link.wait_vehicle(31, 3.0), await link.wait_vehicle(32, 3.0)
        assert va.peer == a.local_address and vb.peer == b.local_address
        await va.command_long(mavlink.MAV_CMD_NAV_LAND)
        await vb.command_long(mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH)
        assert [m.command for m in a.of_type("COMMAND_LONG")] == [mavlink.MAV_CMD_NAV_LAND]
        assert [m.command for m in b.of_type("COMMAND_LONG")] == [mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH]
        assert a.of_type("COMMAND_LONG")[0].target_system == 31
        await _eventually(lambda: a.of_type("HEARTBEAT") != [] and b.of_type("HEARTBEAT") != [])
        await asyncio.sleep(0.3)
    assert sorted(appeared) == [31, 32] and len(appeared) == 2  # on_vehicle once each


async def test_in_progress_then_accepted_is_not_resent() -> None:
    async with MavlinkLink("udpin:127.0.0.1:0") as link, FakeAutopilot(41, link.local_address) as fake:
        vehicle = await link.wait_vehicle(41, 3.0)

        def slow(msg: Any) -> list[int]:
            async def finish() -> None:
                await asyncio.sleep(0.8)  # longer than timeout_s: only IN_PROGRESS keeps us waiting
                fake.send(mavlink.MAVLink_command_ack_message(msg.command, 0, 100, 0, 250, 190))
            asyncio.get_running_loop().create_task(finish())
            return [5]
        fake.on_command = slow
        started = time.monotonic()
        assert await vehicle.command_long(241, (1,), timeout_s=0.3, retries=3) == 0
        assert time.monotonic() - started >= 0.75
        assert len(fake.of_type("COMMAND_LONG")) == 1


async def test_retry_bumps_confirmation_after_a_dropped_command() -> None:
    async with MavlinkLink("udpin:127.0.0.1:0") as link, FakeAutopilot(42, link.local_address) as fake:
        vehicle = await link.wait_vehicle(42, 3.0)
        fake.on_command = lambda msg: None if msg.confirmation == 0 else [0]  # the first one is "lost"
        assert await vehicle.command_long(mavlink.MAV_CMD_NAV_LAND, timeout_s=0.2) == 0
        assert [m.confirmation for m in fake.of_type("COMMAND_LONG")] == [0, 1]

        fake.on_command = lambda msg: None  # never answers
        with pytest.raises(CommandTimeout):
            await vehicle.command_long(mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH, timeout_s=0.1, retries=2)
        rtl = [m for m in fake.of_type("COMMAND_LONG") if m.command == mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH]
        assert [m.confirmation for m in rtl] == [0, 1, 2]

        fake.on_command = lambda msg: [2]  # DENIED
        with pytest.raises(CommandRejected) as info:
            await vehicle.arm()
        assert (info.value.result, info.value.command) == (2, mavlink.MAV_CMD_COMPONENT_ARM_DISARM)


async def test_goto_falls_back_to_position_target_when_reposition_unsupported() -> None:
    async with MavlinkLink("udpin:127.0.0.1:0") as link, FakeAutopilot(43, link.local_address) as fake:
        vehicle = await link.wait_vehicle(43, 3.0)
        fake.on_command = lambda msg: [3]  # UNSUPPORTED
        await vehicle.goto(52.5, 13.4, 30.0)
        await _eventually(lambda: fake.of_type("SET_POSITION_TARGET_GLOBAL_INT") != [])
        cmd = fake.of_type("COMMAND_INT")[0]
        assert (cmd.command, cmd.frame, cmd.x, cmd.y, cmd.z) == (192, 6, 525000000, 134000000, 30.0)
        target = fake.of_type("SET_POSITION_TARGET_GLOBAL_INT")[0]
        assert (target.lat_int, target.lon_int, target.alt, target.target_system) == (525000000, 134000000,
                                                                                    30.0, 43)


async def test_set_mode_waits_for_the_heartbeat() -> None:
    async with MavlinkLink("udpin:127.0.0.1:0") as link, FakeAutopilot(44, link.local_address) as fake:
        vehicle = await link.wait_vehicle(44, 3.0)
        assert vehicle.state.mode == "STABILIZE"

        def do_set_mode(msg: Any) -> list[int]:
            fake.custom_mode = int(msg.param2)
            return [0]
        fake.on_command = do_set_mode
        await vehicle.set_mode("GUIDED")
        assert vehicle.state.mode == "GUIDED"
        cmd = fake.of_type("COMMAND_LONG")[-1]
        assert (cmd.command, cmd.param1, cmd.param2) == (mavlink.MAV_CMD_DO_SET_MODE, 1.0, 4.0)


async def test_mission_upload_legacy_requests_lost_count_and_bad_ack() -> None:
    items = [MissionItem(52.5, 13.4, 0.0), MissionItem(52.51, 13.41, 40.0, hold_s=3.0)]
    async with MavlinkLink("udpin:127.0.0.1:0") as link, FakeAutopilot(45, link.local_address) as fake:
        vehicle = await link.wait_vehicle(45, 3.0)
        got: dict[int, Any] = {}
        counts = 0
        reply_type = 0

        def on_message(msg: Any) -> None:
            nonlocal counts
            kind = msg.get_type()
            if kind == "MISSION_COUNT":
                counts += 1
                if counts > 1:  # the first COUNT is "lost"
                    fake.send(mavlink.MAVLink_mission_request_message(250, 190, 0, 0))
            elif kind in ("MISSION_ITEM", "MISSION_ITEM_INT"):
                got[msg.seq] = msg
                if msg.seq + 1 < len(items):
                    fake.send(mavlink.MAVLink_mission_request_message(250, 190, msg.seq + 1, 0))
                else:
                    fake.send(mavlink.MAVLink_mission_ack_message(250, 190, reply_type, 0))
        fake.on_message = on_message
        await vehicle.upload_mission(items, timeout_s=0.3)
        assert counts == 2
        assert [m.get_type() for m in got.values()] == ["MISSION_ITEM", "MISSION_ITEM"]  # legacy answer
        assert (got[1].x, got[1].y, got[1].z, got[1].param1, got[1].frame) == pytest.approx(
            (52.51, 13.41, 40.0, 3.0, 6))

        reply_type, counts = 4, 1  # MAV_MISSION_NO_SPACE
        with pytest.raises(MissionError) as info:
            await vehicle.upload_mission(items, timeout_s=0.3)
        assert info.value.result == 4


async def test_close_wakes_a_pending_command_and_leaves_no_tasks() -> None:
    before = asyncio.all_tasks()
    link = MavlinkLink("udpin:127.0.0.1:0")
    async with link, FakeAutopilot(46, link.local_address) as fake:
        vehicle: Vehicle = await link.wait_vehicle(46, 3.0)
        fake.on_command = lambda msg: None
        pending = asyncio.create_task(vehicle.command_long(mavlink.MAV_CMD_NAV_LAND, timeout_s=5.0))
        await asyncio.sleep(0.1)
        await link.close()
        with pytest.raises(LinkLost):
            await pending
    assert asyncio.all_tasks() == before
    with pytest.raises(LinkLost):
        vehicle.send(mavlink.MAVLink_command_long_message(46, 1, 21, 0, 0, 0, 0, 0, 0, 0, 0))


async def test_wait_vehicle_times_out_and_unheard_vehicle_has_no_route() -> None:
    async with MavlinkLink("udpin:127.0.0.1:0") as link:
        with pytest.raises(WaitTimeout):
            await link.wait_vehicle(99, 0.3)
        assert 99 not in link.vehicles
        with pytest.raises(LinkLost):
            await link.vehicle(99).rtl()


async def test_tcpin_and_tcp_client_carry_commands() -> None:
    async with MavlinkLink("tcpin:127.0.0.1:0") as server:
        host, port = server.local_address
        async with MavlinkLink(f"tcp:{host}:{port}", system_id=51, component_id=1) as client:
            # The "client" link plays the vehicle: heartbeats from system 51 and an ACK on demand.
            hub_side = server.vehicle(51)
            reply = client.vehicle(250)

            def ack(vehicle: Vehicle, msg: Any) -> None:
                if msg.get_type() == "COMMAND_LONG":
                    vehicle.send(mavlink.MAVLink_command_ack_message(msg.command, 0, 0, 0, 250, 190))
            client.subscribe(ack)
            await _eventually(lambda: 250 in client.vehicles, 5.0)  # server heartbeats reach the client...
            assert reply.peer is not None
            # ...and the client's GCS-type heartbeat is seen but is no autopilot heartbeat.
            assert 51 in server.vehicles and hub_side.state.last_heartbeat is None
            assert await hub_side.command_long(mavlink.MAV_CMD_NAV_LAND) == 0
            assert server.stats["received"] >= 2 and server.stats["bad_crc"] == 0
