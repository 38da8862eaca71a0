"""The TAK gateway against a real TAK server (taky, its own process): fieldhub's units, incidents and SOS reach a
second, plain CoT client through the server; a TAK client's position sent to the server reaches the gateway's
``submit`` as a fix of a ``tak-...`` device (and, with the real hub, PostgreSQL). Over TCP, over TLS with taky's
own certificates, across a restart of the server, and on LAN multicast without a server; a hostile stream and
hostile events (Hypothesis) cost only themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.topics import device_topic
from hub.gateways.tak import cot
from hub.gateways.tak.gateway import TakGateway, TakTls
from tests.conftest import RunningHub, wait_for
from tests.hub.gateways.taky_server import TakyServer, taky_server

NOW = lambda: int(time.time() * 1000)  # noqa: E731


class Submitted:
    """``Pipeline.submit`` that commits at once and keeps what it was given (topic, decoded JSON)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, Any]] = []

    def __call__(self, topic: str, payload: bytes, qos: int, retained: bool = False) -> asyncio.Future[None]:
        self.messages.append((topic, msgspec.json.decode(payload)))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class CotClient:
    """A plain TAK client on a raw socket: sends CoT XML and keeps every event the server forwards."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.events: list[ET.Element] = []
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, server: TakyServer) -> CotClient:
        context = None
        if server.tls:
            context = ssl.create_default_context(cafile=str(server.ca))
            context.load_cert_chain(str(server.client_cert), str(server.client_key))
        reader, writer = await asyncio.open_connection(server.host, server.port, ssl=context,
                                                       server_hostname="localhost" if context else None)
        return cls(reader, writer)

    async def _read(self) -> None:
        while True:
            chunk = await self.reader.readuntil(b"</event>")
            self.events.append(ET.fromstring(chunk.strip()))

    async def send(self, event: bytes) -> None:
        self.writer.write(event)
        await self.writer.drain()

    def find(self, uid: str, cot_type: str | None = None) -> list[ET.Element]:
        return [e for e in self.events if e.get("uid") == uid and (cot_type is None or e.get("type") == cot_type)]

    async def close(self) -> None:
        self.task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def atak_pli(uid: str, callsign: str, lat: float, lon: float, *, team: str = "Cyan", battery: int = 77) -> bytes:
    """A position report as ATAK sends it to its server (element order and attributes as ATAK writes them)."""
    now = NOW()
    stamp = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"  # noqa: E731
    return (f"<?xml version='1.0' encoding='UTF-8' standalone='yes'?><event version='2.0' uid='{uid}' "
            f"type='a-f-G-U-C' time='{stamp(now)}' start='{stamp(now)}' stale='{stamp(now + 75_000)}' how='m-g'>"
            f"<point lat='{lat}' lon='{lon}' hae='52.1' ce='4.9' le='9999999.0'/><detail>"
            f"<takv os='34' version='4.10.0.5 (CIV)' device='SAMSUNG SM-G991B' platform='ATAK-CIV'/>"
            f"<contact endpoint='*:-1:stcp' callsign='{callsign}'/><uid Droid='{callsign}'/>"
            f"<precisionlocation altsrc='GPS' geopointsrc='GPS'/><__group role='Team Member' name='{team}'/>"
            f"<status battery='{battery}'/><track course='87.5' speed='1.4'/></detail></event>").encode()


UNIT: dict[str, Any] = {
    "unit_id": "p-7", "name": "Patrol 7", "kind": "patrol", "status": "available", "station": "North", "battery": 64,
    "position": {"ts": 0, "lat": 34.2611, "lon": 117.1859, "acc": 5.0, "speed": 8.3, "heading": 92.0}}
INCIDENT: dict[str, Any] = {"id": "inc-1", "category": "fire", "priority": 1, "status": "open", "lat": 34.27,
                            "lon": 117.19, "address": "12 Huaihai Rd", "summary": "smoke from a shop"}


@pytest.fixture
def taky(tmp_path: Path) -> Iterator[TakyServer]:
    with taky_server(tmp_path) as server:
        yield server


@pytest.fixture
def taky_tls(tmp_path: Path) -> Iterator[TakyServer]:
    with taky_server(tmp_path, tls=True) as server:
        yield server


class Feed:
    """What the gateway's sources return; the test changes it."""

    def __init__(self) -> None:
        self.units = [dict(UNIT, position=dict(UNIT["position"], ts=NOW()))]
        self.incidents = [dict(INCIDENT)]
        self.new_users: list[tuple[str, str, str | None]] = []  # what on_new_user was called with


@contextlib.asynccontextmanager
async def gateway(url: str, feed: Feed, submit: Submitted, **options: Any) -> AsyncIterator[TakGateway]:
    async with TakGateway(url, submit=submit, units_source=lambda: feed.units,
                          incidents_source=lambda: feed.incidents, interval_s=1.0, poll_s=0.2,
                          on_new_user=lambda *args: feed.new_users.append(args), reconnect_min_s=0.2,
                          **options) as gw:
        yield gw


def _detail(event: ET.Element, tag: str) -> ET.Element:
    found = event.find(f"detail/{tag}")
    assert found is not None, f"no <{tag}> in {ET.tostring(event)!r}"
    return found


async def _units_incident_and_sos_reach_a_client(server: TakyServer, **options: Any) -> None:
    feed, submit = Feed(), Submitted()
    client = await CotClient.connect(server)
    try:
        async with gateway(server.url, feed, submit, **options) as gw:
            await wait_for(lambda: client.find("fieldhub-unit-p-7", "a-f-G-U-C"), timeout=15)
            unit = client.find("fieldhub-unit-p-7")[-1]
            assert _detail(unit, "contact").get("callsign") == "Patrol 7"
            assert _detail(unit, "__group").attrib == {"name": "Blue", "role": "Team Member"}
            assert _detail(unit, "status").get("battery") == "64"
            assert float(_detail(unit, "track").get("speed", "")) == pytest.approx(8.3)
            point = unit.find("point")
            assert point is not None and float(point.get("lat", "")) == pytest.approx(34.2611)

            await wait_for(lambda: client.find("fieldhub-incident-inc-1", cot.INCIDENT_TYPE), timeout=10)
            remarks = _detail(client.find("fieldhub-incident-inc-1")[-1], "remarks").text or ""
            assert "category: fire" in remarks and "priority: 1" in remarks and "12 Huaihai Rd" in remarks

            gw.sos(feed.units[0])
            await wait_for(lambda: client.find("fieldhub-unit-p-7-9-1-1", cot.SOS_TYPE), timeout=10)
            alert = client.find("fieldhub-unit-p-7-9-1-1", cot.SOS_TYPE)[0]
            assert _detail(alert, "emergency").get("type") == "911 Alert"
            assert _detail(alert, "emergency").text == "Patrol 7"
            assert _detail(alert, "link").get("uid") == "fieldhub-unit-p-7"
            gw.cancel_sos(feed.units[0])
            await wait_for(lambda: client.find("fieldhub-unit-p-7-9-1-1", cot.SOS_CANCEL_TYPE), timeout=10)
            assert _detail(client.find("fieldhub-unit-p-7-9-1-1", cot.SOS_CANCEL_TYPE)[0],
                           "emergency").get("cancel") == "true"

            # A position that changes goes out at once; a closed incident goes out stale, so the clients drop it.
            feed.units[0] = dict(feed.units[0], position=dict(feed.units[0]["position"], lat=34.3, ts=NOW()))
            feed.incidents[0] = dict(INCIDENT, status="closed")
            gw.changed()
            await wait_for(lambda: any(_lat(e) == pytest.approx(34.3) for e in client.find("fieldhub-unit-p-7")))
            await wait_for(lambda: any(_closed(e) for e in client.find("fieldhub-incident-inc-1")))
            assert gw.rejects == {} and gw.counters["tx_dropped"] == 0
    finally:
        await client.close()


def _lat(event: ET.Element) -> float:
    point = event.find("point")
    return float(point.get("lat", "nan")) if point is not None else float("nan")


def _closed(event: ET.Element) -> bool:
    return event.get("stale") == event.get("time") and "status: closed" in (_detail(event, "remarks").text or "")


async def _tak_user_becomes_a_fix(server: TakyServer, **options: Any) -> None:
    feed, submit = Feed(), Submitted()
    async with gateway(server.url, feed, submit, **options) as gw:
        await wait_for(lambda: gw.connected, timeout=15)
        await asyncio.sleep(0.3)  # taky has the gateway's socket before the client's report arrives
        client = await CotClient.connect(server)
        try:
            await client.send(atak_pli("ANDROID-4eb92ff46e615c21", "VIPER 1", 34.2501, 117.2002))
            device_id = cot.device_id_for("ANDROID-4eb92ff46e615c21")
            topic = device_topic(device_id, "telemetry")
            await wait_for(lambda: [m for t, m in submit.messages if t == topic], timeout=10)
            fix = next(m for t, m in submit.messages if t == topic)
            fix = fix[0] if isinstance(fix, list) else fix
            assert fix["lat"] == pytest.approx(34.2501) and fix["lon"] == pytest.approx(117.2002)
            assert fix["battery"] == 77 and fix["acc"] == pytest.approx(4.9) and fix["alt"] == pytest.approx(52.1)
            assert fix["speed"] == pytest.approx(1.4) and fix["heading"] == pytest.approx(87.5)
            assert feed.new_users == [(device_id, "VIPER 1", "Cyan")]
            assert device_id.startswith("tak-ANDROID-4eb92ff46e615c21-")
            # Only the hub's own events may be refused: taky hands every new connection what it keeps (our units).
            assert set(gw.rejects) <= {"own_uid"}
        finally:
            await client.close()


async def test_units_incidents_and_sos_reach_a_tak_client_through_taky(taky: TakyServer) -> None:
    await _units_incident_and_sos_reach_a_client(taky)


async def test_a_tak_users_position_becomes_a_fix_of_a_tak_device(taky: TakyServer) -> None:
    await _tak_user_becomes_a_fix(taky)


def _tls(server: TakyServer) -> TakTls:
    return TakTls(cert=str(server.client_cert), key=str(server.client_key), cafile=str(server.ca),
                  server_hostname="localhost")


async def test_over_tls_with_taky_certificates(taky_tls: TakyServer) -> None:
    await _units_incident_and_sos_reach_a_client(taky_tls, tls=_tls(taky_tls))
    await _tak_user_becomes_a_fix(taky_tls, tls=_tls(taky_tls))


async def test_an_untrusted_server_is_refused_and_the_gateway_keeps_trying(taky_tls: TakyServer) -> None:
    feed, submit = Feed(), Submitted()
    async with gateway(taky_tls.url, feed, submit, tls=TakTls(cert=str(taky_tls.client_cert),
                                                              key=str(taky_tls.client_key))) as gw:
        # No CA given: the server's certificate is not trusted, so no connection, only counted attempts.
        await wait_for(lambda: gw.counters["connect_failed"] >= 2, timeout=15)
        assert not gw.connected and gw.counters["connects"] == 0


async def test_server_restart_under_a_running_gateway(tmp_path: Path) -> None:
    feed, submit = Feed(), Submitted()
    async with contextlib.AsyncExitStack() as stack:
        with taky_server(tmp_path / "a") as first:
            port = first.port
            gw = await stack.enter_async_context(gateway(first.url, feed, submit))
            await wait_for(lambda: gw.connected, timeout=15)
        # The server is gone under the running gateway; a new one comes up on the same port.
        await wait_for(lambda: gw.counters["disconnects"] >= 1 and not gw.connected, timeout=15)
        with taky_server(tmp_path / "b", port=port) as second:
            client = await CotClient.connect(second)
            try:
                await wait_for(lambda: gw.counters["connects"] >= 2, timeout=20)
                # After the reconnection everything is sent afresh: the new server's client sees the unit.
                await wait_for(lambda: client.find("fieldhub-unit-p-7", "a-f-G-U-C"), timeout=10)
            finally:
                await client.close()


async def test_through_the_real_hub_a_tak_user_is_stored_and_not_echoed(hub: RunningHub, tmp_path: Path) -> None:
    """The whole path with the real pipeline and PostgreSQL: the user is registered on a unit of kind "tak" by
    ``on_new_user`` (as the composition root will), its fix is committed, and its unit is not sent back to TAK."""

    async def register(device_id: str, callsign: str, team: str | None) -> None:
        await hub.put_unit(device_id, [device_id], kind="tak", name=callsign)

    device_id = cot.device_id_for("ANDROID-77aa")
    await hub.put_unit("p-7", [], name="Patrol 7")
    with taky_server(tmp_path) as server:
        async with TakGateway(server.url, submit=hub.hub.pipeline.submit, interval_s=1.0, poll_s=0.2,
                              units_source=lambda: hub.hub.live.snapshot(NOW()), incidents_source=list,
                              on_new_user=register) as gw:
            await wait_for(lambda: gw.connected, timeout=15)
            client = await CotClient.connect(server)
            try:
                await asyncio.sleep(0.3)
                await client.send(atak_pli("ANDROID-77aa", "HAWK 2", 34.2401, 117.1702))
                await wait_for(lambda: hub.count("SELECT count(*) FROM fixes WHERE device_id = %s", device_id),
                               timeout=15)
                assert hub.hub.live.units[device_id].kind == "tak"
                await asyncio.sleep(1.5)  # a few feed rounds with the TAK user's unit in the live picture
                assert not client.find(cot.unit_uid(device_id))
                assert gw.counters["fixes"] == 1 and gw.counters["new_users"] == 1
            finally:
                await client.close()


async def test_lan_multicast_without_a_server() -> None:
    """``udp://239.2.3.1:<port>``, ATAK's SA multicast (on a test port): the unit goes to the group, a TAK user's
    report from the group comes back as a fix, and the gateway's own events looped back are refused as its own."""
    with socket.socket() as probe:  # a port no other test or TAK app on this host uses
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    group = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    group.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    group.bind(("239.2.3.1", port))
    group.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                     socket.inet_aton("239.2.3.1") + socket.inet_aton("0.0.0.0"))
    group.setblocking(False)
    heard: list[bytes] = []

    def listen() -> bool:
        with contextlib.suppress(BlockingIOError):
            while True:
                heard.append(group.recv(65_535))
        return any(b"fieldhub-unit-p-7" in datagram for datagram in heard)

    feed, submit = Feed(), Submitted()
    try:
        async with gateway(f"udp://239.2.3.1:{port}", feed, submit) as gw:
            await wait_for(listen, timeout=10)
            group.sendto(atak_pli("ANDROID-mc1", "OWL 3", 34.2, 117.3), ("239.2.3.1", port))
            topic = device_topic(cot.device_id_for("ANDROID-mc1"), "telemetry")
            await wait_for(lambda: any(t == topic for t, _ in submit.messages), timeout=10)
            assert gw.rejects["own_uid"] >= 1 and set(gw.rejects) == {"own_uid"}
        heard.clear()
        async with gateway(f"udp+wo://239.2.3.1:{port}", feed, submit) as gw:  # send only: nothing is read
            await wait_for(listen, timeout=10)
            assert gw.rejects == {} and gw.counters["connects"] == 1
    finally:
        group.close()


async def test_a_hostile_stream_costs_only_its_own_events() -> None:
    """A peer on the TCP side that sends garbage, an entity bomb, 100 KB without an end tag and a stale report
    between good ones: each bad event is refused by reason, the good ones after it still become fixes, and the
    end of the stream is noticed (the gateway reconnects)."""
    good = [atak_pli(f"ANDROID-{i}", f"U{i}", 34.0 + i / 100, 117.0) for i in range(3)]
    bomb = b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "xxxxxxxxxx"><!ENTITY b "&a;&a;&a;">]><event>&b;</event>'
    stale = good[0].replace(b"ANDROID-0", b"ANDROID-9").replace(b"stale='", b"stale='2001")
    stream = b"".join([good[0], b"<event uid='x'><point lat=</event>", bomb, good[1], b"<e>" + b"x" * 100_000,
                       b"</event>", stale, good[2]])

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(stream)
        await writer.drain()
        await asyncio.sleep(1.0)  # what the gateway sends meanwhile is read by nobody; then the stream ends
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    feed, submit = Feed(), Submitted()
    try:
        async with gateway(f"tcp://127.0.0.1:{port}", feed, submit) as gw:
            fixes = lambda: {t for t, _ in submit.messages if t.endswith("/telemetry")}  # noqa: E731
            await wait_for(lambda: len(fixes()) == 3 and gw.counters["disconnects"] >= 1, timeout=10)
            assert fixes() == {device_topic(cot.device_id_for(f"ANDROID-{i}"), "telemetry") for i in range(3)}
            assert {"bad_xml", "forbidden_xml", "too_large"} <= set(gw.rejects)
            assert gw.rejects["bad_time"] + gw.rejects["stale"] >= 1
    finally:
        server.close()
        await server.wait_closed()


PLI = atak_pli("ANDROID-fz", "FUZZ", 34.2, 117.3)


@st.composite
def hostile_events(draw: st.DrawFn) -> bytes:
    """Bytes as they come off the wire: random, or a real report cut, spliced or with a field's value replaced."""
    kind = draw(st.sampled_from(["random", "cut", "splice", "value"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    at = draw(st.integers(0, len(PLI)))
    if kind == "cut":
        return PLI[:at]
    if kind == "splice":
        return PLI[:at] + draw(st.binary(min_size=1, max_size=12)) + PLI[at:]
    field = draw(st.sampled_from([b"lat='34.2'", b"battery='77'", b"type='a-f-G-U-C'", b"uid='ANDROID-fz'",
                                  b"course='87.5'", b"ce='4.9'"]))
    value = draw(st.sampled_from([b"NaN", b"-1", b"1e400", b"", b"&#0;", b"\xff", b"b-a-o-tbl", b"fieldhub-x"]))
    return PLI.replace(field, field.split(b"=")[0] + b"='" + value + b"'")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_events(), min_size=1, max_size=4))
def test_every_hostile_event_is_accounted_for_once(events: list[bytes]) -> None:
    submit = Submitted()
    gw = TakGateway("tcp://127.0.0.1:9", submit=submit, units_source=list, incidents_source=list)

    async def feed() -> None:
        for raw in events:
            await gw.on_event(raw)

    asyncio.run(feed())
    outcomes = (sum(gw.rejects.values()) + sum(gw.ignored.values()) + gw.counters["fixes"] + gw.counters["sos_in"]
                + gw.counters["sos_cancelled_in"])
    assert outcomes == len(events) and "internal" not in gw.rejects
    assert len(submit.messages) == gw.counters["fixes"] + gw.counters["sos_in"]
