"""The simulated phones and TAK client (:mod:`sim.owntracks_phone`, :mod:`sim.traccar_phone`, :mod:`sim.tak_client`):
their wire formats read back by the hub's own codecs, hostile input from the hub's side refused by reason, and each
simulator against a real hub (PostgreSQL, Mosquitto, the gateways on): locations stored, ``reportLocation``
answered over MQTT and over HTTP, Traccar Client's stored reports sent once the hub is back, and a TAK client on
the loopback SA multicast group becoming a ``tak`` unit while it reads the hub's units and incidents."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.clock import now_ms
from devices.payloads import Fix
from hub.config import Settings
from hub.gateways.osmand.codec import KNOT, decode_query
from hub.gateways.owntracks.codec import Location, decode
from hub.gateways.tak import cot
from sim.owntracks_phone import (
    CommandRefused,
    MoveSchedule,
    OwnTracksConfig,
    OwnTracksPhone,
    location_message,
    read_answer,
    read_command,
)
from sim.tak_client import CotRefused, TakClient, TakClientConfig, android_uid, read_event, sa_event
from sim.traccar_phone import TraccarConfig, TraccarPhone, report_params, report_url
from tests.conftest import ADMIN_TOKEN, RunningHub, running_hub, wait_for
from tests.hub.gateways.taky_server import taky_server

HERE = (34.2610, 117.1859)


def walking(speed: float = 1.4) -> Any:
    """A location provider: a phone walking north-east from HERE, a fix of now each time."""
    steps = iter(range(1_000_000))

    def position() -> Fix:
        k = next(steps)
        return Fix(ts=now_ms(), lat=HERE[0] + k * 1e-5, lon=HERE[1] + k * 1e-5, alt=41.0, acc=6.0, speed=speed,
                   heading=45.0, battery=87.0)
    return position


# --- pure: the wire formats, read back by the hub's codecs ----------------------------------------------------------

def test_an_owntracks_location_is_what_the_hub_codec_reads() -> None:
    fix = Fix(ts=1_795_000_000_900, lat=34.2, lon=117.1, alt=40.6, acc=5.4, speed=10.0, heading=359.7, battery=81)
    message = location_message(fix, tid="o1", trigger="r", now_s=1_795_000_001)
    assert message == {"_type": "location", "tst": 1_795_000_000, "lat": 34.2, "lon": 117.1, "tid": "o1",
                       "conn": "m", "acc": 5, "alt": 41, "vel": 36, "cog": 0, "batt": 81, "bs": 1, "t": "r",
                       "created_at": 1_795_000_001}
    read = decode(json.dumps(message).encode())
    assert isinstance(read, Location) and read.trigger == "r" and read.tid == "o1"
    assert read.fix.ts == 1_795_000_000_000 and read.fix.speed == pytest.approx(10.0)
    assert "t" not in location_message(fix, tid="o1", trigger=None)


def test_move_mode_reports_every_interval_while_moving_and_pings_when_still() -> None:
    schedule = MoveSchedule(move_s=10, ping_s=900)
    assert schedule.due(0, moving=False) == ""  # the first location at start
    schedule.sent(0)
    assert schedule.due(9, moving=True) is None and schedule.due(10, moving=True) == ""
    assert schedule.due(899, moving=False) is None and schedule.due(900, moving=False) == "p"


def test_commands_and_http_answers_are_read_as_the_app_reads_them() -> None:
    assert read_command(b'{"_type":"cmd","action":"reportLocation"}') == "reportLocation"
    assert read_answer(b"") == ([], 0) and read_answer(b"[]") == ([], 0)
    friend = {"_type": "location", "lat": 1, "lon": 2, "tst": 3}
    assert read_answer(json.dumps([friend, {"_type": "cmd", "action": "reportLocation"}]).encode()) == (
        ["reportLocation"], 1)
    for raw, reason in ((b"x", "bad_json"), (b"[1]", "not_object"), (b'{"_type":"location"}', "not_cmd"),
                        (b'{"_type":"cmd","action":7}', "bad_action"), (b"[" * 100_000, "too_large")):
        with pytest.raises(CommandRefused) as refused:
            read_command(raw)
        assert refused.value.reason == reason
    with pytest.raises(CommandRefused, match="not_array"):
        read_answer(b'{"_type":"cmd","action":"reportLocation"}')


@given(st.binary(max_size=300))
def test_any_bytes_as_a_command_or_answer_are_read_or_refused_with_a_reason(raw: bytes) -> None:
    for read in (read_command, read_answer):
        try:
            read(raw)
        except CommandRefused as exc:
            assert exc.reason in {"bad_json", "not_object", "not_cmd", "bad_action", "not_array", "too_large"}


JSONS = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4), max_leaves=12)


@given(JSONS, st.sampled_from(["cmd", "location", None]), st.one_of(st.text(max_size=70), JSONS))
def test_any_json_as_a_command_gives_a_short_string_action_or_a_reason(extra: Any, kind: Any, action: Any) -> None:
    raw = json.dumps({"_type": kind, "action": action, "x": extra}).encode()
    try:
        got = read_command(raw)
    except CommandRefused as exc:
        assert exc.reason in {"not_cmd", "bad_action"}
    else:
        assert kind == "cmd" and isinstance(got, str) and 0 < len(got) <= 64


def test_a_traccar_report_keeps_the_key_and_is_what_the_hub_codec_reads() -> None:
    fix = Fix(ts=1_795_000_000_400, lat=34.2, lon=117.1, alt=40.0, acc=4.5, speed=2.0, heading=90.0, battery=55.0)
    url = report_url("http://hub:8000/gateway/osmand?key=s%2Fe", report_params("TC1", fix, charging=True))
    parts = urlsplit(url)
    assert parts.path == "/gateway/osmand" and parse_qsl(parts.query)[0] == ("key", "s/e")
    report = decode_query(parts.query)
    assert report.device_id == "TC1" and report.fix.ts == 1_795_000_000_000
    assert report.fix.speed == pytest.approx(2.0, abs=0.01) and report.fix.attrs == {"charge": True}
    assert dict(parse_qsl(parts.query))["speed"] == f"{2.0 / KNOT:.2f}"


def test_the_tak_self_report_is_a_tak_user_to_the_hub_codec() -> None:
    now = now_ms()
    fix = Fix(ts=now, lat=34.26, lon=117.18, alt=40.0, acc=5.0, speed=1.2, heading=80.0, battery=64.0)
    raw = sa_event(android_uid(0xABC), "VIPER", fix, now_ms=now, stale_ms=now + 30_000, team="Cyan")
    message = cot.decode(raw, now_ms=now)
    assert isinstance(message, cot.TakPosition)
    assert (message.uid, message.callsign, message.team) == ("ANDROID-0000000000000abc", "VIPER", "Cyan")
    assert (message.fix.lat, message.fix.battery, message.fix.speed) == (34.26, 64.0, 1.2)


def test_the_client_reads_the_hubs_unit_incident_and_sos_events() -> None:
    now = now_ms()
    unit = cot.UnitReport("U1", "Unit 1", "foot", 34.2, 117.1, now, battery=80.0)
    incident = cot.IncidentReport("I1", "theft", "2", "open", 34.21, 117.11)
    for raw, kind, uid in ((cot.unit_event(unit, now_ms=now, stale_ms=now + 1000), cot.UNIT_TYPE,
                            "fieldhub-unit-U1"),
                           (cot.incident_event(incident, now_ms=now, stale_ms=now + 1000), cot.INCIDENT_TYPE,
                            "fieldhub-incident-I1"),
                           (cot.sos_event(unit, now_ms=now, stale_ms=now + 1000), cot.SOS_TYPE,
                            "fieldhub-unit-U1-9-1-1")):
        seen = read_event(raw)
        assert (seen.cot_type, seen.uid) == (kind, uid)
    for raw, reason in ((b"<x/>", "not_event"), (b"<event/>", "missing_field"), (b"<event", "bad_xml"),
                        (b'<!DOCTYPE e [<!ENTITY a "b">]><event/>', "forbidden_xml"), (b"\xbf\x01\xbf", "protobuf"),
                        (b'<event uid="u" type="t" stale="s"><point lat="91" lon="0"/></event>', "out_of_range"),
                        (b'<event uid="u" type="t" stale="s"><point lat="nan" lon="0"/></event>', "out_of_range")):
        with pytest.raises(CotRefused) as refused:
            read_event(raw)
        assert refused.value.reason == reason, raw


@given(st.binary(max_size=400) | st.text(max_size=300).map(lambda t: f"<event {t}".encode()))
def test_any_bytes_from_the_network_are_counted_or_refused_never_raised(raw: bytes) -> None:
    client = TakClient(TakClientConfig(url="udp://239.2.3.1:1"), walking())
    client.on_event(raw)
    assert sum(client.seen.values()) + sum(client.refused.values()) + client.counters["own_echo"] == 1


# --- against a real hub ---------------------------------------------------------------------------------------------

def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def phone_hub(settings: Settings) -> AsyncIterator[RunningHub]:
    update = {"owntracks": True, "osmand": True, "auto_dispatch_priority": 0}
    async with running_hub(settings.model_copy(update=update)) as rh:
        yield rh


async def provision(hub: RunningHub, unit_id: str, device_id: str, protocol: str) -> dict[str, Any]:
    """The unit and the phone's login through the API, as an installer does; the answer (the secret once)."""
    await hub.put_unit(unit_id, [device_id], kind="foot")
    async with httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        r = await admin.post("/api/v1/devices", json={"device_id": device_id, "unit_id": unit_id,
                                                      "protocol": protocol})
    assert r.status_code == 201, r.text
    answer: dict[str, Any] = r.json()
    assert answer["protocol"] == protocol and isinstance(answer["password"], str)
    return answer


async def stored(hub: RunningHub, device_id: str, where: str = "true") -> int:
    return await hub.count(f"SELECT count(*) FROM fixes WHERE device_id = %s AND {where}", device_id)


async def dispatch(hub: RunningHub, unit_id: str) -> str:
    r = await hub.api.post("/api/v1/incidents", json={"category": "theft", "priority": 2, "lat": HERE[0] + 0.002,
                                                      "lon": HERE[1] + 0.002})
    assert r.status_code == 201, r.text
    incident_id: str = r.json()["id"]
    r = await hub.api.post(f"/api/v1/incidents/{incident_id}/dispatch", json={"unit_ids": [unit_id]})
    assert r.status_code == 200, r.text
    return incident_id


@pytest.mark.parametrize("mode", ["mqtt", "http"])
async def test_an_owntracks_phone_is_stored_and_answers_report_location(phone_hub: RunningHub, mode: str) -> None:
    hub = phone_hub
    answer = await provision(hub, "OT01", "OT01-phone", "owntracks")
    where = {"mqtt_url": answer["mqtt_url"]} if mode == "mqtt" else {
        "http_url": hub.base_url + answer["gateway"]["http"]["path"]}
    # Standing still: the first location, then only a ping every 15 minutes; the answer to the dispatch stands out.
    config = OwnTracksConfig("OT01-phone", answer["password"], name="pixel", tid="o1", move_s=3600, tick_s=0.2,
                             retry_s=0.5, **where)
    phone = OwnTracksPhone(config, walking(speed=0.0))
    await phone.start()
    try:
        if mode == "mqtt":
            assert phone.connected.is_set(), "the broker did not take the phone's login"
        await wait_for(lambda: stored(hub, "OT01-phone"), timeout=15)
        await asyncio.sleep(1.1)  # the answer's tst (seconds) must differ from the first location's
        await dispatch(hub, "OT01")
        if mode == "http":  # the command rides on the answer to the phone's next message: the user publishes now
            phone.publish_now()
        await wait_for(lambda: phone.counters["report_location"] == 1, timeout=15)
        await wait_for(lambda: any(m.get("t") == "r" for m in phone.sent), timeout=15)
        assert phone.sent[0].get("t") is None
        assert [m.get("t") for m in phone.sent if m.get("t")] == (["r"] if mode == "mqtt" else ["u", "r"])
        # tst is in seconds and a fix is stored once per (device, ts): over HTTP the answer to the message that
        # carried the command usually falls in that message's second, and is then that fix (the contract's rule).
        seconds = {m["tst"] for m in phone.sent}
        await wait_for(lambda: stored(hub, "OT01-phone", f"ts <= {max(seconds) * 1000}"), timeout=15)
        await wait_for(lambda: stored(hub, "OT01-phone", "attrs->>'trigger' = 'r'") if mode == "mqtt" else True)
        assert await stored(hub, "OT01-phone") == len(seconds), (phone.sent, mode)
        assert not phone.refused and phone.counters["not_connected"] == 0, (phone.refused, phone.counters)
        view = (await hub.api.get("/api/v1/units/OT01")).json()
        assert view["position"] is not None and view["position"]["acc"] == 6.0
    finally:
        await phone.stop()


class Relay:
    """A TCP relay in front of the hub's port (real sockets), to take the hub off the phone's network and back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.close()
        await self.server.wait_closed()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}


async def test_traccar_client_keeps_its_reports_while_the_hub_is_unreachable_and_sends_them_after(
        phone_hub: RunningHub) -> None:
    hub = phone_hub
    answer = await provision(hub, "TC01", "TC01-phone", "osmand")
    server = urlsplit(answer["gateway"]["server_url"])
    relay = Relay(int(hub.base_url.rsplit(":", 1)[1]))
    await relay.up()
    phone = TraccarPhone(TraccarConfig("TC01-phone", f"http://127.0.0.1:{relay.port}{server.path}?{server.query}",
                                       interval_s=0.3, retry_s=0.3, timeout_s=2.0), walking())
    await phone.start()
    try:
        await wait_for(lambda: phone.counters["sent"] >= 2, timeout=10)
        await relay.down()  # the phone is out of coverage: it goes on taking locations and keeps them
        await wait_for(lambda: len(phone.stored) >= 5 and phone.counters["failed_unreachable"] >= 2, timeout=10)
        kept = len(phone.stored)
        await relay.up()
        await wait_for(lambda: not phone.stored and phone.counters["sent"] >= kept + 2, timeout=20)
        sent = list(phone.sent)
        assert sent == sorted(sent), "stored reports go oldest first"
        # The protocol's timestamp is in seconds: reports of one second are one fix (the contract's duplicate key).
        await wait_for(lambda: stored(hub, "TC01-phone", f"ts <= {sent[-1]}"), timeout=5)
        assert await stored(hub, "TC01-phone", f"ts <= {sent[-1]}") == len({t // 1000 for t in sent})
        assert not [k for k in phone.counters if k.startswith("refused")], phone.counters
    finally:
        await phone.stop()
        await relay.down()


async def test_a_tak_client_on_the_multicast_group_becomes_a_unit_and_reads_the_hubs_picture(
        settings: Settings) -> None:
    url = f"udp://239.2.3.1:{free_udp_port()}"  # a port of this test's own: parallel runs do not hear each other
    s = settings.model_copy(update={"tak": True, "tak_url": url, "tak_interval_s": 1.0, "osmand": True,
                                    "auto_dispatch_priority": 0})
    async with running_hub(s) as hub:
        client = TakClient(TakClientConfig(url=url, uid=android_uid(0x5EED), callsign="VIPER-1", interval_s=0.5),
                           walking())
        await client.start()
        try:
            async def tak_unit() -> dict[str, Any] | None:
                units = (await hub.api.get("/api/v1/units")).json()["units"]
                return next((u for u in units if u["kind"] == "tak" and u["position"] is not None), None)

            unit = await wait_for(tak_unit, timeout=15, interval=0.2)
            assert unit["name"] == "VIPER-1" and unit["devices"][0]["device_id"] == cot.device_id_for(client.config.uid)
            # A unit of the hub with a position (a Traccar phone), and an incident: both reach the client.
            answer = await provision(hub, "TC02", "TC02-phone", "osmand")
            server = urlsplit(answer["gateway"]["server_url"])
            tracker = TraccarPhone(TraccarConfig("TC02-phone", f"{hub.base_url}{server.path}?{server.query}",
                                                 interval_s=0.5), walking())
            await tracker.start()
            try:
                incident_id = await dispatch(hub, "TC02")
                await wait_for(lambda: cot.unit_uid("TC02") in client.uids.get(cot.UNIT_TYPE, ()), timeout=15)
                await wait_for(lambda: f"fieldhub-incident-{incident_id}" in client.uids.get(cot.INCIDENT_TYPE, ()),
                               timeout=15)
            finally:
                await tracker.stop()
            assert cot.unit_uid(unit["unit_id"]) not in client.uids.get(cot.UNIT_TYPE, ())  # a TAK user: not echoed
            assert client.counters["sent"] >= 2 and not client.refused, (client.counters, client.refused)
        finally:
            await client.stop()


async def test_a_tak_client_through_a_tak_server_meets_the_hub_there(settings: Settings, tmp_path: Path) -> None:
    """The same over a real TAK server's plain stream (taky): the client's position and the hub's picture cross it."""
    with taky_server(tmp_path) as server:
        s = settings.model_copy(update={"tak": True, "tak_url": server.url, "tak_interval_s": 1.0, "osmand": True,
                                        "auto_dispatch_priority": 0})
        async with running_hub(s) as hub:
            client = TakClient(TakClientConfig(url=server.url, uid=android_uid(0x7A4), callsign="COBRA-1",
                                               interval_s=0.5), walking())
            await client.start()
            try:
                await wait_for(lambda: hub.hub.live.units.get(cot.device_id_for(client.config.uid)), timeout=20)
                incident_id = await open_incident(hub)
                await wait_for(lambda: f"fieldhub-incident-{incident_id}" in client.uids.get(cot.INCIDENT_TYPE, ()),
                               timeout=20)
                assert client.counters["connects"] == 1 and not client.refused, (client.counters, client.refused)
            finally:
                await client.stop()


async def open_incident(hub: RunningHub) -> str:
    """An open incident (no unit sent): the hub's TAK feed shows it."""
    r = await hub.api.post("/api/v1/incidents", json={"category": "fire", "priority": 3, "lat": HERE[0],
                                                      "lon": HERE[1]})
    assert r.status_code == 201, r.text
    incident_id: str = r.json()["id"]
    return incident_id
