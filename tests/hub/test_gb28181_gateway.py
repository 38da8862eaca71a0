"""The GB/T 28181 gateway in a running hub (real PostgreSQL, real Mosquitto), driven by SIPp as the body camera:
its positions become the unit's track and live position, its registration an online status, its alarm an SOS
alert; a malformed body is a counted rejection and the next position is still stored; a wrong password reaches
nothing."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from devices.clock import now_ms
from gb28181.registrar import RegistrarConfig
from hub.gateways.gb28181 import Gb28181Gateway
from tests.conftest import RunningHub, wait_for
from tests.gb28181.sipp import run_sipp

SERVER = "34020000002000000001"
DOMAIN = SERVER[:10]
DEV = "34020000001320000007"
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
    assert await sipp(gateway, "gateway_feed.xml", tmp_path, PASSWORD, [*positions, alarm_at]) == 0

    # Each 200 was sent after the commit: the rows are there as soon as SIPp is done.
    track = (await hub.api.get(f"/api/v1/units/{UNIT}/track", params={"from": base - 1000, "to": alarm_at})).json()
    fixes = track["fixes"]
    assert [f["ts"] for f in fixes] == positions
    assert [round(f["lon"], 6) for f in fixes] == [117.2, 117.201, 117.202, 117.203]
    assert abs(fixes[0]["speed"] - 10.0) < 1e-6 and fixes[2]["heading"] == 45.5  # 36 km/h is 10 m/s
    assert gateway.fixes == 4 and gateway.counters["keepalives"] == 0

    # The malformed body between the third and the fourth position: counted by its reason, nothing stored.
    assert gateway.rejects == {"bad_xml": 1}

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
    (b"<Notify><CmdType>Broadcast</CmdType><SN>1</SN></Notify>", "unsupported"),
    (b"x" * 70_000, "too_large"),
])
async def test_hostile_bodies_are_counted_by_reason_and_reach_nothing(body: bytes, reason: str) -> None:
    pipe = Pipe()
    gw = offline_gateway(pipe)
    await gw.on_message(DEV, body, "Application/MANSCDP+xml")
    assert gw.rejects == {reason: 1} and pipe.topics == []


async def test_a_body_naming_another_device_is_filed_under_the_sender_only() -> None:
    """The SIP identity (registered with its own password) names the topic, never the body's DeviceID: a camera
    that writes another device's id into its MobilePosition cannot move that device."""
    other = "34020000001320009999"
    pipe = Pipe()
    gw = offline_gateway(pipe)
    await gw.on_message(DEV, POSITION.replace(DEV.encode(), other.encode()), "Application/MANSCDP+xml")
    assert pipe.topics == [f"fieldhub/v1/dev/{DEV}/telemetry"]
    assert not any(other in topic for topic in pipe.topics)
