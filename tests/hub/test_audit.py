"""The audit log (issue 13 point 7): who did what, when; append-only in PostgreSQL itself; admins read it.

Real PostgreSQL and a real hub over HTTP; the drone commands against the drone simulator over real UDP.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devices import topics
from devices.clock import now_ms
from devices.payloads import Fix
from geo.geodesy import offset
from hub.config import Settings
from hub.errors import StorageUnavailable
from hub.storage import Database
from hub.storage.audit import AuditLog
from hub.storage.outbox import Outbox
from tests.conftest import RunningHub, running_hub, wait_for

LAT, LON = 34.26, 117.18
INCIDENT = {"category": "robbery", "priority": 2, "lat": LAT, "lon": LON, "address": "1 Main St"}


async def client(rh: RunningHub, role: str, name: str) -> httpx.AsyncClient:
    secret = await rh.hub.create_token(role, name)
    return httpx.AsyncClient(base_url=rh.base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=10)


async def entries(admin: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    r = await admin.get("/api/v1/audit", params=params)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["entries"]
    return found


def located(rh: RunningHub, device_id: str, north_m: float) -> None:
    """A fix of ``device_id`` into the hub's pipeline, as if from the broker (the broker is not under test)."""
    lat, lon = offset(LAT, LON, north_m, 0)
    fix = Fix(ts=now_ms() - 500, lat=lat, lon=lon, acc=5.0, speed=0.0)
    rh.hub.pipeline.submit(topics.device_topic(device_id, "telemetry"), msgspec.json.encode(fix), 1)


# ------------------------------------------------------------------------------ through the API
async def test_dispatch_event_cancel_close_and_unit_put_say_who_what_and_when(hub: RunningHub) -> None:
    admin = await client(hub, "admin", "auditor")
    t0 = now_ms()
    await hub.put_unit("U1", ["u1-radio"])
    r = await hub.api.post("/api/v1/incidents", json=INCIDENT)
    assert r.status_code == 201, r.text
    incident_id = r.json()["id"]
    r = await hub.api.post(f"/api/v1/incidents/{incident_id}/dispatch", json={"unit_ids": ["U1"]})
    assert r.status_code == 200, r.text
    cmd_id = r.json()["assignments"][0]["cmd_id"]
    r = await hub.api.post(f"/api/v1/incidents/{incident_id}/events", json={"type": "note", "text": "caller hung up"})
    assert r.status_code == 200, r.text
    r = await hub.api.post(f"/api/v1/incidents/{incident_id}/cancel", json={"unit_id": "U1", "reason": "wrong car"})
    assert r.status_code == 200, r.text
    r = await hub.api.post(f"/api/v1/incidents/{incident_id}/close", json={"reason": "resolved"})
    assert r.status_code == 200, r.text
    # A refused action is not an act: nothing is audited for it.
    assert (await hub.api.post(f"/api/v1/incidents/{incident_id}/close", json={})).status_code == 409
    t1 = now_ms()
    async with admin:
        found = await entries(admin)
    assert [(e["action"], e["target"], e["actor"], e["role"]) for e in found] == [
        ("incident.close", incident_id, "bootstrap", "dispatcher"),
        ("incident.cancel", incident_id, "bootstrap", "dispatcher"),
        ("incident.event", incident_id, "bootstrap", "dispatcher"),
        ("incident.dispatch", incident_id, "bootstrap", "dispatcher"),
        ("unit.put", "U1", "bootstrap", "dispatcher")]
    assert all(t0 <= e["at"] <= t1 for e in found)
    assert [e["at"] for e in found] == sorted((e["at"] for e in found), reverse=True)
    close, cancel, event, dispatch, unit = (e["detail"] for e in found)
    assert close == {"reason": "resolved"}
    assert cancel == {"unit_id": "U1", "reason": "wrong car"}
    assert event == {"type": "note", "text": "caller hung up"}
    assert dispatch == {"unit_ids": ["U1"], "auto": False, "cmd_ids": [cmd_id]}
    assert unit["devices"] == ["u1-radio"] and unit["name"] == "U1"


async def test_a_reassignment_is_audited_as_a_cancel_and_a_dispatch(hub: RunningHub) -> None:
    await hub.put_unit("U1", ["u1-radio"])
    await hub.put_unit("U2", ["u2-radio"])
    incident_id = (await hub.api.post("/api/v1/incidents", json=INCIDENT)).json()["id"]
    assert (await hub.api.post(f"/api/v1/incidents/{incident_id}/dispatch", json={"unit_ids": ["U1"]})).is_success
    r = await hub.api.post(f"/api/v1/incidents/{incident_id}/reassign",
                           json={"from_unit_id": "U1", "to_unit_id": "U2", "reason": "closer"})
    assert r.status_code == 200, r.text
    admin = await client(hub, "admin", "auditor")
    async with admin:
        found = await entries(admin, actor="bootstrap", limit=2)
    assert [(e["action"], e["detail"]) for e in found] == [
        ("incident.dispatch", {"unit_ids": ["U2"], "auto": False, "reassigned_from": "U1"}),
        ("incident.cancel", {"unit_id": "U1", "reason": "closer", "to_unit_id": "U2"})]


async def test_only_an_admin_reads_the_audit_log(hub: RunningHub) -> None:
    for role in ("dispatcher", "viewer", "drone_operator"):
        other = await client(hub, role, f"{role}-1")
        async with other:
            r = await other.get("/api/v1/audit")
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (role, r.text)
    async with httpx.AsyncClient(base_url=hub.base_url) as anonymous:
        assert (await anonymous.get("/api/v1/audit")).status_code == 401


async def test_automatic_dispatch_and_escalation_are_audited_as_the_hub(settings: Settings) -> None:
    quick = settings.model_copy(update={"auto_dispatch_priority": 1, "ack_timeout_s": 0.3, "ack_resends": 0})
    async with running_hub(quick) as rh:
        await rh.put_unit("A1", ["a1-trk"])
        await rh.put_unit("B1", ["b1-trk"])
        located(rh, "a1-trk", 100)
        located(rh, "b1-trk", 900)
        await wait_for(lambda: all(rh.hub.live.units[u].fix is not None for u in ("A1", "B1")))
        r = await rh.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 1})
        assert r.status_code == 201, r.text
        incident_id = r.json()["id"]
        admin = await client(rh, "admin", "auditor")
        async with admin:
            # Nobody acknowledges: A1 (nearest) is dispatched by the hub, then escalated to B1.
            async def by_the_hub() -> list[dict[str, Any]] | None:
                found = await entries(admin, actor="hub")
                return found if len(found) >= 3 else None

            found = await wait_for(by_the_hub, timeout=15)
        chain = [(e["action"], e["target"], e["role"], e["detail"].get("unit_ids") or e["detail"].get("unit_id"))
                 for e in reversed(found)]
        assert chain[:3] == [("incident.dispatch", incident_id, None, ["A1"]),
                             ("incident.cancel", incident_id, None, "A1"),
                             ("incident.dispatch", incident_id, None, ["B1"])]
        cancel = found[::-1][1]["detail"]
        assert cancel["escalated"] is True and cancel["to_unit_id"] == "B1" and "no acknowledgment" in cancel["reason"]


async def test_drone_commands_are_audited_with_their_outcome(settings: Settings, tmp_path: Any) -> None:
    from tests.hub.test_drones import drone_stack, incident, ready  # the drone simulator's set-up, shared

    async with drone_stack(settings, tmp_path) as (rh, sim):
        await ready(rh, "UAV-01", "UAV-02")
        operator = await client(rh, "drone_operator", "pilot")
        admin = await client(rh, "admin", "auditor")
        async with operator, admin:
            incident_id = await incident(rh)
            r = await rh.api.post(f"/api/v1/incidents/{incident_id}/drone", json={})
            assert r.status_code == 201, r.text
            target = offset(LAT, LON, 100.0, 100.0)
            r = await operator.post("/api/v1/drones/UAV-02/goto", json={"lat": target[0], "lon": target[1], "alt": 25})
            assert r.status_code == 202, r.text
            sim.cut_link("UAV-02", 10.0)

            async def lost() -> bool:
                r = await operator.get("/api/v1/drones/UAV-02")
                return bool(r.json()["link"] == "lost")

            await wait_for(lost, timeout=6)
            r = await operator.post("/api/v1/drones/UAV-02/land")
            assert r.status_code == 409 and r.json()["error"]["code"] == "link_lost"
            assert (await operator.post("/api/v1/drones/UAV-09/rtl")).status_code == 404  # no such drone: no act
            found = await entries(admin)
    drone = [(e["action"], e["target"], e["actor"], e["role"], e["detail"]) for e in reversed(found)
             if e["action"].startswith(("drone.", "incident.drone"))]
    assert drone == [
        ("incident.drone", incident_id, "bootstrap", "dispatcher", {"drone_id": "UAV-01", "asked_for": None,
                                                                    "eta_s": drone[0][4]["eta_s"],
                                                                    "without_failsafe": False}),
        ("drone.goto", "UAV-02", "pilot", "drone_operator", {"lat": target[0], "lon": target[1], "alt": 25.0,
                                                             "result": "accepted"}),
        ("drone.land", "UAV-02", "pilot", "drone_operator", {"result": "link_lost"})]
    assert drone[0][4]["eta_s"] > 0


# ------------------------------------------------------------------------------ the table itself
async def test_postgres_refuses_update_delete_and_truncate_of_the_audit_log(database_url: str) -> None:
    async with Database(database_url) as db:
        await AuditLog(db).record("alice", "token.create", "tok-1", {"role": "viewer"}, role="admin")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for statement in ("UPDATE audit_log SET actor = 'mallory'",
                          "DELETE FROM audit_log",
                          "DELETE FROM audit_log WHERE id < 0",  # matches nothing, refused all the same
                          "TRUNCATE audit_log",
                          "TRUNCATE audit_log CASCADE"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                await conn.execute(statement)
        cur = await conn.execute("SELECT actor, role, action, target, detail FROM audit_log")
        assert await cur.fetchall() == [("alice", "admin", "token.create", "tok-1", {"role": "viewer"})]


async def test_paging_back_and_time_filters(hub: RunningHub) -> None:
    t0 = 1_700_000_000_000
    clock = iter(range(t0, t0 + 25_000, 1000))
    log = AuditLog(hub.hub.db, clock=lambda: next(clock))
    for i in range(25):
        await log.record("hub" if i % 2 else "alice", "unit.put", f"U{i}", {"i": i})
    admin = await client(hub, "admin", "auditor")
    async with admin:
        seen: list[int] = []
        before: int | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 10, **({"before_id": before} if before is not None else {})}
            r = await admin.get("/api/v1/audit", params=params)
            assert r.status_code == 200, r.text
            seen += [e["detail"]["i"] for e in r.json()["entries"]]
            pages += 1
            before = r.json()["next_before_id"]
            if before is None:
                break
        assert seen == list(range(24, -1, -1)) and pages == 3
        # from <= at < to, in epoch ms; with the other filters.
        found = await entries(admin, **{"from": t0 + 5000, "to": t0 + 9000})
        assert [e["detail"]["i"] for e in found] == [8, 7, 6, 5]
        assert [e["at"] for e in found] == [t0 + 8000, t0 + 7000, t0 + 6000, t0 + 5000]
        found = await entries(admin, **{"from": t0 + 5000, "to": t0 + 9000, "actor": "alice"})
        assert [e["detail"]["i"] for e in found] == [8, 6]
        assert await entries(admin, action="token.revoke") == []
        r = await admin.get("/api/v1/audit", params={"from": t0 + 9000, "to": t0})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
        assert (await admin.get("/api/v1/audit", params={"limit": 1001})).status_code == 422


async def test_generated_filters_never_get_a_500(hub: RunningHub) -> None:
    secret = await hub.hub.create_token("admin", "fuzz")
    await hub.hub.audit.record("alice", "unit.put", "U1", {"name": "x"}, role="dispatcher")
    number = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from(["", "1e3", "x", "-0",
                                                                                             "9" * 400, "%00"]))
    text = st.text(max_size=300)
    params = st.fixed_dictionaries({}, optional={"from": number, "to": number, "limit": number, "before_id": number,
                                                 "action": text, "actor": text})

    def fuzz() -> None:
        with httpx.Client(base_url=hub.base_url, timeout=30, headers={"Authorization": f"Bearer {secret}"}) as http:

            @hsettings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(params)
            def one(query: dict[str, Any]) -> None:
                url = "/api/v1/audit?" + urllib.parse.urlencode({k: str(v) for k, v in query.items()})
                r = http.get(url)
                assert r.status_code in (200, 400, 422), (query, r.status_code, r.text)
                body = r.json()
                if r.status_code == 200:
                    assert isinstance(body["entries"], list) and len(body["entries"]) <= 1000
                else:
                    assert set(body["error"]) >= {"code", "message"}

            one()

    await asyncio.to_thread(fuzz)


# ------------------------------------------------------------------------------ the database away
async def test_a_row_meeting_an_outage_waits_in_the_outbox_with_its_own_time(database_url: str) -> None:
    info = conninfo_to_dict(database_url)
    dbname = str(info["dbname"])
    maintenance = make_conninfo(database_url, dbname="postgres")
    async with Database(database_url, connect_timeout_s=1.0) as db:
        log = AuditLog(db)
        outbox = Outbox(retry_s=0.1, max_retry_s=0.3)
        async with await psycopg.AsyncConnection.connect(maintenance, autocommit=True) as admin:
            await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
            try:
                # Without an outbox the caller is told (a route answers 503).
                with pytest.raises(StorageUnavailable):
                    await log.record("alice", "incident.close", "I-1", role="dispatcher")
                log.defer_to(outbox)
                outbox.start()
                asked = now_ms()
                await log.record("alice", "incident.dispatch", "I-1", {"unit_ids": ["U1"]}, role="dispatcher")
                assert len(outbox) == 1 and outbox.deferred == 1 and log.recorded == 0
                await asyncio.sleep(1.0)
            finally:
                await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        await wait_for(lambda: len(outbox) == 0, timeout=20)
        await outbox.stop()
        rows = await log.list()
    assert [(r["actor"], r["action"], r["target"], r["detail"]) for r in rows] == [
        ("alice", "incident.dispatch", "I-1", {"unit_ids": ["U1"]})]
    assert asked <= rows[0]["at"] < asked + 500  # the time of the act, not of the late write (>= 1 s later)
    assert outbox.written == 1 and log.lost == 0
