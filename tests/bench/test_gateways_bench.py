"""The gateways benchmark's pure parts: the report maths, the terminals' frames, and a terminal against a real
TCP platform written here with the same codec (no hub)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.gateway_cost import HttpGenerator, OwnTracksGenerator, owntracks_location
from bench.gateways_report import (
    cpu_s_per_1000_per_min,
    differences,
    markdown,
    merge_tallies,
    ratios,
    rss_mib_per_1000,
    table,
    us_per_fix,
)
from bench.jt808_terminals import BATCH_SIZE, Tally, Terminal, batch_body, location_at, registration_body
from hub.gateways.osmand.codec import decode_query
from hub.gateways.owntracks import codec as owntracks
from jt808.codec import decode_message, encode_message
from jt808.frame import Deframer
from jt808.location import BatchLocation, Location, to_fix
from jt808.messages import (
    MSG_AUTHENTICATION,
    MSG_LOCATION,
    RESULT_FAILURE,
    RESULT_OK,
    Authentication,
    Heartbeat,
    PlatformResponse,
    Registration,
    RegistrationResponse,
)


def test_cpu_per_1000_per_minute() -> None:
    assert cpu_s_per_1000_per_min(0.5, 5000) == 6.0  # half a core = 30 CPU-s a minute, for 5 thousands
    assert cpu_s_per_1000_per_min(0.5, 0) == 0.0


def test_rss_per_1000_against_idle() -> None:
    assert rss_mib_per_1000(300.0, 200.0, 5000) == 20.0
    assert rss_mib_per_1000(None, 200.0, 5000) is None
    assert rss_mib_per_1000(300.0, 200.0, 0) is None


def test_us_per_fix_subtracts_the_idle_hub() -> None:
    # 12 CPU-s in 60 s with an idle hub at 0.05 cores: 9 CPU-s for 12,000 fixes = 750 µs each
    assert us_per_fix(12.0, 0.05, 60.0, 12_000) == 750.0
    assert us_per_fix(12.0, 0.05, 60.0, 0) is None
    assert us_per_fix(1.0, 0.05, 60.0, 1000) == -2000.0  # noise shown, not hidden


def test_ratios_to_mqtt() -> None:
    got = ratios({"mqtt": 100.0, "jt808": 250.0, "osmand": None})
    assert got == {"mqtt": 1.0, "jt808": 2.5, "osmand": None}
    assert ratios({"mqtt": None, "jt808": 250.0}) == {"mqtt": None, "jt808": None}
    assert ratios({"mqtt": 0.0, "jt808": 250.0})["jt808"] is None


def test_merge_tallies() -> None:
    a = {"connected": 2, "sent": {"0200": 10}, "ok": {"0200": 9}, "failed": {"0200_result_1": 1},
         "failures": {}, "positions_sent": 10, "positions_ok": 9}
    b = {"connected": 3, "sent": {"0200": 5, "0704": 1}, "ok": {"0200": 5}, "failed": {},
         "failures": {"closed": 1}, "positions_sent": 10, "positions_ok": 5}
    got = merge_tallies([a, b])
    assert got["connected"] == 5 and got["positions_sent"] == 20 and got["positions_ok"] == 14
    assert got["sent"] == {"0200": 15, "0704": 1} and got["failures"] == {"closed": 1}


def test_location_frames_round_trip_and_make_fixes() -> None:
    ts = 1_765_000_000
    frame = encode_message(location_at(7, ts, 3), phone="13900000007", serial=9)
    (packet,) = Deframer().feed(frame)
    assert isinstance(packet, bytes)
    message = decode_message(packet)
    assert message.header.phone == "13900000007" and message.header.msg_id == MSG_LOCATION
    assert isinstance(message.body, Location)
    fix = to_fix(message.body)
    assert fix.ts == ts * 1000 and 34.0 < fix.lat < 34.6 and 116.9 < fix.lon < 117.5


def test_batch_positions_are_a_second_apart_ending_at_the_time_given() -> None:
    batch = batch_body(3, 1_765_000_000, 0)
    (packet,) = Deframer().feed(encode_message(batch, phone="13900000003", serial=1))
    assert isinstance(packet, bytes)
    body = decode_message(packet).body
    assert isinstance(body, BatchLocation) and body.kind == 1 and not body.rejected
    assert [to_fix(loc).ts // 1000 for loc in body.locations] == list(range(1_765_000_000 - BATCH_SIZE + 1,
                                                                            1_765_000_001))


def test_registration_fits_a_2013_body() -> None:
    (packet,) = Deframer().feed(encode_message(registration_body(123_456), phone="1", serial=0))
    assert isinstance(packet, bytes)
    body = decode_message(packet).body
    assert isinstance(body, Registration) and body.terminal_id == "T123456"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_a_terminal_survives_any_bytes_from_the_platform(data: bytes) -> None:
    tally = Tally()
    terminal = Terminal(0, "13900000001", tally)
    terminal.data_received(data)  # counted, never raised
    assert sum(tally.failures.values()) + sum(tally.failed.values()) + sum(tally.ok.values()) >= 0


async def _platform(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A tiny JT/T 808 platform: code "secret" on registration, result 0 for everything, but a wrong code fails."""
    deframer = Deframer()
    serial = 0
    while data := await reader.read(4096):
        for item in deframer.feed(data):
            assert isinstance(item, bytes)
            message = decode_message(item)
            header, body = message.header, message.body
            answer: RegistrationResponse | PlatformResponse
            if isinstance(body, Registration):
                answer = RegistrationResponse(header.serial, RESULT_OK, "secret")
            elif isinstance(body, Authentication):
                answer = PlatformResponse(header.serial, MSG_AUTHENTICATION,
                                          RESULT_OK if body.code == "secret" else RESULT_FAILURE)
            else:
                answer = PlatformResponse(header.serial, header.msg_id, RESULT_OK)
            writer.write(encode_message(answer, phone=header.phone, serial=serial))
            serial += 1
    writer.close()


async def test_a_terminal_registers_authenticates_and_counts_answers() -> None:
    server = await asyncio.start_server(_platform, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tally = Tally()
    terminal = Terminal(1, "13900000001", tally)
    try:
        await asyncio.get_running_loop().create_connection(lambda: terminal, "127.0.0.1", port)
        terminal.register()
        await asyncio.wait_for(terminal.authenticated.wait(), 5)
        assert not terminal.lost.is_set() and terminal.code == "secret"
        terminal.report(batch=False)
        terminal.report(batch=True)
        terminal.send(Heartbeat(), "0002")
        deadline = time.monotonic() + 5
        while tally.ok["0002"] < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        terminal.close()
        server.close()
        await server.wait_closed()
    assert tally.sent == {"0100": 1, "0102": 1, "0200": 1, "0704": 1, "0002": 1}
    assert tally.ok == tally.sent
    assert tally.positions_sent == tally.positions_ok == 1 + BATCH_SIZE
    assert not tally.failures and not tally.failed


def test_the_report_renders_a_partial_result() -> None:
    result = {"machine": {"date": "2026-12-06 04:00:00 UTC", "cpu": "Test CPU", "cores": 2, "ram_gib": 8.0,
                          "kernel": "Linux", "python": "3.11", "load_average_at_start": [0.1, 0.1, 0.1]},
              "command": "fieldhub bench gateways --terminals 10",
              "fleet": {"error": "BenchError: boom"},
              "cost": {"rate": 20, "seconds": 5, "devices_per_path": 20, "idle_cores": {"hub": 0.02},
                       "paths": {"mqtt": {"sent": 100, "fixes_stored": 100, "rows": 100,
                                          "us_per_fix": {"hub": 400.0, "broker": 50.0, "postgres": 90.0}},
                                 "osmand": {"error": "BenchError: refused"}},
                       "ratio_to_mqtt": {"mqtt": 1.0}}}
    text = table(result)
    assert "Test CPU, 2 cores" in text and "fleet part FAILED" in text and "400 µs per fix (1 x MQTT)" in text
    assert "OsmAnd HTTP" in text and "FAILED: BenchError: refused" in text
    assert markdown(result).count("\n| ") >= 4


def test_the_report_renders_a_whole_fleet() -> None:
    cores = {"samples": 20, "mean_cores": 0.031, "p95_cores": 0.049}
    fleet = {"terminals": 200, "provision_s": 2.1, "idle": {"cpu": {"hub": cores}, "hub_rss_mib": 164.2},
             "registration": {"authenticated": 200, "all_authenticated_s": 4.1, "terminal_side_s": 1.7,
                              "failures": {}, "cpu": {"hub": cores}, "hub_cpu_seconds": 0.5,
                              "machine_busy_cores": 1.9},
             "steady": {"seconds": 20.0, "connected": 200, "cpu": {"hub": cores, "postgres": cores,
                                                                   "terminals0": cores},
                        "machine_busy_cores": 1.9, "hub_rss_mib": 166.8, "hub_rss_peak_mib": 167.0,
                        "hub_cpu_s_per_1000_per_min": cpu_s_per_1000_per_min(0.031, 200),
                        "hub_rss_mib_per_1000": rss_mib_per_1000(166.8, 164.2, 200), "positions_sent": 410,
                        "positions_ok": 410, "fixes_stored": 410, "fixes_per_s": 20.5},
             "totals": {"positions_sent": 765, "positions_ok": 765, "fixes_in_database": 765, "loss": 0,
                        "sent": {"0200": 735, "0704": 6}, "ok": {"0200": 735, "0704": 6}, "failed": {},
                        "failures": {}, "hub": {"jt808_events_total{event=fixes}": 765.0}}}
    result = {"machine": {"date": "d", "cpu": "c", "cores": 2, "ram_gib": 8.0, "kernel": "k", "python": "3.11",
                          "load_average_at_start": [0.0]}, "command": "fieldhub bench gateways", "fleet": fleet}
    text = table(result)
    assert "9.3 CPU-s per 1,000 terminals per minute" in text and "13.0 MiB per 1,000 terminals" in text
    assert "765 counted by the gateway, 765 rows in fixes; loss 0" in text


def _args(kind: str, logins: Path) -> argparse.Namespace:
    return argparse.Namespace(kind=kind, devices=3, device_prefix="gwc-x-", logins=logins, rate=10.0, duration=1.0,
                              qos=1, hub_url="http://127.0.0.1:1", url="mqtt://127.0.0.1:1")


async def test_the_phone_reports_are_what_the_hub_codecs_accept(tmp_path: Path) -> None:
    logins = tmp_path / "logins.json"
    logins.write_text(json.dumps({f"gwc-x-{k:05d}": f"secret-{k}" for k in range(3)}))
    osmand = HttpGenerator(_args("osmand", logins))
    await osmand.connect()
    first, second = osmand.request(0), osmand.request(3)  # the same device twice: its times strictly increase
    report, later = decode_query(first.url.query), decode_query(second.url.query)
    assert first.method == "POST" and first.url.path == "/gateway/osmand"
    assert report.device_id == "gwc-x-00000" and later.fix.ts > report.fix.ts
    assert first.url.params["key"] == "secret-0"
    phone = HttpGenerator(_args("owntracks_http", logins))
    await phone.connect()
    request = phone.request(1)
    assert request.url.path == "/gateway/owntracks"
    assert base64.b64decode(request.headers["authorization"].split()[1]) == b"gwc-x-00001:secret-1"
    message = owntracks.decode(request.content)
    assert isinstance(message, owntracks.Location) and 34.0 < message.fix.lat < 35.0
    mqtt = OwnTracksGenerator(_args("owntracks_mqtt", logins))
    assert mqtt.topics[2].endswith(b"owntracks/gwc-x-00002/phone")
    published = owntracks.decode(owntracks_location(2, 1, 1_765_000_000, "t"))
    assert isinstance(published, owntracks.Location) and published.fix.ts == 1_765_000_000_000
    for client in (osmand.client, phone.client):
        assert client is not None
        await client.aclose()


def test_differences_say_where_positions_went() -> None:
    same = {"positions_sent": 10, "positions_ok": 10, "fixes_in_database": 10, "failed": {}}
    assert differences(same) == []
    (row,) = differences({**same, "positions_ok": 8, "fixes_in_database": 7, "failed": {"0200_result_1": 2}})
    assert "sent - answered 0 = 2 (answered otherwise: 0200_result_1 2); answered 0 - rows = 1" in row[1]
