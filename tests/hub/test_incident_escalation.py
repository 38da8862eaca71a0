"""No-ack re-send and escalation, auto-dispatch on creation, video_start on arrival: real Mosquitto and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from devices import topics
from devices.client import DeviceClient
from devices.clock import now_ms
from devices.payloads import decode_command
from geo.geodesy import offset
from hub.config import Settings
from tests.conftest import RunningHub, wait_for
from tests.hub.test_incidents_api import INCIDENT, LAT, LON, drive_in, incident, milestone, parked, send


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"ack_timeout_s": 0.5, "ack_resends": 1, "auto_dispatch_priority": 1,
                                       "public_base_url": "https://hub.example:8443"})


def log_of(view: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [e for e in view["log"] if e["type"] == type_]


async def test_unacknowledged_dispatch_is_resent_then_escalated_to_the_next_unit(hub: RunningHub) -> None:
    await hub.put_unit("MUTE", ["mute-trk"])  # its device never connects: nobody signs for the dispatch
    await hub.put_unit("BACKUP", ["backup-trk"])
    service = hub.hub.incidents
    assert service is not None
    published: list[tuple[str, bytes]] = []
    publish = service.publish

    def recording(topic: str, payload: bytes) -> None:
        published.append((topic, payload))
        publish(topic, payload)

    service.publish = recording
    async with DeviceClient("backup-trk", await hub.device_url("backup-trk"), unit_id="BACKUP") as backup:
        send(backup, parked(*offset(LAT, LON, 800, 0), now_ms() - 1000, 1))
        await wait_for(lambda: hub.hub.live.units["BACKUP"].fix is not None)
        iid = (await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 3})).json()["id"]
        r = await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["MUTE"]})
        assert r.status_code == 200, r.text
        mute_cmd = r.json()["assignments"][0]["cmd_id"]

        async def escalated() -> Any:
            view = await incident(hub, iid)
            return view if any(a["unit_id"] == "BACKUP" and a["acknowledged"] for a in view["assignments"]) else None

        view = await wait_for(escalated, timeout=15)
        mute, second = view["assignments"]
        assert mute["unit_id"] == "MUTE" and mute["status"] == "cancelled" and mute["cancelled"] is not None
        assert mute["acknowledged"] is None
        assert second["unit_id"] == "BACKUP" and second["status"] == "acknowledged"
        [cancelled] = log_of(view, "cancelled")
        assert cancelled["unit_id"] == "MUTE" and cancelled["reason"].startswith("no acknowledgment of dispatch")
        [reassigned] = log_of(view, "reassigned")
        assert reassigned["unit_id"] == "MUTE" and reassigned["to_unit_id"] == "BACKUP" and reassigned["escalated"]
        assert "no acknowledgment" in reassigned["reason"]
        # The first dispatch went out, was re-sent once with the same cmd_id, then withdrawn by a cancel.
        mute_cmds = [decode_command(p) for t, p in published if t == topics.device_topic("mute-trk", "cmd")]
        assert [(c.type, c.cmd_id) for c in mute_cmds[:2]] == [("dispatch", mute_cmd), ("dispatch", mute_cmd)]
        assert mute_cmds[2].type == "cancel" and len(mute_cmds) == 3
        assert [c.type for c in backup.commands] == ["dispatch"]
        assert backup.commands[0].cmd_id == second["cmd_id"] != mute_cmd
        assert hub.hub.live.units["BACKUP"].status == "acknowledged"
        # The command centre was told twice: at the re-send, and at the escalation.
        alerts = (await hub.api.get("/api/v1/alerts")).json()["alerts"]
        unacked = [a for a in reversed(alerts) if a["kind"] == "unacknowledged"]
        assert [a["unit_id"] for a in unacked] == ["MUTE", "MUTE"]
        assert "re-sent" in unacked[0]["text"] and "escalated to BACKUP" in unacked[1]["text"]
        assert unacked[1]["to_unit_id"] == "BACKUP" and unacked[1]["incident_id"] == iid
        assert hub.hub.live.units["MUTE"].status == "available"

        # Nobody left to take over: the escalation says so in the log.
        other = (await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 3})).json()["id"]
        assert (await hub.api.post(f"/api/v1/incidents/{other}/dispatch", json={"unit_ids": ["MUTE"]})).status_code \
            == 200

        async def noted() -> Any:
            view = await incident(hub, other)
            return [n["text"] for n in log_of(view, "note")]

        notes = await wait_for(noted, timeout=15)
        assert notes == ["no available unit to take over from MUTE"]
        view = await incident(hub, other)
        assert log_of(view, "reassigned")[0]["to_unit_id"] is None
        assert [a["status"] for a in view["assignments"]] == ["cancelled"]


async def test_priority_one_is_auto_dispatched_on_creation(hub: RunningHub) -> None:
    await hub.put_unit("A1", ["a1-trk"])
    await hub.put_unit("A2", ["a2-trk"])
    async with DeviceClient("a1-trk", await hub.device_url("a1-trk"), unit_id="A1") as a1, \
            DeviceClient("a2-trk", await hub.device_url("a2-trk"), unit_id="A2") as a2:
        t = now_ms() - 1000
        send(a1, parked(*offset(LAT, LON, 300, 0), t, 1))
        send(a2, parked(*offset(LAT, LON, 2000, 0), t, 1))
        await wait_for(lambda: all(hub.hub.live.units[u].fix for u in ("A1", "A2")))
        r = await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 3})
        assert r.status_code == 201, r.text
        assert r.json()["assignments"] == [] and r.json()["milestones"]["dispatched"] is None
        r = await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 1})
        assert r.status_code == 201, r.text
        created = r.json()
        [assignment] = created["assignments"]
        assert assignment["unit_id"] == "A1" and created["milestones"]["dispatched"]["unit_id"] == "A1"
        await milestone(hub, created["id"], "acknowledged")
        assert [c.cmd_id for c in a1.commands] == [assignment["cmd_id"]] and a2.commands == []
        # The next priority-1 incident takes the other unit, the one after finds nobody and says so.
        second = (await hub.api.post("/api/v1/incidents", json=INCIDENT)).json()
        assert [a["unit_id"] for a in second["assignments"]] == ["A2"]
        third = (await hub.api.post("/api/v1/incidents", json=INCIDENT)).json()
        assert third["assignments"] == []
        assert "no available unit" in log_of(third, "note")[0]["text"]


async def test_arrival_sends_video_start_to_the_body_camera(hub: RunningHub) -> None:
    origin = offset(LAT, LON, -1505.0, 0)
    await hub.put_unit("V1", ["v1-trk", "v1-body"])
    url = hub.hub.mqtt_url or ""
    async with DeviceClient("v1-trk", url, unit_id="V1") as trk, \
            DeviceClient("v1-body", url, unit_id="V1", kind="bodycam") as body:
        send(trk, parked(*origin, now_ms() - 2000, 2))
        await wait_for(lambda: hub.hub.live.units["V1"].fix is not None)
        await wait_for(lambda: hub.hub.live.devices.get("v1-body") and hub.hub.live.devices["v1-body"].kind)
        iid = (await hub.api.post("/api/v1/incidents", json={**INCIDENT, "priority": 3})).json()["id"]
        r = await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": ["V1"]})
        dispatched_ts = r.json()["assignments"][0]["dispatched"]
        await milestone(hub, iid, "acknowledged")
        assert [c.type for c in body.commands] == ["dispatch"]
        still = parked(*origin, dispatched_ts + 1000, 20)
        moving = drive_in(still[-1].ts + 1000)
        stay = parked(moving[-1].lat, moving[-1].lon, moving[-1].ts + 1000, 180)
        send(trk, still + moving + stay)
        arrived = await milestone(hub, iid, "arrived")
        assert arrived["source"] == "geofence"

        await wait_for(lambda: len(body.commands) == 2)
        video = body.commands[1]
        assert video.type == "video_start"
        assert video.body["whip_url"] == "https://hub.example:8443/whip/v1-body"
        assert isinstance(video.body["token"], str) and len(video.body["token"]) >= 16
        assert video.body["token_expires"] > video.ts
        assert video.body["keyframe_interval_ms"] == 2000
        assert [c.type for c in trk.commands] == ["dispatch"]  # not a camera

        async def notes() -> Any:
            texts = [n["text"] for n in log_of(await incident(hub, iid), "note")]
            return texts if len(texts) == 2 else None

        assert await wait_for(notes) == [f"video_start sent to v1-body (cmd {video.cmd_id})",
                                         "video_start acknowledged by v1-body"]
