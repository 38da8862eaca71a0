"""The incident log in the real PostgreSQL: round trip, replay, concurrency, append-only, recovery, ranges."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import psycopg
import pytest

from hub.domain.events import (
    Acknowledged,
    Arrived,
    Closed,
    Created,
    Departed,
    Dispatched,
    Diverted,
    Event,
    Noted,
)
from hub.domain.incident import Incident
from hub.errors import StorageUnavailable
from hub.storage import Database
from hub.storage.incidents import ConcurrencyConflict, IncidentStore, summary_of

T0 = 1_795_000_000_000  # 2026-11-18


def at(seconds: float) -> int:
    return T0 + round(seconds * 1000)


def created(received_s: float = 0, **kw: Any) -> Created:
    fields: dict[str, Any] = {"ts": at(received_s + 5), "source": "api", "category": "robbery", "priority": 1,
                              "lat": 31.2304, "lon": 121.4737, "address": "1 Nanjing Rd", "summary": "two men",
                              "received_at": at(received_s), "policy": "rapid_12358"}
    return Created(**(fields | kw))


def response(unit: str = "P-7", start_s: float = 0) -> list[Event]:
    """Dispatch to arrival of one unit, device-timed milestones included."""
    return [
        Dispatched(ts=at(start_s + 10), source="system", unit_id=unit, cmd_id="c1"),
        Acknowledged(ts=at(start_s + 12.5), source="device", unit_id=unit, cmd_id="c1"),
        Departed(ts=at(start_s + 40), source="motion", unit_id=unit),
        Arrived(ts=at(start_s + 300), source="geofence", unit_id=unit),
    ]


async def record(store: IncidentStore, incident: Incident, version: int, events: list[Event]) -> int:
    """What the hub does: apply live, then append with the summary of the new state."""
    for event in events:
        incident.apply(event)
    return await store.append(incident.id, version, events, summary_of(incident))


def dicts(events: list[Event]) -> list[dict[str, Any]]:
    return [e.to_dict() for e in events]


async def test_append_and_load_round_trip_the_events(database_url: str) -> None:
    async with Database(database_url) as db:
        store = IncidentStore(db)
        incident = Incident("I1")
        events: list[Event] = [created(), *response()]
        assert await record(store, incident, 0, events[:2]) == 2
        assert await record(store, incident, 2, events[2:]) == 5
        loaded = await store.load("I1")
        assert dicts(loaded) == dicts(events)
        assert loaded == events  # the same frozen values, types included
        assert await store.load("nope") == []
        rows = await db.scalar("SELECT array_agg(version ORDER BY seq) FROM incident_events WHERE incident_id = 'I1'")
        assert rows == [1, 2, 3, 4, 5]
        assert await db.scalar("SELECT ts FROM incident_events WHERE incident_id = 'I1' AND type = 'acknowledged'") \
            == at(12.5)


async def test_replay_of_the_stored_log_gives_the_live_view(database_url: str) -> None:
    async with Database(database_url) as db:
        store = IncidentStore(db)
        live = Incident("I1")
        version = await record(store, live, 0, [created(), *response("P-7")])
        version = await record(store, live, version, response("P-9", start_s=20))
        version = await record(store, live, version, [Noted(ts=at(400), source="manual", text="suspect fled")])
        version = await record(store, live, version, [Arrived(ts=at(250), source="geofence", unit_id="P-9")])
        replayed = Incident.replay("I1", await store.load("I1"))
        now = at(900)
        assert replayed.view(now) == live.view(now)
        assert replayed.view(now)["milestones"]["arrived"] == {"ts": at(250), "source": "geofence", "unit_id": "P-9"}


async def test_a_stale_version_is_a_conflict_and_writes_nothing(database_url: str) -> None:
    async with Database(database_url) as db:
        store = IncidentStore(db)
        incident = Incident("I1")
        await record(store, incident, 0, [created()])
        summary = summary_of(incident)
        with pytest.raises(ConcurrencyConflict) as info:  # a second creator
            await store.append("I1", 0, [created()], summary)
        assert (info.value.expected, info.value.actual) == (0, 1)
        with pytest.raises(ConcurrencyConflict):  # ahead of the log: no gap is ever written
            await store.append("I1", 5, response(), summary)
        closed = [Closed(ts=at(60), source="api")]
        with pytest.raises(ConcurrencyConflict):
            await store.append("I1", 0, closed, {**summary, "status": "closed", "closed_at": at(60)})
        assert dicts(await store.load("I1")) == dicts([created()])
        assert [s["status"] for s in await store.list()] == ["open"]  # the summary did not move either


async def test_of_two_racing_writers_exactly_one_wins(database_url: str) -> None:
    async with Database(database_url) as db:
        store = IncidentStore(db)
        incident = Incident("I1")
        await record(store, incident, 0, [created()])
        summary = summary_of(incident)
        for round_ in range(10):
            version = 1 + round_
            notes = [[Noted(ts=at(round_), source="manual", text=f"{who} {round_}")] for who in ("a", "b")]
            results = await asyncio.gather(*(store.append("I1", version, n, summary) for n in notes),
                                           return_exceptions=True)
            assert sorted(type(r).__name__ for r in results) == ["ConcurrencyConflict", "int"]
        versions = await db.scalar("SELECT array_agg(version ORDER BY version) FROM incident_events")
        assert versions == list(range(1, 12))


async def test_the_log_is_append_only(database_url: str) -> None:
    async with Database(database_url) as db:
        store = IncidentStore(db)
        await record(store, Incident("I1"), 0, [created(), *response()])
        for statement in ("UPDATE incident_events SET ts = 0",
                          "DELETE FROM incident_events WHERE type = 'arrived'",
                          "TRUNCATE incident_events"):
            async with db.connection() as conn:
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    await conn.execute(statement)
        assert dicts(await store.load("I1")) == dicts([created(), *response()])


async def test_load_open_excludes_closed_incidents(database_url: str) -> None:
    async with Database(database_url) as db:
        store = IncidentStore(db)
        await record(store, Incident("OPEN"), 0, [created(received_s=30), *response(start_s=30)])
        closed = Incident("CLOSED")
        await record(store, closed, await record(store, closed, 0, [created()]), [Closed(ts=at(600), source="api")])
        diverted = Incident("DIVERTED")  # awaiting hand-over to 12345: still live
        await record(store, diverted, 0, [created(received_s=10), Diverted(ts=at(20), source="api", reason="noise")])
        logs = await store.load_open()
        assert list(logs) == ["DIVERTED", "OPEN"]  # by reception
        assert dicts(logs["OPEN"]) == dicts([created(received_s=30), *response(start_s=30)])
        assert {s["incident_id"]: (s["status"], s["closed_at"]) for s in await store.list()} == {
            "OPEN": ("open", None), "CLOSED": ("closed", at(600)), "DIVERTED": ("diverted", None)}


async def test_list_filters_by_status_newest_first_with_a_limit(database_url: str) -> None:
    async with Database(database_url) as db:
        store = IncidentStore(db)
        for i in range(5):
            await record(store, Incident(f"I{i}"), 0, [created(received_s=i, priority=1 + i % 4)])
        closed = Incident("C")
        await record(store, closed, await record(store, closed, 0, [created()]), [Closed(ts=at(60), source="api")])
        assert [s["incident_id"] for s in await store.list("open", limit=3)] == ["I4", "I3", "I2"]
        assert [s["incident_id"] for s in await store.list("closed")] == ["C"]
        assert len(await store.list()) == 6
        assert (await store.list("open", limit=1))[0] == {
            "incident_id": "I4", "category": "robbery", "priority": 1, "status": "open", "policy": "rapid_12358",
            "lat": 31.2304, "lon": 121.4737, "received_at": at(4), "closed_at": None}


async def test_ids_are_readable_unique_and_ordered(database_url: str) -> None:
    async with Database(database_url) as db:
        store = IncidentStore(db)
        first = await store.next_id(now_ms=T0)
        assert re.fullmatch(r"I20261118-\d{6}", first)
        sequential = [await store.next_id("F", now_ms=T0) for _ in range(20)]
        assert sequential == sorted(sequential)
        concurrent = await asyncio.gather(*(store.next_id(now_ms=T0) for _ in range(50)))
        assert len({first, *sequential, *concurrent}) == 71
        with pytest.raises(ValueError):
            await store.next_id("I; DROP")


async def test_time_ranges_are_half_open(database_url: str) -> None:
    async with Database(database_url) as db:
        store = IncidentStore(db)
        for i, name in enumerate(("A", "B", "C")):  # received at 0 s, 100 s, 200 s
            await record(store, Incident(name), 0, [created(received_s=100 * i), *response(start_s=100 * i)])
        received = await store.incidents_received_between(at(100), at(200))
        assert list(received) == ["B"]
        assert dicts(received["B"]) == dicts([created(received_s=100), *response(start_s=100)])
        assert list(await store.incidents_received_between(at(0), at(200) + 1)) == ["A", "B", "C"]
        assert await store.incidents_received_between(at(201), at(1000)) == {}
        # Events by their own (device) time: A's arrival at 300 s, C's creation at 205 s and dispatch at 210 s.
        window = await store.events_between(at(205), at(300) + 1)
        assert [(i, e.type, e.ts) for i, e in window] == [
            ("C", "created", at(205)), ("C", "dispatched", at(210)), ("C", "acknowledged", at(212.5)),
            ("C", "departed", at(240)), ("A", "arrived", at(300))]


async def test_a_restarted_hub_reads_the_same_log(database_url: str) -> None:
    live = Incident("I1")
    async with Database(database_url) as db:
        store = IncidentStore(db)
        version = await record(store, live, 0, [created(), *response()[:3]])  # mid-response: en route
        last_id = await store.next_id(now_ms=T0)
    async with Database(database_url) as db:  # a new process: migrations already applied, pool new
        store = IncidentStore(db)
        logs = await store.load_open()
        assert dicts(logs["I1"]) == dicts(await store.load("I1")) == dicts(live.log)
        rebuilt = Incident.replay("I1", logs["I1"])
        assert rebuilt.view(at(100)) == live.view(at(100))
        # The arrival is still recorded after the restart, on top of the rebuilt state.
        assert await record(store, rebuilt, version, [response()[3]]) == version + 1
        assert (await store.load("I1"))[-1].type == "arrived"
        assert await store.next_id(now_ms=T0) > last_id  # the sequence survives too


async def test_an_unreachable_database_is_storage_unavailable(database_url: str) -> None:
    db = Database(database_url)
    async with db:
        store = IncidentStore(db)
    with pytest.raises(StorageUnavailable):  # the pool is closed: as good as an outage
        await store.load("I1")
    with pytest.raises(ValueError):
        await store.append("I1", 0, [], {})
