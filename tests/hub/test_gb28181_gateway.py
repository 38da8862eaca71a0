"""The GB/T 28181 gateway in a running hub (real PostgreSQL, real Mosquitto), driven by SIPp as the body camera:
its positions become the unit's track and live position, its registration an online status, its alarm an SOS
alert; a malformed body is a counted rejection answered 400 and the next position is still stored; a wrong password
reaches nothing; the device is subscribed to and asked for its catalog (two pages) and device information.
Without a hub: what a device is answered (400/503/200/500), the subscription's renewal and refusal."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiosipua import SipRequest, SipResponse

from devices.clock import now_ms
from gb28181.registrar import RegistrarConfig
from hub.gateways.gb28181 import Gb28181Gateway
from tests.conftest import RunningHub, wait_for
from tests.gb28181.sipp import run_sipp
from tests.gb28181.test_calls import next_request, send, sipp_result, start_sipp
from tests.gb28181.test_registrar import UdpDevice, eventually

SERVER = "34020000002000000001"
DOMAIN = SERVER[:10]
DEV = "34020000001320000001"  # the id SIPp's scenarios and the Python device of tests/gb28181 register as
CAMERA_CHANNEL = "34020000001310000001"  # the video channel of device_answers_queries.xml's catalog
UNIT = "GB1"
PASSWORD = "s3cret"
BEIJING = timezone(timedelta(hours=8))

needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (Debian sip-tester) is not installed")


@pytest.fixture
async def gateway(hub: RunningHub) -> AsyncIterator[Gb28181Gateway]:
    await hub.put_unit(UNIT, [DEV])

    async def password_of(device_id: str) -> str | None:
        return PASSWORD if device_id == DEV else None

    config = RegistrarConfig(server_id=SERVER, host="127.0.0.1", udp_port=0, tcp_port=0, request_timeout_s=1.0)
    async with Gb28181Gateway(config, submit=hub.hub.pipeline.submit, password_of=password_of) as gw:
        yield gw


def local(ts_ms: int) -> str:
    """A device's clock: Beijing time without a zone, to the second."""
    return datetime.fromtimestamp(ts_ms / 1000, BEIJING).strftime("%Y-%m-%dT%H:%M:%S")


async def sipp(gw: Gb28181Gateway, scenario: str, tmp_path: Path, password: str, times: list[int]) -> int:
    """Run one SIPp call of ``scenario`` over UDP, the positions' and the alarm's ``times`` in its fields."""
    return await run_sipp(gw.udp_port, scenario, tmp_path, [DEV, DOMAIN, SERVER, *map(local, times)], user=DEV,
                          password=password, timeout_s=30)


async def unit_view(hub: RunningHub) -> dict[str, Any]:
    units = (await hub.api.get("/api/v1/units")).json()["units"]
    [unit] = [u for u in units if u["unit_id"] == UNIT]
    return unit


@needs_sipp
async def test_positions_presence_and_alarm_reach_the_pipeline(
    hub: RunningHub, gateway: Gb28181Gateway, tmp_path: Path
) -> None:
    base = (now_ms() // 1000 - 40) * 1000
    positions = [base, base + 5000, base + 10_000, base + 20_000]
    alarm_at = base + 35_000
    # The device also answers the subscription and the queries the gateway sends it once it is registered.
    proc = await start_sipp(gateway.udp_port, tmp_path, [DEV, DOMAIN, SERVER, *map(local, [*positions, alarm_at])],
                            scenario="gateway_feed.xml", ooc="device_answers_queries.xml")
    assert await sipp_result(proc, tmp_path) == 0

    # Each 200 was sent after the commit: the rows are there as soon as SIPp is done.
    track = (await hub.api.get(f"/api/v1/units/{UNIT}/track", params={"from": base - 1000, "to": alarm_at})).json()
    fixes = track["fixes"]
    assert [f["ts"] for f in fixes] == positions
    assert [round(f["lon"], 6) for f in fixes] == [117.2, 117.201, 117.202, 117.203]
    assert abs(fixes[0]["speed"] - 10.0) < 1e-6 and fixes[2]["heading"] == 45.5  # 36 km/h is 10 m/s
    assert gateway.fixes == 4 and gateway.counters["keepalives"] == 0

    # The malformed body between the third and the fourth position: answered 400, counted, nothing stored.
    assert gateway.rejects == {"bad_xml": 1} and gateway.registrar.counters["message_answered_400"] == 1

    await wait_for(lambda: len(gateway.channels(DEV)) == 2 and gateway.device_info(DEV) is not None)
    assert gateway.queries.counters["subscribed"] == 1
    assert [c.device_id for c in gateway.channels(DEV)] == ["34020000001340000001", CAMERA_CHANNEL]
    assert gateway.video_channel(DEV) == CAMERA_CHANNEL

    position = (await unit_view(hub))["position"]
    assert position["ts"] == positions[-1] and abs(position["lon"] - 117.203) < 1e-9

    assert gateway.registered_devices == 1 and gateway.counters["status"] == 1
    live = hub.hub.live.devices[DEV]
    assert live.state == "online"

    incidents = hub.hub.incidents
    assert incidents is not None
    alerts = await wait_for(lambda: [a for a in incidents.alerts.list(10) if a["kind"] == "sos"])
    assert alerts[0]["device_id"] == DEV and abs(alerts[0]["lon"] - 117.203) < 1e-6
    assert gateway.alarms == 1
    # SIPp cannot answer a request outside its call: the Alarm Response is sent, retried, and counted as lost.
    await wait_for(lambda: gateway.counters["alarm_ack_failed"] == 1, timeout=5)


@needs_sipp
async def test_a_wrong_password_reaches_nothing(hub: RunningHub, gateway: Gb28181Gateway, tmp_path: Path) -> None:
    assert await sipp(gateway, "register_refused.xml", tmp_path, "guess", []) == 0
    assert gateway.registrar.counters["auth_failed"] == 1
    assert gateway.registered_devices == 0 and gateway.counters["status"] == 0
    assert hub.hub.live.devices[DEV].state is None
    assert await hub.count("SELECT count(*) FROM fixes WHERE device_id = %s", DEV) == 0


# --- without a hub: what the gateway answers when the pipeline is full or slow, and to hostile bodies ---------

POSITION = f"""<?xml version="1.0" encoding="UTF-8"?>
<Notify><CmdType>MobilePosition</CmdType><SN>1</SN><DeviceID>{DEV}</DeviceID>
<Time>{local(now_ms())}</Time><Longitude>117.2</Longitude><Latitude>34.26</Latitude></Notify>""".encode()


class Pipe:
    """A stand-in for ``Pipeline.submit`` whose commits never come (or that refuses everything)."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.topics: list[str] = []

    def __call__(self, topic: str, payload: bytes, qos: int, retained: bool = False) -> asyncio.Future[None] | None:
        self.topics.append(topic)
        return None if self.refuse else asyncio.get_running_loop().create_future()


def offline_gateway(pipe: Pipe) -> Gb28181Gateway:
    async def password_of(device_id: str) -> str | None:
        return None

    config = RegistrarConfig(server_id=SERVER, host="127.0.0.1", udp_port=0, tcp_port=0)
    return Gb28181Gateway(config, submit=pipe, password_of=password_of, store_timeout_s=0.2)


async def test_a_commit_that_does_not_come_is_waited_for_a_bounded_time() -> None:
    pipe = Pipe()
    gw = offline_gateway(pipe)
    async with asyncio.timeout(2):
        await gw.on_message(DEV, POSITION, "Application/MANSCDP+xml")
    assert pipe.topics == [f"fieldhub/v1/dev/{DEV}/telemetry"]
    assert gw.counters["store_timeout"] == 1 and gw.fixes == 0


async def test_a_full_pipeline_is_counted_not_raised() -> None:
    gw = offline_gateway(Pipe(refuse=True))
    await gw.on_message(DEV, POSITION, "Application/MANSCDP+xml")
    gw.on_online(DEV)
    assert gw.counters["store_refused"] == 1 and gw.counters["status_refused"] == 1 and gw.fixes == 0


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "bad_xml"),
    (b"\xff\xfe<Notify>", "bad_encoding"),
    (b'<!DOCTYPE x [<!ENTITY a "b">]><Notify><CmdType>Keepalive</CmdType></Notify>', "forbidden_xml"),
    (b"<Notify><CmdType>MobilePosition</CmdType><SN>1</SN></Notify>", "missing_field"),
    (b"<Query><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>34020000002000000001</DeviceID></Query>",
     "unsupported"),
    (b"<Control><CmdType>DeviceControl</CmdType><SN>1</SN></Control>", "unsupported"),
    (b"x" * 70_000, "too_large"),
])
async def test_hostile_bodies_are_counted_by_reason_answered_400_and_reach_nothing(body: bytes, reason: str) -> None:
    pipe = Pipe()
    gw = offline_gateway(pipe)
    assert await gw.on_message(DEV, body, "Application/MANSCDP+xml") == (400, f"Bad Request ({reason})")
    assert gw.rejects == {reason: 1} and pipe.topics == []


async def test_notifications_the_hub_does_not_use_and_positions_without_a_fix_are_acknowledged() -> None:
    """The standard expects a device's notifications acknowledged: a 4xx would make it resend, or log a fault."""
    pipe = Pipe()
    gw = offline_gateway(pipe)
    assert await gw.on_message(DEV, b"<Notify><CmdType>Broadcast</CmdType><SN>1</SN></Notify>", "") is None
    no_fix = POSITION.replace(b"117.2", b"0").replace(b"34.26", b"0")
    assert await gw.on_message(DEV, no_fix, "") is None
    assert gw.ignored == {"Notify/Broadcast": 1} and gw.rejects == {"no_fix": 1} and pipe.topics == []


async def test_a_store_that_fails_is_answered_503_so_the_device_resends() -> None:
    slow = offline_gateway(Pipe())
    assert await slow.on_message(DEV, POSITION, "") == (503, "Service Unavailable (store_timeout)")
    full = offline_gateway(Pipe(refuse=True))
    assert await full.on_message(DEV, POSITION, "") == (503, "Service Unavailable (store_refused)")


# --- without a hub, with SIPp or a Python device: the answers on the wire, subscriptions and queries ------------


class Committing(Pipe):
    """``Pipeline.submit`` whose commits are immediate."""

    def __call__(self, topic: str, payload: bytes, qos: int, retained: bool = False) -> asyncio.Future[None] | None:
        self.topics.append(topic)
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


@pytest.fixture
async def lone_gateway(request: pytest.FixtureRequest) -> AsyncIterator[Gb28181Gateway]:
    """A gateway without a hub; ``request.param``: the constructor's keyword arguments and ``pipe``."""
    options = dict(getattr(request, "param", {}))
    pipe = options.pop("pipe", Committing())

    async def password_of(device_id: str) -> str | None:
        return PASSWORD if device_id == DEV else None

    config = RegistrarConfig(server_id=SERVER, host="127.0.0.1", udp_port=0, tcp_port=0, request_timeout_s=1.0)
    async with Gb28181Gateway(config, submit=pipe, password_of=password_of, **options) as gw:
        yield gw


@needs_sipp
@pytest.mark.parametrize("lone_gateway", [{"pipe": Pipe(), "store_timeout_s": 0.2, "query_devices": False}],
                         indirect=True)
async def test_sipp_device_is_answered_503_400_200_400(lone_gateway: Gb28181Gateway, tmp_path: Path) -> None:
    proc = await start_sipp(lone_gateway.udp_port, tmp_path, [DEV, DOMAIN, SERVER, local(now_ms())],
                            scenario="answer_statuses.xml")
    assert await sipp_result(proc, tmp_path) == 0
    counters = lone_gateway.registrar.counters
    assert (counters["message_answered_503"], counters["message_answered_400"]) == (1, 2)
    assert lone_gateway.counters["store_timeout"] == 1 and lone_gateway.fixes == 0
    assert lone_gateway.rejects == {"bad_xml": 1, "unsupported": 1}
    assert lone_gateway.ignored == {"Notify/Broadcast": 1}


@needs_sipp
async def test_sipp_device_is_subscribed_and_its_two_page_catalog_assembled(
    lone_gateway: Gb28181Gateway, tmp_path: Path
) -> None:
    proc = await start_sipp(lone_gateway.udp_port, tmp_path, [DEV, DOMAIN, SERVER, "3"],  # 3 exchanges
                            ooc="device_answers_queries.xml")
    await wait_for(lambda: len(lone_gateway.channels(DEV)) == 2 and lone_gateway.device_info(DEV) is not None)
    assert await sipp_result(proc, tmp_path) == 0
    camera, alarm_input = sorted(lone_gateway.channels(DEV), key=lambda c: c.device_id)
    assert (camera.device_id, camera.name, camera.online) == (CAMERA_CHANNEL, "Camera 1", True)
    assert alarm_input.name == "SOS button" and alarm_input.parent_id == DEV
    assert lone_gateway.video_channel(DEV) == CAMERA_CHANNEL
    info = lone_gateway.device_info(DEV)
    assert info is not None and (info.manufacturer, info.model, info.channels) == ("SIPp", "BWC-1", 1)
    counters = lone_gateway.queries.counters
    assert (counters["subscribed"], counters["catalog_query_sent"], counters["deviceinfo_query_sent"]) == (1, 1, 1)
    assert lone_gateway.video_channel("34020000001320000099") == "34020000001320000099"  # no catalog: itself


def ok(request: SipRequest, status: int = 200, **headers: str) -> SipResponse:
    reply = SipResponse(status_code=status, reason_phrase="X", headers=request.headers.copy())
    reply.headers.set_single("To", f"{request.headers.get_first('to')};tag=dev9")
    for name, value in headers.items():
        reply.headers.set_single(name, value)
    return reply


@pytest.mark.parametrize("lone_gateway", [{"subscription_expires_s": 2, "position_interval_s": 7}], indirect=True)
async def test_the_subscription_is_renewed_in_its_dialog_until_refused(lone_gateway: Gb28181Gateway) -> None:
    device = await UdpDevice.open(lone_gateway.registrar)
    await device.register("s3cret")
    first = await next_request(device, "SUBSCRIBE")
    assert first.headers.get_first("event") == "presence" and first.headers.get_first("expires") == "2"
    assert b"<CmdType>MobilePosition</CmdType>" in first.body and b"<Interval>7</Interval>" in first.body
    send(device, ok(first, Expires="2", Contact="<sip:dev@127.0.0.1:9>"))
    renewal = await next_request(device, "SUBSCRIBE", timeout=3)  # at 80 % of the 2 s
    assert renewal.headers.get_first("call-id") == first.headers.get_first("call-id")
    assert renewal.uri == "sip:dev@127.0.0.1:9" and "tag=dev9" in (renewal.headers.get_first("to") or "")
    seq = [int((r.headers.get_first("cseq") or "").split()[0]) for r in (first, renewal)]
    assert seq[1] > seq[0]
    send(device, ok(renewal, 489))
    await eventually(lambda: lone_gateway.queries.counters["subscribe_refused"] == 1)
    assert lone_gateway.queries.counters["subscribed"] == 1
    # The queries nobody answered: counted, nothing else.
    await eventually(lambda: lone_gateway.queries.counters["catalog_query_failed"] == 1, timeout=5)


async def test_a_body_naming_another_device_is_filed_under_the_sender_only() -> None:
    """The SIP identity (registered with its own password) names the topic, never the body's DeviceID: a camera
    that writes another device's id into its MobilePosition cannot move that device."""
    other = "34020000001320009999"
    pipe = Pipe()
    gw = offline_gateway(pipe)
    await gw.on_message(DEV, POSITION.replace(DEV.encode(), other.encode()), "Application/MANSCDP+xml")
    assert pipe.topics == [f"fieldhub/v1/dev/{DEV}/telemetry"]
    assert not any(other in topic for topic in pipe.topics)
