"""Ingest end to end against a real Mosquitto and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json

from gmqtt import Client as MqttClient

from devices.broker import BrokerAddress
from devices.client import DeviceClient
from devices.clock import now_ms
from devices.payloads import Fix
from tests.conftest import RunningHub, wait_for

TELEMETRY_REJECTS = "SELECT count(*) FROM rejects WHERE right(topic, 10) = '/telemetry'"



async def raw_publisher(url: str, client_id: str) -> MqttClient:
    """A bare MQTT client, for payloads no well-behaved device would send."""
    address = BrokerAddress.parse(url)
    client = MqttClient(client_id)
    client.set_auth_credentials(address.username, address.password)
    await client.connect(address.host, address.port)
    return client


async def test_single_fixes_and_batches_are_stored_and_tracked(hub: RunningHub) -> None:
    await hub.put_unit("P1", ["p1-trk"])
    t0 = now_ms() - 60_000
    async with DeviceClient("p1-trk", await hub.device_url("p1-trk"), kind="vehicle", unit_id="P1") as dev:
        for i in range(5):
            dev.send_fix(Fix(t0 + i * 1000, 34.26 + i * 1e-4, 117.18, acc=5.0, speed=8.0, heading=90.0))
        # A store-and-forward style batch of 300 fixes in one message.
        dev.buffer.extend(Fix(t0 + 10_000 + i * 1000, 34.27, 117.19 + i * 1e-5) for i in range(300))
        assert dev.flush() == 300
        await wait_for(lambda: hub.count(), timeout=10)
        await wait_for(lambda: _equals(hub.count(), 305))
    r = await hub.api.get("/api/v1/units/P1/track", params={"from": t0, "to": t0 + 400_000})
    assert r.status_code == 200
    fixes = r.json()["fixes"]
    assert len(fixes) == 305
    assert [f["ts"] for f in fixes] == sorted(f["ts"] for f in fixes)
    assert fixes[0]["acc"] == 5.0 and fixes[0]["heading"] == 90.0
    unit = (await hub.api.get("/api/v1/units/P1")).json()
    assert unit["position"]["ts"] == t0 + 10_000 + 299 * 1000


async def _equals(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


async def test_duplicates_are_stored_once(hub: RunningHub) -> None:
    await hub.put_unit("P2", ["p2-cam"])
    t0 = now_ms() - 10_000
    client = await raw_publisher(hub.hub.mqtt_url or "", "dup-sender")
    fix = json.dumps({"ts": t0, "lat": 34.2, "lon": 117.2}).encode()
    for _ in range(3):
        client.publish("fieldhub/v1/dev/p2-cam/telemetry", fix, qos=1)
    batch = json.dumps([{"ts": t0, "lat": 34.2, "lon": 117.2}, {"ts": t0 + 1, "lat": 34.2, "lon": 117.2},
                        {"ts": t0 + 1, "lat": 34.2, "lon": 117.2}]).encode()
    client.publish("fieldhub/v1/dev/p2-cam/telemetry", batch, qos=1)
    await wait_for(lambda: hub.hub.pipeline.messages["telemetry"] >= 4)
    await wait_for(lambda: hub.hub.writer.pending_rows == 0 and hub.hub.pipeline.inbox_depth == 0)
    await asyncio.sleep(0.3)
    assert await hub.count() == 2
    assert hub.hub.pipeline.duplicates_dropped + hub.hub.writer.fixes_duplicate == 4  # 6 fixes, 2 distinct
    await client.disconnect()


async def test_out_of_order_fixes_are_all_stored_but_live_keeps_the_newest(hub: RunningHub) -> None:
    await hub.put_unit("P3", ["p3-trk"])
    t0 = now_ms() - 30_000
    async with DeviceClient("p3-trk", await hub.device_url("p3-trk"), unit_id="P3") as dev:
        for ts, lat in [(t0 + 20_000, 34.30), (t0 + 5_000, 34.10), (t0 + 10_000, 34.20), (t0 + 25_000, 34.35),
                        (t0 + 1_000, 34.00)]:
            dev.send_fix(Fix(ts, lat, 117.0))
        await wait_for(lambda: _equals(hub.count(), 5))
    unit = (await hub.api.get("/api/v1/units/P3")).json()
    assert unit["position"]["ts"] == t0 + 25_000 and unit["position"]["lat"] == 34.35


async def test_bad_payloads_are_rejected_with_reasons_while_good_traffic_flows(hub: RunningHub) -> None:
    await hub.put_unit("GOOD", ["good-1"])
    await hub.put_unit("BADU", ["bad-1"])
    t = now_ms() - 5_000
    fix = {"ts": t, "lat": 34.2, "lon": 117.2}
    cases: list[tuple[str, bytes, str]] = [
        ("bad-1", b"{not json", "invalid_json"),
        ("bad-1", b"\xff\xfe garbage", "invalid_json"),
        ("bad-1", json.dumps({"lat": 1, "lon": 2}).encode(), "missing_field"),
        ("bad-1", json.dumps(dict(fix, lat=95)).encode(), "out_of_range"),
        ("bad-1", json.dumps(dict(fix, lon="117")).encode(), "wrong_type"),
        ("bad-1", b'{"ts": 1795000000000, "lat": NaN, "lon": 1}', "non_finite"),
        ("bad-1", b'{"ts": 1795000000000, "lat": 1, "lon": Infinity}', "non_finite"),
        ("bad-1", json.dumps(dict(fix, pad="x" * 300_000)).encode(), "oversized"),
        ("bad-1", json.dumps([dict(fix, ts=t - i) for i in range(1001)]).encode(), "batch_too_large"),
        ("bad-1", json.dumps(dict(fix, ts=int(t / 1000))).encode(), "ts_out_of_window"),
        ("bad-1", b"[]", "empty_batch"),
        ("bad-1", b'"just a string"', "not_object"),
        ("ghost-device", json.dumps(fix).encode(), "unknown_device"),
    ]
    client = await raw_publisher(hub.hub.mqtt_url or "", "bad-sender")
    async with DeviceClient("good-1", await hub.device_url("good-1"), unit_id="GOOD") as good:
        for i, (device, payload, _) in enumerate(cases):
            good.send_fix(Fix(t + i * 100, 34.2, 117.2))
            client.publish(f"fieldhub/v1/dev/{device}/telemetry", payload, qos=1)
            good.send_fix(Fix(t + i * 100 + 50, 34.2, 117.2))
        # A batch with one bad element: the good ones beside it are kept.
        client.publish("fieldhub/v1/dev/bad-1/telemetry",
                       json.dumps([dict(fix, ts=t + 1), dict(fix, ts=t + 2, lat=-91), dict(fix, ts=t + 3)]).encode(),
                       qos=1)
        await wait_for(lambda: _equals(hub.count(), 2 * len(cases) + 2))
        # (Retained statuses of other tests' devices are rejects too: this hub does not know them.)
        await wait_for(lambda: _equals(hub.count(TELEMETRY_REJECTS), len(cases) + 1))
    rows = await _rejects(hub)
    expected = sorted([reason for _, _, reason in cases] + ["out_of_range"])
    assert sorted(r[0] for r in rows) == expected
    assert await hub.count("SELECT count(*) FROM fixes WHERE device_id = 'good-1'") == 2 * len(cases)
    assert await hub.count("SELECT count(*) FROM fixes WHERE device_id = 'bad-1'") == 2
    # Raw bytes are kept, truncated.
    assert await hub.count("SELECT max(length(raw)) FROM rejects") <= 1024
    assert await hub.count("SELECT count(*) FROM rejects WHERE reason = 'oversized' AND size > 262144") == 1
    metrics = (await hub.api.get("/metrics")).text
    assert hub.hub.pipeline.rejects["unknown_device"] >= 1
    assert 'fieldhub_rejects_total{reason="invalid_json"} 2.0' in metrics
    await client.disconnect()


async def _rejects(hub: RunningHub) -> list[tuple[str, str]]:
    async with hub.hub.db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT reason, detail FROM rejects WHERE right(topic, 10) = '/telemetry' ORDER BY reject_id")
        return [(r[0], r[1]) for r in await cur.fetchall()]


async def test_status_events_last_will_and_mqtt_311_device(hub: RunningHub) -> None:
    await hub.put_unit("P4", ["p4-radio"])
    dev = DeviceClient("p4-radio", await hub.device_url("p4-radio"), kind="radio", unit_id="P4", protocol=4)
    await dev.start()
    assert dev.connected
    dev.send_fix(Fix(now_ms(), 34.2, 117.2))
    dev.send_event("ptt", on=True)
    await wait_for(lambda: _equals(hub.count("SELECT count(*) FROM device_events WHERE type = 'ptt'"), 1))
    await wait_for(lambda: hub.hub.live.devices["p4-radio"].state == "online")
    unit = (await hub.api.get("/api/v1/units/P4")).json()
    assert unit["online"] is True and unit["devices"][0]["kind"] == "radio"
    await dev.kill()  # link dropped without DISCONNECT: the broker publishes the Last Will
    await wait_for(lambda: hub.hub.live.devices["p4-radio"].state == "offline")
    unit = (await hub.api.get("/api/v1/units/P4")).json()
    assert unit["online"] is False and unit["status"] == "offline"


async def test_device_offline_uploads_its_backlog_on_reconnect(hub: RunningHub) -> None:
    await hub.put_unit("P5", ["p5-cam"])
    dev = DeviceClient("p5-cam", await hub.device_url("p5-cam"), kind="bodycam", unit_id="P5")
    await dev.start()
    t0 = now_ms() - 600_000
    dev.send_fix(Fix(t0, 34.2, 117.2))
    await wait_for(lambda: _equals(hub.count(), 1))
    await dev.kill()  # into a dead zone
    for i in range(1, 2501):  # ~40 minutes of 1 Hz fixes held on the device
        dev.send_fix(Fix(t0 + i * 200, 34.2 + i * 1e-6, 117.2))
    dev.send_event("sos", ts=t0 + 100_000)  # pressed in the dead zone: arrives late, with its own time
    assert len(dev.buffer) == 2500 and dev.dropped == 0
    await asyncio.sleep(0.5)
    assert await hub.count() == 1
    await dev.start()  # back in coverage: the backlog goes up as batches of <= 1000
    await wait_for(lambda: _equals(hub.count(), 2501), timeout=20)
    assert not dev.buffer
    await wait_for(lambda: _equals(hub.count("SELECT count(*) FROM device_events WHERE ts = %s", t0 + 100_000), 1))
    unit = (await hub.api.get("/api/v1/units/P5")).json()
    assert unit["position"]["ts"] == t0 + 2500 * 200
    await dev.stop()
