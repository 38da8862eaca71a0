"""What a device may change in an incident, through the running hub (real Mosquitto, real PostgreSQL).

Each rule is a counted reason in /metrics (`fieldhub_device_events_ignored_total{reason}`), a log line,
and a bounded note in the incident: an ack from another unit's device, a backdated ack or contact, a fix
from the future, a far-away SOS, an SOS flood, a flood of device notes; and milestones reported while the
database is down are written, in order, when it is back, without escalating the unit that acknowledged.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from devices import topics
from devices.client import DeviceClient
from devices.clock import now_ms
from devices.payloads import Fix, decode_command
from geo.geodesy import offset
from hub.config import Settings
from hub.domain.device_claims import DEVICE_NOTE_CAP
from hub.incidents.service import LIVE_LOG_ENTRIES, IncidentService
from hub.infra.embedded import EmbeddedPostgres
from tests.conftest import RunningHub, running_hub, wait_for
from tests.hub.test_incidents_api import INCIDENT, LAT, LON, drive_in, incident, milestone, parked, send

# Generous per-device limits: these tests send bursts on purpose (the rate limits have their own tests).
LIMITS = {"device_telemetry_per_s": 10_000.0, "device_telemetry_burst": 100_000, "device_events_per_s": 10_000.0,
          "device_events_burst": 100_000}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auto_dispatch_priority": 0, **LIMITS})


def uid(name: str) -> str:
    """A device id no earlier test used: the broker keeps persistent sessions (and their queued commands)."""
    return f"{name}-{uuid.uuid4().hex[:6]}"


def service(rh: RunningHub) -> IncidentService:
    assert rh.hub.incidents is not None
    return rh.hub.incidents


def notes(view: dict[str, Any]) -> list[str]:
    return [e["text"] for e in view["log"] if e["type"] == "note"]


async def metric(rh: RunningHub, name: str, **labels: str) -> float:
    text = (await rh.api.get("/metrics")).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + want + '}') if want else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def at_position(rh: RunningHub, unit_id: str, dev: DeviceClient, north_m: float) -> None:
    send(dev, parked(*offset(LAT, LON, north_m, 0), now_ms() - 1000, 1))
    await wait_for(lambda: rh.hub.live.units[unit_id].fix is not None)


async def test_ack_from_another_units_device_is_ignored_and_the_unit_still_escalated(settings: Settings) -> None:
    async with running_hub(settings.model_copy(update={"ack_timeout_s": 1.0, "ack_resends": 1})) as hub:
        mute, other, backup = uid("mute-trk"), uid("other-trk"), uid("backup-trk")
        await hub.put_unit("MUTE", [mute])  # never connects: it does not acknowledge
        await hub.put_unit("OTHER", [other])
        await hub.put_unit("BACKUP", [backup])
        url = hub.hub.mqtt_url or ""
        async with DeviceClient(other, url, unit_id="OTHER") as o, DeviceClient(backup, url, unit_id="BACKUP") as b:
            await at_position(hub, "BACKUP", b, 800)
            iid = (await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 3})).json()["id"]
            r = await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["MUTE"]})
            cmd = r.json()["assignments"][0]["cmd_id"]
            o.send_event("ack", cmd_id=cmd)  # it read the command somewhere and replays it
            await wait_for(lambda: service(hub).ignored["ack_wrong_unit"] == 1)

            async def escalated() -> Any:
                view = await incident(hub, iid)
                return view if any(a["unit_id"] == "BACKUP" for a in view["assignments"]) else None

            view = await wait_for(escalated, timeout=15)
            mute_a = view["assignments"][0]
            assert mute_a["unit_id"] == "MUTE" and mute_a["acknowledged"] is None and mute_a["status"] == "cancelled"
            [note] = [n for n in notes(view) if "ack_wrong_unit" in n]
            assert cmd in note and other in note and "unit OTHER" in note
            assert o.commands == [] and [c.type for c in b.commands] == ["dispatch"]
            assert await metric(hub, "fieldhub_device_events_ignored_total", reason="ack_wrong_unit") == 1.0


async def test_video_start_ack_counts_only_from_the_camera_it_was_sent_to(hub: RunningHub) -> None:
    trk, cam = uid("v-trk"), uid("v") + "-cam"  # the camera never connects: kind by its id
    await hub.put_unit("V1", [trk, cam])
    svc = service(hub)
    published: list[tuple[str, bytes]] = []
    publish = svc.publish

    def recording(topic: str, payload: bytes) -> None:
        published.append((topic, payload))
        publish(topic, payload)

    svc.publish = recording
    async with DeviceClient(trk, await hub.device_url(trk), unit_id="V1") as t:
        await at_position(hub, "V1", t, 200)
        iid = (await hub.api.post("/api/v1/incidents", json=INCIDENT)).json()["id"]
        await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["V1"]})
        await milestone(hub, iid, "acknowledged")
        await svc.follow_up.video_start(iid, "V1")
        [video] = [c for c in (decode_command(p) for topic, p in published if topic == topics.device_topic(cam, "cmd"))
                   if c.type == "video_start"]
        t.send_event("ack", cmd_id=video.cmd_id)  # the tracker, not the camera
        await wait_for(lambda: svc.ignored["ack_wrong_device"] == 1)
        assert svc.awaits_ack(video.cmd_id)  # still waited for from the camera
        view = await incident(hub, iid)
        assert not any("video_start acknowledged" in n for n in notes(view))
        assert any("ack_wrong_device" in n and trk in n for n in notes(view))


async def test_ack_dated_before_the_dispatch_is_recorded_at_its_receipt(hub: RunningHub) -> None:
    dev_id = uid("late-trk")
    await hub.put_unit("L1", [dev_id])
    iid = (await hub.api.post("/api/v1/incidents", json=INCIDENT)).json()["id"]
    r = await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["L1"]})
    a = r.json()["assignments"][0]
    async with DeviceClient(dev_id, await hub.device_url(dev_id), unit_id="L1") as dev:  # connects after the dispatch
        sent = now_ms()
        dev.send_event("ack", ts=a["dispatched"] - 3_600_000, cmd_id=a["cmd_id"])  # its clock is an hour behind
        ack = await milestone(hub, iid, "acknowledged")
        received = await wait_for(lambda: hub.count("SELECT coalesce(max(received_at), 0) FROM device_events "
                                                     "WHERE type = 'ack' AND device_id = %s", dev_id))
    assert ack["source"] == "device" and ack["unit_id"] == "L1"
    assert a["dispatched"] <= sent <= ack["ts"] == received  # the hub's receipt, never before the dispatch
    view = await incident(hub, iid)
    [note] = [n for n in notes(view) if "ack_ts_before_dispatch" in n]
    assert "before the dispatch" in note and dev_id in note
    assert service(hub).ignored["ack_ts_before_dispatch"] == 1
    assert await metric(hub, "fieldhub_device_events_ignored_total", reason="ack_ts_before_dispatch") == 1.0


async def test_backdated_and_moving_contacts_are_ignored(hub: RunningHub) -> None:
    dev_id = uid("c-trk")
    await hub.put_unit("C1", [dev_id])
    async with DeviceClient(dev_id, await hub.device_url(dev_id), unit_id="C1") as dev:
        await at_position(hub, "C1", dev, 300)
        created = (await hub.api.post("/api/v1/incidents", json=INCIDENT)).json()
        iid, received = created["id"], created["received_at"]
        a = (await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["C1"]})).json()
        dispatched = a["assignments"][0]["dispatched"]
        await milestone(hub, iid, "acknowledged")
        dev.send_event("contact", ts=received - 3_600_000, incident_id=iid)  # an hour before the call
        await wait_for(lambda: service(hub).ignored["contact_ts_before_received"] == 1)
        dev.send_event("contact", ts=dispatched + 5000, incident_id=iid)
        contact = await milestone(hub, iid, "contacted")
        assert contact == {"ts": dispatched + 5000, "source": "device", "unit_id": "C1"}
        dev.send_event("contact", ts=dispatched + 1000, incident_id=iid)  # a second one would move the first
        await wait_for(lambda: service(hub).ignored["contact_would_move"] == 1)
    view = await incident(hub, iid)
    assert view["milestones"]["contacted"]["ts"] == dispatched + 5000
    assert [n for n in notes(view) if "contact_ts_before_received" in n]
    assert [n for n in notes(view) if "contact_would_move" in n]
    assert await metric(hub, "fieldhub_device_events_ignored_total", reason="contact_ts_before_received") == 1.0


async def test_a_fix_23_hours_ahead_does_not_become_the_units_position(hub: RunningHub) -> None:
    dev_id = uid("f-trk")
    await hub.put_unit("F1", [dev_id])
    async with DeviceClient(dev_id, await hub.device_url(dev_id), unit_id="F1") as dev:
        now = now_ms()
        dev.send_fix(Fix(ts=now - 1000, lat=LAT, lon=LON, acc=5.0))
        await wait_for(lambda: hub.hub.live.units["F1"].fix is not None)
        ahead = offset(LAT, LON, 5000, 0)
        dev.send_fix(Fix(ts=now + 23 * 3_600_000, lat=ahead[0], lon=ahead[1], acc=5.0))
        await wait_for(lambda: hub.count("SELECT count(*) FROM rejects WHERE reason = 'ts_in_future' "
                                         "AND device_id = %s", dev_id))
        assert hub.hub.live.units["F1"].fix.ts == now - 1000  # type: ignore[union-attr]
        dev.send_fix(Fix(ts=now, lat=LAT, lon=LON, acc=5.0))  # the next good fix still moves it
        await wait_for(lambda: hub.hub.live.units["F1"].fix.ts == now)  # type: ignore[union-attr]
    position = (await hub.api.get("/api/v1/units/F1")).json()["position"]
    assert position["ts"] == now and abs(position["lat"] - LAT) < 1e-9
    assert await hub.count("SELECT count(*) FROM fixes WHERE device_id = %s AND ts > %s", dev_id, now) == 0


async def test_a_far_away_sos_is_placed_at_the_last_fix_and_flagged(hub: RunningHub) -> None:
    dev_id = uid("s-radio")
    await hub.put_unit("S1", [dev_id])
    async with DeviceClient(dev_id, await hub.device_url(dev_id), unit_id="S1", kind="radio") as dev:
        await at_position(hub, "S1", dev, 0)
        far = offset(LAT, LON, 8000, 0)
        dev.send_event("sos", lat=far[0], lon=far[1])
        svc = service(hub)
        await wait_for(lambda: svc.alerts.list(10))
        alert = svc.alerts.list(1)[0]
        assert abs(alert["lat"] - LAT) < 1e-6 and alert["position_replaced"] is True
        assert "placed at the last fix" in alert["text"] and "8000 m" in alert["text"]
        assert svc.ignored["sos_position_replaced"] == 1

        async def sos_incident() -> Any:
            found = (await hub.api.get("/api/v1/incidents", params={"status": "open"})).json()["incidents"]
            return [i for i in found if i["category"] == "sos"]

        [summary] = await wait_for(sos_incident)
        view = await incident(hub, summary["id"])
        assert abs(view["lat"] - LAT) < 1e-6 and abs(view["lon"] - LON) < 1e-6
        assert any("placed at the last fix" in n for n in notes(view))


async def test_an_sos_flood_grows_neither_the_log_nor_the_alerts(hub: RunningHub) -> None:
    dev_id = uid("flood-radio")
    await hub.put_unit("S9", [dev_id])
    svc = service(hub)
    async with DeviceClient(dev_id, await hub.device_url(dev_id), unit_id="S9", kind="radio") as dev:
        await at_position(hub, "S9", dev, 0)
        dev.send_event("sos")
        await wait_for(lambda: svc.alerts.list(10))
        for _ in range(200):
            dev.send_event("sos")
        # The first repeat is told at once; the other 199 within the minute are counted into the next report.
        await wait_for(lambda: svc.ignored["sos_repeat_coalesced"] == 199, timeout=20)
    [iid] = [i.id for i in svc.open_incidents() if i.created is not None and i.created.category == "sos"]
    view = await incident(hub, iid)
    assert len([n for n in notes(view) if "SOS pressed again" in n]) == 1
    assert len([a for a in svc.alerts.list(500) if a["kind"] == "sos"]) == 2
    assert await metric(hub, "fieldhub_device_events_ignored_total", reason="sos_repeat_coalesced") == 199.0


async def test_device_notes_are_capped_and_live_frames_carry_only_the_newest_log_entries(hub: RunningHub) -> None:
    dev_id = uid("n-trk")
    await hub.put_unit("N1", [dev_id])
    svc = service(hub)
    async with DeviceClient(dev_id, await hub.device_url(dev_id), unit_id="N1") as dev:
        await at_position(hub, "N1", dev, 300)
        created = (await hub.api.post("/api/v1/incidents", json=INCIDENT)).json()
        iid = created["id"]
        await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["N1"]})
        await milestone(hub, iid, "acknowledged")
        live = hub.hub.feed.subscribe()
        frames: list[dict[str, Any]] = []

        async def watch() -> None:  # a browser reading the live feed meanwhile
            while True:
                frames.append(msgspec.json.decode(await live.queue.get()))

        watcher = asyncio.create_task(watch())
        flood = 3 * DEVICE_NOTE_CAP
        for i in range(flood):  # each one refused, and each refusal would be a note
            dev.send_event("contact", ts=created["received_at"] - 60_000 - i, incident_id=iid)
        await wait_for(lambda: svc.ignored["contact_ts_before_received"] == flood, timeout=20)
    assert svc.ignored["device_note_capped"] == flood - DEVICE_NOTE_CAP
    view = await incident(hub, iid)
    refused = [n for n in notes(view) if "contact_ts_before_received" in n]
    assert len(refused) == DEVICE_NOTE_CAP and "later ones are only counted" in refused[-1]
    assert view["log_size"] == len(view["log"]) < DEVICE_NOTE_CAP + 10  # the whole log, by the API
    snapshot = msgspec.json.decode(hub.hub.feed.snapshot_frame())
    [shown] = [i for i in snapshot["incidents"] if i["id"] == iid]
    assert len(shown["log"]) == LIVE_LOG_ENTRIES and shown["log_size"] == view["log_size"]
    assert shown["log"] == view["log"][-LIVE_LOG_ENTRIES:]
    await asyncio.sleep(3 * hub.hub.feed.interval_s)
    watcher.cancel()
    ours = [f["incident"] for f in frames if f["type"] == "incident" and f["incident"]["id"] == iid]
    assert ours and all(len(i["log"]) <= LIVE_LOG_ENTRIES for i in ours)
    assert len(ours) < DEVICE_NOTE_CAP  # once per frame, not once per change
    hub.hub.feed.unsubscribe(live)


async def test_milestones_during_a_database_outage_are_written_after_it_and_nobody_is_escalated(
        settings: Settings, tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "outage-pg")
    url = pg.start()
    settings = settings.model_copy(update={"database_url": url, "ack_timeout_s": 1.0, "ack_resends": 1})
    try:
        async with running_hub(settings) as hub:
            svc = service(hub)
            trk, backup = uid("o-trk"), uid("ob-trk")
            await hub.put_unit("O1", [trk])
            await hub.put_unit("OB", [backup])
            mqtt = settings.mqtt_url or ""
            async with DeviceClient(backup, mqtt, unit_id="OB") as b:
                await at_position(hub, "OB", b, 600)  # a unit to escalate to, were O1 not acknowledging
                iid = (await hub.api.post("/api/v1/incidents", json=INCIDENT)).json()["id"]
                r = await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["O1"]})
                a = r.json()["assignments"][0]
                await asyncio.to_thread(pg.stop)
                async with DeviceClient(trk, mqtt, unit_id="O1") as dev:  # connects (and acks) during the outage
                    ack_ts = now_ms()
                    dev.send_event("ack", ts=ack_ts, cmd_id=a["cmd_id"])
                    origin = offset(LAT, LON, -1505.0, 0)
                    still = parked(*origin, a["dispatched"] + 500, 5)
                    moving = drive_in(still[-1].ts + 1000)
                    stay = parked(moving[-1].lat, moving[-1].lon, moving[-1].ts + 1000, 180)
                    dev.hold_uplink(True)
                    send(dev, still + moving + stay)
                    dev.hold_uplink(False)  # one store-and-forward batch
                    dev.send_event("contact", ts=moving[-1].ts + 2000, incident_id=iid)
                    await wait_for(lambda: len(svc.outbox) >= 4, timeout=30)  # ack, departure, arrival, contact
                    assert await metric(hub, "fieldhub_incident_writes_waiting") >= 4
                    await asyncio.sleep(3 * settings.ack_timeout_s)  # past the re-send and the escalation
                    held = svc.current(iid)
                    assert held is not None and [x.unit_id for x in held.assignments] == ["O1"]
                    assert held.assignments[0].active and "acknowledged" not in held.assignments[0].marks
                    assert b.commands == []  # nobody was sent in O1's place
                    await asyncio.to_thread(pg.restart)
                    await wait_for(lambda: len(svc.outbox) == 0, timeout=60, interval=0.2)
            view = await incident(hub, iid)
            [o1] = view["assignments"]
            assert o1["unit_id"] == "O1" and o1["status"] == "on_scene"
            assert o1["acknowledged"] == ack_ts and o1["departed"] is not None and o1["arrived"] is not None
            assert o1["contacted"] == moving[-1].ts + 2000
            kinds = [e["type"] for e in view["log"]]
            assert "reassigned" not in kinds and "cancelled" not in kinds
            # In the order they came: the ack, then what the batch showed, then the contact.
            order = [k for k in kinds if k in ("acknowledged", "departed", "arrived", "contacted")]
            assert order == ["acknowledged", "departed", "arrived", "contacted"]
            assert svc.outbox.deferred >= 4 and svc.outbox.dropped == 0
            assert hub.hub.live.units["O1"].status == "on_scene"
    finally:
        pg.close()
