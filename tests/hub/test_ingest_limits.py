"""Limits at the edge of ingest, against a real Mosquitto and PostgreSQL: per-device rate limits, the
inbox's caps, and the writer's back-pressure. Memory stays bounded and no other device pays."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from devices.clock import now_ms
from hub.domain.ratelimit import Limit
from hub.ingest.live import LiveState
from hub.ingest.pipeline import QOS1_HEADROOM, Pipeline
from hub.ingest.writer import BatchWriter
from hub.storage import Database
from tests.conftest import RunningHub, wait_for
from tests.hub.test_ingest import raw_publisher

LIMITS = {"telemetry": Limit(20.0, 100), "fixes": Limit(200.0, 10_000), "status": Limit(1.0, 10),
          "event": Limit(2.0, 20)}


def fix(ts: int) -> bytes:
    return json.dumps({"ts": ts, "lat": 34.2, "lon": 117.1}).encode()


def topic(device: str, channel: str = "telemetry") -> str:
    return f"fieldhub/v1/dev/{device}/{channel}"


@asynccontextmanager
async def parts(database_url: str, devices: list[str], *, writer_running: bool = True, max_pending_rows: int = 500_000,
                **options: Any) -> AsyncIterator[tuple[Pipeline, BatchWriter, Database]]:
    live = LiveState()
    live.register_unit("U", "U", "patrol", devices)
    async with Database(database_url) as db:
        writer = BatchWriter(db.write, interval_s=0.01, max_pending_rows=max_pending_rows)
        pipeline = Pipeline(live, writer, **options)
        if writer_running:
            async with writer:
                yield pipeline, writer, db
        else:
            yield pipeline, writer, db


async def test_a_flooding_device_is_limited_and_counted_while_another_loses_nothing(hub: RunningHub) -> None:
    await hub.put_unit("F", ["flood-1", "calm-1"])
    pipeline = hub.hub.pipeline
    pipeline.drops.window_ms = 3000  # the summary of the flood closes sooner than the default 10 s
    client = await raw_publisher(hub.hub.mqtt_url or "", "flooder")
    t0 = now_ms() - 60_000
    burst = hub.hub.settings.device_telemetry_burst  # the defaults: 20 messages/s, a burst of 1000
    flood = 3 * burst
    for i in range(flood):
        client.publish(topic("flood-1"), fix(t0 + i), qos=1)
        if i % 25 == 0:
            client.publish(topic("calm-1"), fix(t0 + i), qos=1)
    await wait_for(lambda: pipeline.messages["telemetry"] >= flood + flood // 25, timeout=20)
    await wait_for(lambda: _is(hub.count("SELECT count(*) FROM fixes WHERE device_id = 'calm-1'"), flood // 25))

    async def accounted() -> tuple[int, int] | None:
        # Every flood message is either stored or counted as limited; the last admitted ones may still be on
        # their way through the writer when the counters are read, so wait for the sum (never above it).
        stored = await hub.count("SELECT count(*) FROM fixes WHERE device_id = 'flood-1'")
        limited = pipeline.rejects.get("rate_limited", 0)
        assert stored + limited <= flood, (stored, limited)
        return (stored, limited) if stored + limited == flood else None

    stored, limited = await wait_for(accounted, timeout=10)
    assert burst <= stored <= burst + 200  # the burst, plus 20/s for the few seconds the flood took at most
    # Counted one by one, stored as one summary row per device and channel per window.
    summary = "SELECT count(*) FROM rejects WHERE reason = 'rate_limited'"
    await wait_for(lambda: _is(hub.count(summary), 1), timeout=10)
    async with hub.hub.db.pool.connection() as conn:
        cur = await conn.execute("SELECT device_id, detail, raw FROM rejects WHERE reason = 'rate_limited'")
        device, detail, raw = await cur.fetchone()  # type: ignore[misc]
    assert device == "flood-1" and detail.startswith(f"{limited} telemetry messages dropped")
    # The first one dropped: right after the burst, unless the bucket refilled while the flood was still arriving.
    assert t0 + burst <= json.loads(bytes(raw))["ts"] <= t0 + stored
    assert await hub.count("SELECT count(*) FROM rejects WHERE device_id = 'calm-1'") == 0
    metrics = (await hub.api.get("/metrics")).text
    assert f'fieldhub_rejects_total{{reason="rate_limited"}} {float(limited)}' in metrics
    await client.disconnect()


async def test_the_fix_bucket_passes_a_store_and_forward_upload_within_its_burst(database_url: str) -> None:
    async with parts(database_url, ["sf-1"], rate_limits=LIMITS) as (pipeline, _, db):
        t0 = now_ms() - 3_600_000
        future = None
        for b in range(11):  # 11,000 fixes in 11 messages: the burst is 10,000
            batch = [{"ts": t0 + b * 1000 + i, "lat": 34.2, "lon": 117.1} for i in range(1000)]
            future = pipeline.submit(topic("sf-1"), json.dumps(batch).encode(), 1)
        pipeline._process_cut()
        assert future is not None
        await asyncio.wait_for(future, 10)
        assert await db.scalar("SELECT count(*) FROM fixes") == 10_000
        assert pipeline.rejects == {"rate_limited": 1}
        await pipeline.drain()  # closes the open summary
        await wait_for(lambda: _is(db.scalar("SELECT count(*) FROM rejects WHERE reason = 'rate_limited'"), 1))


async def test_status_and_event_floods_are_limited_per_channel(database_url: str) -> None:
    async with parts(database_url, ["chatty"], rate_limits=LIMITS) as (pipeline, _, db):
        t0 = now_ms() - 1000
        for i in range(50):
            pipeline.submit(topic("chatty", "status"), json.dumps({"ts": t0 + i, "state": "online"}).encode(), 0)
            pipeline.submit(topic("chatty", "event"), json.dumps({"ts": t0 + i, "type": "ptt", "on": True}).encode(), 0)
        future = pipeline.submit(topic("chatty"), fix(t0), 1)
        pipeline._process_cut()
        assert future is not None
        await asyncio.wait_for(future, 10)
        assert await db.scalar("SELECT count(*) FROM device_status") == 10  # the status burst
        assert await db.scalar("SELECT count(*) FROM device_events") == 20  # the event burst
        assert await db.scalar("SELECT count(*) FROM fixes") == 1  # telemetry has a bucket of its own
        assert pipeline.rejects == {"rate_limited": 40 + 30}
        await pipeline.drain()
        await wait_for(lambda: _is(db.scalar("SELECT count(*) FROM rejects WHERE reason = 'rate_limited'"), 2))


async def test_the_backlog_a_broker_delivers_after_a_reconnect_is_not_rate_limited(database_url: str) -> None:
    async with parts(database_url, ["d1"], rate_limits=LIMITS) as (pipeline, _, db):
        pipeline.catch_up()  # what the bridge does on every (re)connect
        t0 = now_ms() - 600_000
        future = None
        for i in range(600):  # ten minutes of 1 Hz fixes the broker held while the hub was away
            future = pipeline.submit(topic("d1"), fix(t0 + i * 1000), 1)
        pipeline._process_cut()
        assert future is not None
        await asyncio.wait_for(future, 10)
        assert await db.scalar("SELECT count(*) FROM fixes") == 600 and pipeline.rejects == {}


async def test_a_flood_while_the_backlog_arrives_is_still_limited(database_url: str) -> None:
    async with parts(database_url, ["d1"], rate_limits=LIMITS) as (pipeline, _, db):
        pipeline.catch_up()
        t0 = now_ms() - 600_000
        for i in range(6000):  # more than the widened burst (50 x 100)
            pipeline.submit(topic("d1"), fix(t0 + i), 1)
        await pipeline.drain()
        await wait_for(lambda: pipeline.writer.pending_rows == 0)
        stored = int(await db.scalar("SELECT count(*) FROM fixes"))
        assert stored + pipeline.rejects["rate_limited"] == 6000
        assert 5000 <= stored < 5600  # the widened burst, plus 1,000/s for the moments the submits took


async def test_qos0_beyond_the_inbox_is_dropped_as_one_summary_and_qos1_beyond_the_hard_cap_is_not_acked(
        database_url: str) -> None:
    async with parts(database_url, ["d1"], inbox_limit=10) as (pipeline, _, db):
        t0 = now_ms() - 1000
        accepted = [pipeline.submit(topic("d1"), fix(t0 + i), 1) for i in range(10)]
        assert all(f is not None for f in accepted)
        assert [pipeline.submit(topic("d1"), fix(t0 + 100 + i), 0) for i in range(5)] == [None] * 5
        assert pipeline.inbox_depth == 10 and pipeline.rejects == {"overload": 5}
        more = [pipeline.submit(topic("d1"), fix(t0 + 200 + i), 1) for i in range(QOS1_HEADROOM)]
        assert all(f is not None for f in more)  # a compliant broker never sends more than this
        assert pipeline.submit(topic("d1"), fix(t0 + 999_999), 1) is None
        assert pipeline.qos1_refused == 1
        await pipeline.drain()
        await asyncio.wait_for(more[-1], 30)  # type: ignore[arg-type]
        assert await db.scalar("SELECT count(*) FROM fixes") == 10 + QOS1_HEADROOM
        await wait_for(lambda: _is(db.scalar("SELECT count(*) FROM rejects"), 1))
        assert await db.scalar("SELECT detail FROM rejects") == "5 QoS 0 messages dropped: the inbox was full"


async def test_a_full_writer_stops_the_pipeline_until_it_has_room(database_url: str) -> None:
    async with parts(database_url, ["d1", "d2"], writer_running=False, max_pending_rows=100) as (
            pipeline, writer, db), pipeline:
        t0 = now_ms() - 1000
        for i in range(150):
            pipeline.submit(topic(f"d{1 + i % 2}"), fix(t0 + i), 1)
        await wait_for(lambda: writer.pending_rows == 150)
        last = None
        for i in range(150, 300):
            last = pipeline.submit(topic(f"d{1 + i % 2}"), fix(t0 + i), 1)
        await asyncio.sleep(0.3)
        assert pipeline.inbox_depth == 150 and writer.pending_rows == 150  # held back: no PUBACKs
        async with writer:  # the database writes again
            assert last is not None
            await asyncio.wait_for(last, 10)
            assert pipeline.inbox_depth == 0
        assert await db.scalar("SELECT count(*) FROM fixes") == 300


async def _is(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]
