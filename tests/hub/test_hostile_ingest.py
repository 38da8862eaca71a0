"""Hostile input through the real broker into the real database: one bad message is only its own problem.

Generated hostile messages (tests/hostile.py) are published on the same connection as good fixes of other
devices, so they share the pipeline's cuts and the writer's transactions. After each example:
- every good fix is stored;
- every hostile message got exactly the verdict the codec gives it on its own (the oracle): each refusal is a
  reject row with its reason, each accepted fix/status/event is stored;
- nothing was refused by the database (`storage_refused`) or failed inside the hub (`internal`): those would
  mean a gap in the codec that only the writer's second line of defence caught;
- the hub is healthy (database up, nothing pending).
The restart test leaves hostile messages queued at the broker (and a retained poison status) while the hub is
down, and kills the hub mid-ingest: redelivered and retained poison must not re-poison it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import payloads
from devices.clock import now_ms
from devices.errors import PayloadError
from hub.config import Settings
from hub.infra.embedded import free_port
from tests.conftest import TOKEN, RunningHub, running_hub, wait_for
from tests.hostile import DAY_MS, good_fix, hostile_message
from tests.hub.test_ingest import _equals, raw_publisher
from tests.hub.test_recovery import start_hub_process, wait_healthy

GOOD_DEVICES = 3
GOOD_PER_HOSTILE = 2
# High enough that no example meets a rate limit: rate limiting has tests of its own.
NO_LIMITS = {f"device_{c}_{k}": v for c in ("telemetry", "fixes", "status", "events")
             for k, v in (("per_s", 1e6), ("burst", 10**7))}


def expected_verdict(channel: str, raw: bytes, received_ms: int, s: Settings) -> tuple[list[str], list[Any]]:
    """What the hub must do with one message of a registered device: (reject reasons, accepted rows' keys)."""
    skew = int(s.max_future_skew_s * 1000)
    try:
        if channel == "telemetry":
            fixes, bad = payloads.decode_fixes(raw, received_ms, max_future_ms=skew)
            oldest = received_ms - s.retention_days * DAY_MS
            reasons = [e.reason for _, e in bad] + ["ts_out_of_window" for f in fixes if f.ts < oldest]
            return reasons, [f.ts for f in fixes if f.ts >= oldest]
        if channel == "status":
            status = payloads.decode_status(raw, received_ms, max_future_ms=skew)
            return [], [(status.ts, status.state)]
        event = payloads.decode_event(raw, received_ms, max_future_ms=skew)
        return [], [(event.ts, event.type)]
    except PayloadError as exc:
        return [exc.reason], []


async def _rows(db_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        cur = await conn.execute(query, params)
        return list(await cur.fetchall())


async def _settled(rh: RunningHub) -> bool:
    p, w = rh.hub.pipeline, rh.hub.writer
    return p.inbox_depth == 0 and w.pending_rows == 0 and w.available


async def _run_example(rh: RunningHub, s: Settings, messages: list[tuple[str, bytes]]) -> None:
    tag = uuid.uuid4().hex[:6]
    good_ids = [f"g{tag}-{i}" for i in range(GOOD_DEVICES)]
    bad_id = f"h{tag}"
    await rh.put_unit(f"G{tag}", good_ids)
    await rh.put_unit(f"H{tag}", [bad_id])
    client = await raw_publisher(s.mqtt_url or "", f"hostile-{tag}")
    expected_reasons: Counter[str] = Counter()
    fixes: set[int] = set()
    statuses: set[tuple[int, str]] = set()
    events: set[tuple[int, str]] = set()
    good = 0
    t0 = now_ms()
    for i, (channel, raw) in enumerate(messages):
        for _ in range(GOOD_PER_HOSTILE):
            device = good_ids[good % GOOD_DEVICES]
            client.publish(f"fieldhub/v1/dev/{device}/telemetry", json.dumps(good_fix(t0, good)).encode(), qos=1)
            good += 1
        client.publish(f"fieldhub/v1/dev/{bad_id}/{channel}", raw, qos=1)
        reasons, keys = expected_verdict(channel, raw, now_ms(), s)
        expected_reasons.update(reasons)
        {"telemetry": fixes, "status": statuses, "event": events}[channel].update(keys)
        if i % 10 == 9:
            await asyncio.sleep(0)  # let gmqtt write; the hub still sees them in shared cuts
    db = s.database_url or ""
    good_query = "SELECT count(*) FROM fixes WHERE device_id = ANY(%s)"
    try:
        await wait_for(lambda: _count(db, good_query, good_ids, want=good), timeout=30)
        await wait_for(lambda: _count(db, "SELECT count(*) FROM rejects WHERE device_id = %s", bad_id,
                                      want=sum(expected_reasons.values())), timeout=30)
        await wait_for(lambda: _settled(rh), timeout=30)
        await asyncio.sleep(0.3)
        got = Counter(r[0] for r in await _rows(db, "SELECT reason FROM rejects WHERE device_id = %s", bad_id))
        assert got == expected_reasons
        assert await _count(db, "SELECT count(*) FROM fixes WHERE device_id = %s", bad_id) == len(fixes)
        assert await _count(db, "SELECT count(*) FROM device_status WHERE device_id = %s", bad_id) == len(statuses)
        assert await _count(db, "SELECT count(*) FROM device_events WHERE device_id = %s", bad_id) == len(events)
        assert await _count(db, good_query, good_ids) == good
        assert not {"internal", "storage_refused"} & set(rh.hub.pipeline.rejects)
        health = (await rh.api.get("/healthz")).json()
        assert health["database"] is True and health["mqtt"] is True
    finally:
        await client.disconnect()


async def _count(db_url: str, query: str, *params: Any, want: int | None = None) -> int | bool:
    rows = await _rows(db_url, query, *params)
    n = int(rows[0][0])
    return n if want is None else n == want


@pytest.fixture
def hostile_settings(settings: Settings) -> Settings:
    return settings.model_copy(update=NO_LIMITS)


@pytest.fixture
async def open_hub(hostile_settings: Settings) -> AsyncIterator[RunningHub]:
    """A hub without per-device rate limits (these tests send hundreds of messages from one device at once)."""
    async with running_hub(hostile_settings) as rh:
        yield rh


async def test_generated_hostile_messages_cost_good_data_nothing(hostile_settings: Settings) -> None:
    now = now_ms()
    async with running_hub(hostile_settings) as rh:
        loop = asyncio.get_running_loop()

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
        @given(st.lists(hostile_message(now), min_size=5, max_size=40))
        def check(messages: list[tuple[str, bytes]]) -> None:
            # Hypothesis drives from a worker thread; the hub keeps running on the test's loop.
            asyncio.run_coroutine_threadsafe(_run_example(rh, hostile_settings, messages), loop).result(120)

        await asyncio.to_thread(check)


# The two defects of issue 12, as they were found.
async def test_nul_in_any_string_does_not_stop_storage_for_others(open_hub: RunningHub) -> None:
    hub = open_hub
    await hub.put_unit("OK", ["ok-1"])
    await hub.put_unit("NUL", ["nul-1"])
    client = await raw_publisher(hub.hub.mqtt_url or "", "nul-sender")
    t = now_ms() - 1000
    poison = [
        ("telemetry", {"ts": t, "lat": 34.2, "lon": 117.1, "x": "a\u0000b"}),
        ("telemetry", {"ts": t + 1, "lat": 34.2, "lon": 117.1, "attrs\u0000": 1}),
        ("telemetry", {"ts": t + 2, "lat": 34.2, "lon": 117.1, "deep": {"k": ["\u0000"]}}),
        ("status", {"ts": t, "state": "online", "fw": "1.0\u0000"}),
        ("status", {"ts": t + 1, "state": "online", "extra": {"\u0000": True}}),
        ("event", {"ts": t, "type": "ptt", "on": True, "who": "\u0000"}),
        ("event", {"ts": t + 1, "type": "note\u0000"}),
    ]
    for i, (channel, body) in enumerate(poison):
        client.publish(f"fieldhub/v1/dev/nul-1/{channel}", json.dumps(body).encode(), qos=1)
        client.publish("fieldhub/v1/dev/ok-1/telemetry", json.dumps(good_fix(t, 10 + i)).encode(), qos=1)
    for i in range(125):  # the trial of the issue: 125 later good fixes
        client.publish("fieldhub/v1/dev/ok-1/telemetry", json.dumps(good_fix(t, 100 + i)).encode(), qos=1)
    await wait_for(lambda: _equals(hub.count("SELECT count(*) FROM fixes WHERE device_id = 'ok-1'"), 132), 20)
    await wait_for(lambda: _equals(hub.count("SELECT count(*) FROM rejects WHERE device_id = 'nul-1'"), 7), 20)
    reasons = {r for (r,) in await _rows(hub.hub.database_url or "",
                                         "SELECT reason FROM rejects WHERE device_id = 'nul-1'")}
    assert reasons == {"bad_text"}
    assert await hub.count("SELECT count(*) FROM fixes WHERE device_id = 'nul-1'") == 0
    assert (await hub.api.get("/healthz")).json()["database"] is True
    assert hub.hub.writer.available
    await client.disconnect()


async def test_deep_nesting_does_not_drop_the_rest_of_its_cut(open_hub: RunningHub) -> None:
    hub = open_hub
    await hub.put_unit("D", ["deep-good"])
    await hub.put_unit("DX", ["deep-bad"])
    client = await raw_publisher(hub.hub.mqtt_url or "", "deep-sender")
    t = now_ms() - 5000
    for i in range(400):
        client.publish("fieldhub/v1/dev/deep-good/telemetry", json.dumps(good_fix(t, i)).encode(), qos=1)
        if i % 100 == 50:
            client.publish("fieldhub/v1/dev/deep-bad/telemetry", b"[" * 5000 + b"]" * 5000, qos=1)
    await wait_for(lambda: _equals(hub.count("SELECT count(*) FROM fixes WHERE device_id = 'deep-good'"), 400), 20)
    await wait_for(lambda: _equals(hub.count("SELECT count(*) FROM rejects WHERE device_id = 'deep-bad'"), 4), 20)
    assert hub.hub.pipeline.rejects.get("too_deep") == 4
    # Nothing of the good device was refused (the rest of each cut was decoded as usual).
    assert await hub.count("SELECT count(*) FROM rejects WHERE device_id = 'deep-good'") == 0
    await client.disconnect()


# ---------------------------------------------------------------- restarts with poison at the broker
POISON: list[tuple[str, bytes, bool]] = [  # (channel, payload, retained)
    ("status", b'{"ts": %d, "state": "online", "fw": "\\u0000"}', True),
    ("telemetry", b'{"ts": %d, "lat": 34.2, "lon": 117.1, "x": "a\\u0000b"}', False),
    ("telemetry", b"[" * 5000 + b"%d" + b"]" * 5000, False),
    ("event", b'{"ts": %d, "type": "ptt", "on": true, "s": "\\ud800"}', False),
    ("telemetry", b'{"ts": %d, "lat": 34.2, "lon": 117.1, "n": 1e400}', False),
]


async def _publish_round(url: str, t: int, good_ids: list[str], bad_id: str, extra: list[tuple[str, bytes]],
                         per_device: int) -> int:
    client = await raw_publisher(url, f"restart-pub-{uuid.uuid4().hex[:6]}")
    sent = 0
    for i in range(per_device):
        for device in good_ids:
            client.publish(f"fieldhub/v1/dev/{device}/telemetry", json.dumps(good_fix(t, i)).encode(), qos=1)
            sent += 1
        if i < len(POISON):
            channel, raw, retain = POISON[i]
            client.publish(f"fieldhub/v1/dev/{bad_id}/{channel}", raw.replace(b"%d", b"%d" % (t + i)), qos=1,
                           retain=retain)
        if i < len(extra):
            client.publish(f"fieldhub/v1/dev/{bad_id}/{extra[i][0]}", extra[i][1], qos=1)
    await asyncio.sleep(0.5)  # QoS 1 to the broker: PUBACKed by the broker, queued for the hub's session
    await client.disconnect()
    return sent


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(extra=st.lists(hostile_message(now_ms()), min_size=5, max_size=15))
def test_poison_queued_at_the_broker_does_not_re_poison_after_restarts(
        extra: list[tuple[str, bytes]], settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> None:
    asyncio.run(_restarts(extra, settings.model_copy(update={**NO_LIMITS, "mqtt_client_id": "hub-"
                                                             + uuid.uuid4().hex[:8]}),
                          tmp_path_factory.mktemp("restart")))


async def _restarts(extra: list[tuple[str, bytes]], s: Settings, tmp: Path) -> None:
    db, url = s.database_url or "", s.mqtt_url or ""
    tag = uuid.uuid4().hex[:6]
    good_ids, bad_id = [f"rg{tag}-{i}" for i in range(3)], f"rb{tag}"
    port = free_port()
    proc = start_hub_process(s, port, tmp / "hub.log")
    try:
        await wait_healthy(port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            for unit, devices in ((f"RG{tag}", good_ids), (f"RB{tag}", [bad_id])):
                r = await api.put(f"/api/v1/units/{unit}", json={"name": unit, "kind": "patrol", "devices": devices})
                assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        # The hub is down: its persistent session collects good fixes, poison and generated hostile messages.
        t = now_ms() - 60_000
        sent = await _publish_round(url, t, good_ids, bad_id, extra, per_device=100)
        proc = start_hub_process(s, port, tmp / "hub.log")
        await wait_healthy(port)
        good_query = "SELECT count(*) FROM fixes WHERE device_id = ANY(%s)"
        await wait_for(lambda: _count(db, good_query, good_ids, want=sent), timeout=30)
        # Killed mid-ingest: what was not PUBACKed comes again, poison included.
        sent += await _publish_round(url, t + 10_000, good_ids, bad_id, extra, per_device=100)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        proc = start_hub_process(s, port, tmp / "hub.log")
        await wait_healthy(port)
        await wait_for(lambda: _count(db, good_query, good_ids, want=sent), timeout=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            health = (await client.get("/healthz")).json()
        assert health["database"] is True
        reasons = {r for (r,) in await _rows(db, "SELECT reason FROM rejects WHERE device_id = %s", bad_id)}
        assert {"bad_text", "too_deep"} <= reasons
        assert not {"internal", "storage_refused"} & reasons
        # Every good fix is there once (no duplicates, nothing lost).
        assert await _count(db, good_query, good_ids) == sent
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except Exception:
                proc.kill()
