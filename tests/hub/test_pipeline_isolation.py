"""One bad message is only its own: regressions of issue 12 against a real Mosquitto and PostgreSQL.

Defect 1: a NUL character the database refuses held the writer's batch forever.
Defect 2: a payload that made a stage raise (deep nesting) dropped the rest of its cut.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from devices.clock import now_ms
from devices.payloads import Fix
from hub.ingest.live import LiveState
from hub.ingest.pipeline import Message, Pipeline
from hub.ingest.writer import BatchWriter
from hub.storage import Database
from tests.conftest import RunningHub, wait_for
from tests.hub.test_ingest import raw_publisher

DEEP = b"[" * 5000
GOOD_DEVICES = [f"good-{n}" for n in range(10)]


def fix(ts: int, **extra: object) -> bytes:
    return json.dumps({"ts": ts, "lat": 34.2, "lon": 117.1, **extra}).encode()


def topic(device: str, channel: str = "telemetry") -> str:
    return f"fieldhub/v1/dev/{device}/{channel}"


async def count(hub: RunningHub, query: str, *params: object) -> int:
    return await hub.count(query, *params)


async def settled(hub: RunningHub) -> bool:
    return hub.hub.pipeline.inbox_depth == 0 and hub.hub.writer.pending_rows == 0


# ----------------------------------------------------------- pipeline alone
class FragileLive(LiveState):
    """The live picture with a bug that strikes one device: a stand-in for any unforeseen failure."""

    def apply_fix(self, device_id: str, f: Fix, now_ms: int) -> bool:
        if device_id == "good-3" and self.fragile:
            raise RuntimeError("state \x00 broke")
        return super().apply_fix(device_id, f, now_ms)

    fragile = False


@asynccontextmanager
async def pipeline_on(database_url: str, devices: list[str]) -> AsyncIterator[Pipeline]:
    """A pipeline over a real database and writer, driven by hand (no broker): every submit lands in one cut."""
    live = FragileLive()
    live.register_unit("U", "U", "patrol", devices)
    async with Database(database_url) as db, BatchWriter(db.write, interval_s=0.01, retry_s=0.1) as writer:
        pipeline = Pipeline(live, writer)
        pipeline.db = db  # type: ignore[attr-defined]  # for the assertions below
        yield pipeline


async def test_a_message_that_makes_a_stage_raise_costs_only_itself(database_url: str) -> None:
    async with pipeline_on(database_url, [*GOOD_DEVICES, "bad-1"]) as pipeline:
        t0 = now_ms() - 60_000
        future = None
        for i in range(400):
            if i % 100 == 50:
                future = pipeline.submit(topic("bad-1"), DEEP, 1)
            future = pipeline.submit(topic(GOOD_DEVICES[i % 10]), fix(t0 + i), 1)
        assert pipeline.inbox_depth == 404
        pipeline._process_cut(max_messages=10_000)  # one cut holds them all
        assert future is not None
        await asyncio.wait_for(future, 10)
        db: Database = pipeline.db  # type: ignore[attr-defined]
        assert await db.scalar("SELECT count(*) FROM fixes") == 400
        assert await db.scalar("SELECT count(*) FROM rejects WHERE device_id = 'bad-1'") == 4
        assert await db.scalar("SELECT count(*) FROM rejects WHERE device_id <> 'bad-1'") == 0
        assert pipeline.rejects_total() == 4
        assert pipeline.fixes_accepted == 400


async def test_a_raising_listener_or_stage_rejects_that_message_as_internal(database_url: str) -> None:
    async with pipeline_on(database_url, GOOD_DEVICES) as pipeline:
        t0 = now_ms() - 60_000
        seen: list[str] = []

        def picky(m: Message) -> None:
            seen.append(m.device_id)
            raise ValueError("listener broke")

        pipeline.accepted.connect(picky)
        assert isinstance(pipeline.live, FragileLive)
        pipeline.live.fragile = True
        future = None
        for i in range(100):
            future = pipeline.submit(topic(GOOD_DEVICES[i % 10]), fix(t0 + i), 1)
        pipeline._process_cut()
        assert future is not None
        await asyncio.wait_for(future, 10)
        db: Database = pipeline.db  # type: ignore[attr-defined]
        assert await db.scalar("SELECT count(*) FROM fixes") == 90
        assert pipeline.rejects == {"internal": 10}
        detail = await db.scalar("SELECT detail FROM rejects WHERE device_id = 'good-3' LIMIT 1")
        assert "RuntimeError" in detail and "\x00" not in detail
        assert len(seen) == 90  # the listener saw every accepted message; its failure rejected none


# ------------------------------------------------------------- end to end
async def test_deep_nesting_in_the_same_cuts_as_good_fixes_loses_none(hub: RunningHub) -> None:
    for n in range(0, 10, 2):
        await hub.put_unit(f"G{n}", GOOD_DEVICES[n:n + 2])
    await hub.put_unit("BAD", ["bad-1"])
    client = await raw_publisher(hub.hub.mqtt_url or "", "deep-sender")
    t0 = now_ms() - 60_000
    for i in range(400):
        if i % 100 == 50:
            client.publish(topic("bad-1"), DEEP, qos=1)
        client.publish(topic(GOOD_DEVICES[i % 10]), fix(t0 + i), qos=1)
    await wait_for(lambda: _is(count(hub, "SELECT count(*) FROM fixes"), 400), timeout=20)
    await wait_for(lambda: _is(count(hub, "SELECT count(*) FROM rejects WHERE device_id = 'bad-1'"), 4))
    reasons = await hub.hub.db.scalar("SELECT array_agg(DISTINCT reason) FROM rejects WHERE device_id = 'bad-1'")
    assert all(reasons)
    assert (await hub.api.get("/healthz")).json()["database"] is True
    client.publish(topic("good-0"), fix(t0 + 1000), qos=1)
    await wait_for(lambda: _is(count(hub, "SELECT count(*) FROM fixes"), 401))
    await client.disconnect()


async def test_nul_characters_never_stall_ingest(hub: RunningHub) -> None:
    await hub.put_unit("GOOD", ["good-0"])
    await hub.put_unit("BAD", ["bad-1"])
    client = await raw_publisher(hub.hub.mqtt_url or "", "nul-sender")
    t0 = now_ms() - 30_000
    hostile = [
        ("telemetry", fix(t0, x="a\u0000b")),  # json.dumps writes the escape \u0000
        ("telemetry", fix(t0 + 1, **{"k\u0000": 1})),
        ("status", json.dumps({"ts": t0, "state": "online", "fw": "1.\u00002"}).encode()),
        ("event", json.dumps({"ts": t0, "type": "ptt", "on": True, "note": "x\u0000"}).encode()),
    ]
    for i, (channel, payload) in enumerate(hostile):
        client.publish(topic("good-0"), fix(t0 + 10 * i), qos=1)
        client.publish(topic("bad-1", channel), payload, qos=1)
        client.publish(topic("good-0"), fix(t0 + 10 * i + 5), qos=1)
    await wait_for(lambda: _is(count(hub, "SELECT count(*) FROM rejects WHERE device_id = 'bad-1'"), 4), timeout=20)
    await wait_for(lambda: _is(count(hub, "SELECT count(*) FROM fixes WHERE device_id = 'good-0'"), 8))
    assert await count(hub, "SELECT count(*) FROM fixes WHERE device_id = 'bad-1'") == 0
    assert await count(hub, "SELECT count(*) FROM device_status WHERE device_id = 'bad-1'") == 0
    assert await count(hub, "SELECT count(*) FROM device_events WHERE device_id = 'bad-1'") == 0
    assert (await hub.api.get("/healthz")).json()["database"] is True
    # Later fixes from anyone are stored, and acknowledged (the broker has nothing left for the hub).
    for i in range(20):
        client.publish(topic("good-0"), fix(t0 + 1000 + i), qos=1)
    await wait_for(lambda: _is(count(hub, "SELECT count(*) FROM fixes WHERE device_id = 'good-0'"), 28))
    await wait_for(lambda: settled(hub))
    await client.disconnect()


async def _is(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]
