"""The simulated GB/T 28181 camera against the REAL registrar (gb28181.registrar) over UDP and TCP, and its PS/RTP
stream decoded by PyAV; no SIP agent or socket is mocked."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gb28181.manscdp import Alarm, CatalogResponse, DeviceInfoResponse, Keepalive, MobilePosition
from gb28181.manscdp_build import build_alarm_ack, build_mobile_position_subscription, build_query
from gb28181.manscdp_catalog import CatalogAssembler
from gb28181.registrar import Registrar
from sim import gb28181_bodies as bodies
from sim.gb28181_camera import GbCamera, parse_date
from sim.gb28181_fleet import GbCameraFleet, device_ids
from sim.gb28181_ua import UaError, authorization
from tests.sim.gb28181_support import (
    BEIJING,
    CHANNEL,
    DEV,
    POSITION,
    SERVER,
    UNKNOWN,
    Platform,
    config,
    eventually,
    platform,
    registrar,
    registrar_for,
)

__all__ = ["platform", "registrar"]  # fixtures


# --- registration and keepalive ---------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_registers_with_digest_and_sets_its_clock(registrar: Registrar, transport: str) -> None:
    async with GbCamera(config(registrar, transport)) as camera:
        await asyncio.wait_for(camera.registered.wait(), 5)
        binding = registrar.registration(DEV)
        assert binding is not None and binding.peer.transport == transport
        assert registrar.counters["challenged"] == 1 and registrar.counters["registered"] == 1
        assert camera.counters.registered == 1 and not camera.counters.refused
        assert abs(camera.clock_offset_s) < 2.0  # the Date of the 200 was Beijing time, as the camera's zone
    await eventually(lambda: registrar.counters["unregistered"] == 1)  # exit withdraws the registration
    assert registrar.registration(DEV) is None


async def test_clock_follows_the_platform_date(platform: Platform) -> None:
    ahead = registrar_for(platform)
    ahead.wall = lambda: (datetime.now(BEIJING) + timedelta(hours=1)).replace(tzinfo=None)
    async with ahead, GbCamera(config(ahead)) as camera:
        await asyncio.wait_for(camera.registered.wait(), 5)
        assert 3590 < camera.clock_offset_s < 3610


async def test_wrong_password_is_a_counted_refusal_with_back_off(registrar: Registrar) -> None:
    async with GbCamera(config(registrar, password="guess")) as camera:
        await asyncio.sleep(2.0)
        refusals = camera.counters.refused["register_403"]
        # 0.4 s doubling to 0.8 s: about 3 attempts in 2 s, never a tight loop.
        assert 2 <= refusals <= 4
        assert registrar.counters["auth_failed"] == refusals
        assert not camera.registered.is_set() and registrar.registration(DEV) is None


async def test_unknown_device_is_refused_404(registrar: Registrar) -> None:
    async with GbCamera(config(registrar, device_id=UNKNOWN)) as camera:
        await eventually(lambda: camera.counters.refused["register_404"] >= 1)
        assert registrar.counters["register_unknown_device"] >= 1 and registrar.counters["challenged"] == 0


async def test_keepalives_keep_it_online_and_silence_does_not(platform: Platform) -> None:
    async with registrar_for(platform, keepalive_interval_s=0.3, max_missed=3) as reg:
        async with GbCamera(config(reg, keepalive_s=0.3)) as camera:
            await asyncio.wait_for(camera.registered.wait(), 5)
            await asyncio.sleep(2.0)
            assert camera.counters.keepalives >= 4 and platform.offline == []
            keepalives = platform.of(Keepalive)
            assert keepalives and all(k.ok and k.device_id == DEV for k in keepalives)
        # The control: a camera that keeps alive too rarely goes offline after three missed intervals.
        async with GbCamera(config(reg, keepalive_s=30.0)) as quiet:
            await asyncio.wait_for(quiet.registered.wait(), 5)
            await eventually(lambda: platform.offline[-1:] == [(DEV, "3 keepalives missed")], 3.0)


async def test_re_registers_when_the_platform_forgets_it(platform: Platform) -> None:
    async with registrar_for(platform) as reg, GbCamera(config(reg)) as camera:
        await asyncio.wait_for(camera.registered.wait(), 5)
        reg.presence.unregister(DEV)  # the platform restarted: our keepalives are refused 403
        await eventually(lambda: camera.counters.refused["keepalive_403"] >= 1)
        await eventually(lambda: reg.registration(DEV) is not None and camera.counters.registered >= 2)


# --- positions and alarms ---------------------------------------------------------------------------------------


async def test_unsolicited_positions_arrive(registrar: Registrar, platform: Platform) -> None:
    async with GbCamera(config(registrar, position_interval_s=0.2), position=lambda: POSITION) as camera:
        await eventually(lambda: len(platform.of(MobilePosition)) >= 3)
        fix = platform.of(MobilePosition)[0]
        assert (fix.device_id, fix.lat, fix.lon, fix.speed_kmh, fix.direction_deg) == (DEV, *POSITION)
        assert abs(fix.ts_ms - time.time() * 1000) < 3000  # local Beijing time read back as the same instant
        await eventually(lambda: camera.counters.positions_sent >= 3)  # counted at the 200, after on_message


async def test_positions_only_after_a_subscribe_then_at_its_interval(registrar: Registrar, platform: Platform) -> None:
    async with GbCamera(config(registrar), position=lambda: POSITION) as camera:
        await asyncio.wait_for(camera.registered.wait(), 5)
        await asyncio.sleep(0.5)
        assert platform.of(MobilePosition) == []  # a real device sends none unasked
        body = build_mobile_position_subscription(7, DEV, 1)
        missing_event = await registrar.send_request(DEV, "SUBSCRIBE", body, extra_headers={"Expires": "60"})
        assert missing_event.status_code == 489 and camera.counters.rejected["subscribe_no_event"] == 1
        ok = await registrar.send_request(DEV, "SUBSCRIBE", body, extra_headers={"Event": "presence", "Expires": "60"})
        assert ok.status_code == 200 and ok.headers.get_first("expires") == "60"
        started = time.monotonic()
        await eventually(lambda: len(platform.of(MobilePosition)) >= 3)
        assert 1.5 < time.monotonic() - started < 4.0  # the first at once, then every Interval (1 s)
        await eventually(lambda: camera.counters.positions_sent >= 3)
        ended = await registrar.send_request(DEV, "SUBSCRIBE", body, extra_headers={"Event": "presence",
                                                                                   "Expires": "0"})
        assert ended.status_code == 200 and camera.subscription.dialog is None


async def test_alarm_arrives_and_its_acknowledgment_is_counted(registrar: Registrar, platform: Platform) -> None:
    async with GbCamera(config(registrar), position=lambda: POSITION) as camera:
        await asyncio.wait_for(camera.registered.wait(), 5)
        sn = await camera.raise_alarm(priority=1, method=2, description="officer needs help 警员求助", alarm_type=1)
        alarm = platform.of(Alarm)[-1]
        assert (alarm.device_id, alarm.sn, alarm.priority, alarm.method, alarm.alarm_type) == (DEV, sn, 1, 2, 1)
        assert alarm.description == "officer needs help 警员求助" and (alarm.lat, alarm.lon) == POSITION[:2]
        assert camera.counters.alarms == 1
        ack = await registrar.send_request(DEV, "MESSAGE", build_alarm_ack(sn, DEV))
        assert ack.status_code == 200 and camera.counters.alarm_acks == 1


# --- queries and refusals ---------------------------------------------------------------------------------------


async def test_answers_catalog_in_pages_and_device_info(registrar: Registrar, platform: Platform) -> None:
    async with GbCamera(config(registrar, channels=6, catalog_page_size=4)) as camera:
        await asyncio.wait_for(camera.registered.wait(), 5)
        answer = await registrar.send_request(DEV, "MESSAGE", build_query("Catalog", 11, DEV))
        assert answer.status_code == 200
        await eventually(lambda: len(platform.of(CatalogResponse)) == 2)
        assembler = CatalogAssembler()
        catalogs = [assembler.add(page, 0) for page in platform.of(CatalogResponse)]
        catalog = catalogs[-1]
        assert catalog is not None and catalog.sn == 11 and catalogs[0] is None
        assert [item.device_id for item in catalog.items] == bodies.channel_ids(DEV, 6)
        assert catalog.items[0].device_id == CHANNEL and catalog.items[0].online is True
        info = await registrar.send_request(DEV, "MESSAGE", build_query("DeviceInfo", 12, DEV))
        assert info.status_code == 200
        await eventually(lambda: platform.of(DeviceInfoResponse))
        device = platform.of(DeviceInfoResponse)[0]
        assert (device.sn, device.manufacturer, device.channels, device.ok) == (12, "fieldhub-sim", 6, True)
        assert camera.counters.queries_answered == 2


async def test_refuses_what_a_real_device_refuses(registrar: Registrar) -> None:
    async with GbCamera(config(registrar)) as camera:
        await asyncio.wait_for(camera.registered.wait(), 5)
        unknown = await registrar.send_request(DEV, "MESSAGE", build_query("Catalog", 1, UNKNOWN))
        garbage = await registrar.send_request(DEV, "MESSAGE", b"<Query><CmdType>Catalog</Cmd")
        bye = await registrar.send_request(DEV, "BYE", b"")
        invite = await registrar.send_request(DEV, "INVITE", b"v=0\r\n", "application/sdp")
        assert (unknown.status_code, garbage.status_code, bye.status_code, invite.status_code) == (404, 400, 481, 404)
        assert camera.counters.rejected == {"unknown_device": 1, "bad_body_bad_xml": 1, "unknown_dialog": 1,
                                            "unknown_channel": 1}
        # Still answering after the refusals.
        assert (await registrar.send_request(DEV, "MESSAGE", build_query("DeviceInfo", 2, DEV))).status_code == 200


async def test_garbage_datagrams_are_counted_drops(registrar: Registrar, platform: Platform) -> None:
    async with GbCamera(config(registrar)) as camera:
        await asyncio.wait_for(camera.registered.wait(), 5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for junk in (b"\x00\xff" * 40, b"INVITE\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n", b"MESSAGE sip:x SIP/2.0\r\n"):
                sock.sendto(junk, ("127.0.0.1", camera.ua.local_port))
        await eventually(lambda: sum(camera.ua.drops.values()) >= 4)
        assert (await registrar.send_request(DEV, "MESSAGE", build_query("DeviceInfo", 3, DEV))).status_code == 200


async def test_fleet_registers_many_cameras(platform: Platform) -> None:
    ids = device_ids(SERVER[:10], 20)
    platform.passwords.update({d: "pw" for d in ids})
    async with registrar_for(platform) as reg:
        configs = [config(reg, device_id=d, password="pw", keepalive_s=0.5) for d in ids]
        async with GbCameraFleet(configs, start_spread_s=0.2) as fleet:
            await eventually(lambda: fleet.registered == 20)
            await eventually(lambda: fleet.totals().keepalives >= 20)
            assert all(reg.registration(d) is not None for d in ids)


# --- pure parts, hostile input ----------------------------------------------------------------------------------


def test_authorization_matches_the_registrar_check() -> None:
    from gb28181 import digest

    value = authorization('Digest realm="3402000000", nonce="abc", algorithm=MD5, qop="auth"', username=DEV,
                          password="s3cret", method="REGISTER", uri="sip:x@3402000000", cnonce="c0ffee")
    creds = digest.parse_authorization(value)
    table = digest.NonceTable(token=lambda: "abc")
    table.issue(0.0)
    assert digest.verify(creds, method="REGISTER", password="s3cret", realm="3402000000", nonces=table, now=1.0) == "ok"
    old_style = authorization('Digest realm="r", nonce="n"', username=DEV, password="p", method="REGISTER", uri="u")
    assert "qop" not in old_style


@given(st.text(max_size=200))
def test_any_challenge_is_answered_or_refused_with_ua_error(challenge: str) -> None:
    try:
        value = authorization(challenge, username=DEV, password="p", method="REGISTER", uri="sip:x")
    except UaError:
        return
    assert value.startswith("Digest ")


@given(st.text(max_size=60))
def test_any_date_is_a_time_or_none(value: str) -> None:
    assert parse_date(value, 480) is None or isinstance(parse_date(value, 480), float)


def test_date_is_read_in_the_device_zone() -> None:
    assert parse_date("2024-01-02T08:00:00.000", 480) == datetime(2024, 1, 2, tzinfo=UTC).timestamp()


@given(st.binary(max_size=300))
def test_any_datagram_is_a_counted_drop_or_a_request(data: bytes) -> None:
    from sim.gb28181_ua import DeviceUa, UaConfig

    good = (f"MESSAGE sip:{DEV}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKgood\r\n"
            f"From: <sip:{SERVER}@3402000000>;tag=a\r\nTo: <sip:{DEV}@3402000000>\r\nCall-ID: good\r\n"
            "CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n").encode()
    seen: list[str] = []

    async def run() -> DeviceUa:
        ua = DeviceUa(UaConfig(DEV, SERVER, "127.0.0.1", 5060), lambda r: seen.append(r.method))
        ua.datagram(data, ("127.0.0.1", 5060))
        ua.datagram(good, ("127.0.0.1", 5060))
        await asyncio.sleep(0)
        await ua.close()
        return ua

    ua = asyncio.run(run())
    assert seen[-1:] == ["MESSAGE"]  # the good message after the garbage still goes through
    assert sum(ua.drops.values()) + len(seen) >= 2 or data.strip(b"\r\n") == b""
