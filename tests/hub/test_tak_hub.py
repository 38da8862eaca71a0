"""Cursor-on-Target through the running hub (FIELDHUB_TAK on), with a real taky server as the TAK peer: the hub's
units, incidents and an SOS beacon (raised by a device's SOS, cancelled when its SOS incident closes) reach a plain
TAK client through taky; a TAK user's position report comes back as a unit of kind "tak" whose fixes are stored,
and a dispatch to it is not waited on (a TAK client cannot sign: the dispatcher is told to confirm by radio)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devices.client import DeviceClient
from devices.clock import now_ms
from geo.geodesy import offset
from hub.config import Settings
from hub.gateways.tak import cot
from tests.conftest import RunningHub, running_hub, wait_for
from tests.hub.gateways.taky_server import taky_server
from tests.hub.gateways.test_tak_taky import CotClient, _detail, atak_pli
from tests.hub.test_incidents_api import INCIDENT, LAT, LON, incident, parked, send


@pytest.fixture
async def takhub(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[RunningHub, CotClient]]:
    with taky_server(tmp_path) as server:
        enabled = settings.model_copy(update={"tak": True, "tak_url": server.url, "tak_interval_s": 1.0,
                                              "auto_dispatch_priority": 0, "ack_timeout_s": 2.0})
        async with running_hub(enabled) as rh:
            assert rh.hub.gateways.tak is not None
            await wait_for(lambda: rh.hub.gateways.tak.connected if rh.hub.gateways.tak else False, timeout=15)
            client = await CotClient.connect(server)
            try:
                yield rh, client
            finally:
                await client.close()


async def test_units_incidents_and_an_sos_reach_tak_and_a_tak_user_joins(
        takhub: tuple[RunningHub, CotClient]) -> None:
    hub, client = takhub
    await hub.put_unit("T1", ["t1-radio"], name="Patrol T1")
    async with DeviceClient("t1-radio", hub.hub.mqtt_url or "", unit_id="T1", kind="radio") as radio:
        send(radio, parked(*offset(LAT, LON, 300, 0), now_ms() - 1000, 1))
        await wait_for(lambda: client.find("fieldhub-unit-T1", "a-f-G-U-C"), timeout=15)
        unit = client.find("fieldhub-unit-T1")[-1]
        assert _detail(unit, "contact").get("callsign") == "Patrol T1"
        point = unit.find("point")
        assert point is not None and abs(float(point.get("lat", "")) - offset(LAT, LON, 300, 0)[0]) < 1e-6

        r = await hub.api.post("/api/v1/incidents", json=INCIDENT)
        assert r.status_code == 201, r.text
        iid = r.json()["id"]
        await wait_for(lambda: client.find(f"fieldhub-incident-{iid}", cot.INCIDENT_TYPE), timeout=10)
        remarks = _detail(client.find(f"fieldhub-incident-{iid}")[-1], "remarks").text or ""
        assert "category: robbery" in remarks and "1 Main St" in remarks

        # The radio's SOS: the beacon goes out at once; closing the SOS incident cancels it.
        radio.send_event("sos")
        beacon = "fieldhub-unit-T1-9-1-1"
        await wait_for(lambda: client.find(beacon, cot.SOS_TYPE), timeout=10)
        assert _detail(client.find(beacon, cot.SOS_TYPE)[0], "emergency").text == "Patrol T1"

        async def sos_incident() -> Any:
            found = (await hub.api.get("/api/v1/incidents", params={"status": "open"})).json()["incidents"]
            return [i["id"] for i in found if i["category"] == "sos"]

        [sos_id] = await wait_for(sos_incident)
        r = await hub.api.post(f"/api/v1/incidents/{sos_id}/close", json={"reason": "officer safe"})
        assert r.status_code == 200, r.text
        await wait_for(lambda: client.find(beacon, cot.SOS_CANCEL_TYPE), timeout=10)

    # A TAK user: its report becomes a unit of kind "tak" with a stored fix, and is not echoed back to TAK.
    await client.send(atak_pli("ANDROID-5c1d00aa", "FALCON 3", LAT + 0.003, LON))
    device_id = cot.device_id_for("ANDROID-5c1d00aa")
    await wait_for(lambda: hub.count("SELECT count(*) FROM fixes WHERE device_id = %s", device_id), timeout=15)
    assert hub.hub.live.units[device_id].kind == "tak"
    assert hub.hub.live.units[device_id].name == "FALCON 3"
    await asyncio.sleep(2.5)
    assert not client.find(cot.unit_uid(device_id))

    # Not the hub's to send: never recommended (nor auto-dispatched), though next to the incident.
    r = await hub.api.get(f"/api/v1/incidents/{iid}/recommendations", params={"count": 5})
    assert r.status_code == 200, r.text
    assert device_id not in [c["unit_id"] for c in r.json()["recommendations"]]
    # Dispatched to the incident by hand: the hub sends it nothing and does not wait for a signature it cannot give.
    r = await hub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": [device_id]})
    assert r.status_code == 200, r.text

    async def cannot_sign() -> Any:
        alerts = (await hub.api.get("/api/v1/alerts")).json()["alerts"]
        return [a for a in alerts if a["kind"] == "unacknowledged" and a.get("cannot_sign")]

    await wait_for(cannot_sign, timeout=15)
    view = await incident(hub, iid)
    assert view["assignments"][0]["unit_id"] == device_id and view["assignments"][0]["status"] != "cancelled"
    assert view["milestones"]["acknowledged"] is None
    tak = hub.hub.gateways.tak
    assert tak is not None and set(tak.rejects) <= {"own_uid"}
