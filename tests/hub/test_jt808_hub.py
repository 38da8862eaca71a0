"""JT/T 808 terminals in a running hub (real PostgreSQL, real Mosquitto, real TCP): the simulated terminal of
sim.jt808_terminal, provisioned through the REST API with its phone number, registers and authenticates; its unit is
dispatched through the API and the terminal shows the 0x8300 text and answers 0x0001 (the incident's
``acknowledged``); it drives to the scene (``departed`` by motion, ``arrived`` by geofence at its first report inside
the zone, as for an MQTT device); its emergency button raises an ``sos`` alert and an SOS incident. Revocation
disconnects it at once; a rotation reopens its registration and it registers again. 2019 headers on a GCJ-02 hub
land at the WGS-84 truth.

The drive's reports are one second apart on the terminal's own clock (its ``wall``), sent four times faster than
that, so the 60 s stop that makes an arrival a stay takes 15 s of the test; the terminal's clock runs ahead of the
hub's by at most about a minute and a half, well inside the pipeline's future-skew window.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from geo.gcj02 import wgs84_to_gcj02
from geo.geodesy import haversine_m, offset
from hub.config import Settings
from hub.gateways.jt808 import Jt808Gateway
from jt808.messages import TEXT_DISPLAY, TEXT_EMERGENCY, TEXT_TTS
from sim.jt808_terminal import Jt808Terminal, Jt808TerminalConfig
from tests.conftest import RunningHub, running_hub, wait_for
from tests.hub.test_incidents_api import INCIDENT, LAT, LON, incident, milestone

PHONE = "13800138000"
TERMINAL_ID = "SIM0001"
DEV, UNIT = "jt-trk-1", "JT1"
START_NORTH_M = -505.0  # parked this far south of the incident
SPEED_MPS = 12.0  # 43 km/h through town
STOP_NORTH_M = -35.0  # where it parks on scene
ZONE_M = 100.0  # the built-in arrival zone of a robbery


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Dispatch is explicit (no auto-dispatch on creation); the JT/T 808 server on a free loopback port."""
    return settings.model_copy(update={"auto_dispatch_priority": 0, "jt808": True, "jt808_host": "127.0.0.1",
                                       "jt808_port": 0})


@pytest.fixture
async def jthub(settings: Settings) -> AsyncIterator[RunningHub]:
    async with running_hub(settings) as rh:
        yield rh


def gateway(rh: RunningHub) -> Jt808Gateway:
    gw = rh.hub.jt808
    assert gw is not None, "the JT/T 808 gateway is on"
    return gw


async def admin(rh: RunningHub) -> httpx.AsyncClient:
    secret = await rh.hub.create_token("admin", "installer")
    return httpx.AsyncClient(base_url=rh.base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=10)


async def provision(rh: RunningHub, device_id: str, unit_id: str, phone: str) -> dict[str, Any]:
    """The terminal's device added to ``unit_id`` (created empty) through the REST API, as an installer would."""
    await rh.put_unit(unit_id, [])
    async with await admin(rh) as api:
        r = await api.post("/api/v1/devices", json={"device_id": device_id, "unit_id": unit_id, "protocol": "jt808",
                                                    "kind": "vehicle", "phone": phone, "terminal_id": TERMINAL_ID})
    assert r.status_code == 201, r.text
    creds: dict[str, Any] = r.json()
    return creds


async def reached(rh: RunningHub, incident_id: str, name: str, timeout: float) -> dict[str, Any]:
    """The milestone once set (``milestone`` of the MQTT tests, with a longer wait: the arrival takes a stay)."""
    async def found() -> Any:
        return (await incident(rh, incident_id))["milestones"][name]
    value: dict[str, Any] = await wait_for(found, timeout=timeout)
    return value


class Drive:
    """The terminal's scripted position source and clock: each report is one second of device time. Parked south
    of the incident until :meth:`go`, then north at ``SPEED_MPS`` to ``STOP_NORTH_M`` and parked there."""

    def __init__(self) -> None:
        self.t_s = int(time.time()) - 1
        self.north = START_NORTH_M
        self.driving = False
        self.reports: list[tuple[int, float, float, float]] = []  # ts ms, lat, lon, m/s: what the terminal sent

    def go(self) -> None:
        self.driving = True

    def position(self) -> tuple[float, float, float, float, float]:
        self.t_s += 1
        speed = 0.0
        if self.driving and self.north < STOP_NORTH_M:
            self.north = min(self.north + SPEED_MPS, STOP_NORTH_M)
            speed = SPEED_MPS
        lat, lon = offset(LAT, LON, self.north, 0.0)
        # As the terminal sends them: micro-degrees, 0.1 km/h.
        self.reports.append((self.t_s * 1000, round(lat * 1e6) / 1e6, round(lon * 1e6) / 1e6,
                             round(speed * 36) / 36))
        return lat, lon, speed * 3.6, 0.0, 20.0

    def wall(self) -> float:
        return float(self.t_s)

    def first_moving(self) -> int:
        return next(ts for ts, _, _, speed in self.reports if speed > 0)

    def first_inside(self) -> int:
        return next(ts for ts, lat, lon, _ in self.reports if haversine_m(LAT, LON, lat, lon) < ZONE_M)


def terminal_config(port: int, phone: str = PHONE, **extra: Any) -> Jt808TerminalConfig:
    """A terminal quick to retry (the standard's minutes are seconds here)."""
    base: dict[str, Any] = {"host": "127.0.0.1", "port": port, "phone": phone, "terminal_id": TERMINAL_ID,
                            "response_timeout_s": 3.0, "reconnect_s": 0.2, "register_retry_s": 0.3,
                            "retry_max_s": 1.0, "heartbeat_s": 30.0, "report_s": 1.0}
    return Jt808TerminalConfig(**{**base, **extra})


async def test_terminal_is_dispatched_acknowledges_drives_in_and_raises_sos(jthub: RunningHub) -> None:
    creds = await provision(jthub, DEV, UNIT, PHONE)
    gw = gateway(jthub)
    assert creds["password"] is None and creds["protocol"] == "jt808"
    setup = creds["gateway"]
    assert setup["protocol"] == "jt808" and setup["enabled"] is True and setup["registration_open"] is True
    assert (setup["host"], setup["port"], setup["phone"], setup["terminal_id"]) == ("127.0.0.1", gw.port, PHONE,
                                                                                    TERMINAL_ID)
    assert jthub.hub.live.devices[DEV].unit_id == UNIT and jthub.hub.live.units[UNIT].devices == [DEV]
    iid = (await jthub.api.post("/api/v1/incidents", json=INCIDENT)).json()["id"]

    drive = Drive()
    shown: list[tuple[str, int]] = []
    config = terminal_config(gw.port, position=drive.position, report_s=0.25)
    async with Jt808Terminal(config, wall=drive.wall, on_text=lambda text, flags: shown.append((text, flags))) as term:
        await wait_for(term.authenticated.is_set, timeout=10)
        assert term.counters.events["registered"] == 1 and term.auth_code is not None
        await wait_for(lambda: gw.online(DEV) and jthub.hub.live.units[UNIT].fix is not None)
        assert jthub.hub.live.devices[DEV].state == "online"

        r = await jthub.api.post(f"/api/v1/incidents/{iid}/dispatch", json={"unit_ids": [UNIT]})
        assert r.status_code == 200, r.text
        [assignment] = r.json()["assignments"]
        dispatched_ts = assignment["dispatched"]

        # On the wire: the order as a 0x8300 text, shown, spoken and marked urgent (priority 1); answered 0x0001.
        await wait_for(lambda: term.texts)
        [(text, flags)] = list(term.texts)
        assert shown == [(text, flags)]
        assert flags == TEXT_DISPLAY | TEXT_TTS | TEXT_EMERGENCY
        assert text == f"P1 robbery 1 Main St shop robbed [{iid}]"
        ack = await milestone(jthub, iid, "acknowledged")
        ack_ts = await wait_for(lambda: jthub.count(
            "SELECT coalesce(max(ts), 0) FROM device_events WHERE type = 'ack' AND device_id = %s", DEV))
        assert ack == {"ts": ack_ts, "source": "device", "unit_id": UNIT}
        assert ack_ts >= dispatched_ts
        assert gw.counters["acks"] == 1

        # Parked a few more reports after the dispatch, then it drives to the scene and stays.
        after = len(drive.reports) + 5
        await wait_for(lambda: len(drive.reports) >= after)
        drive.go()
        departed = await milestone(jthub, iid, "departed")
        assert departed == {"ts": drive.first_moving(), "source": "motion", "unit_id": UNIT}
        arrived = await reached(jthub, iid, "arrived", timeout=40)
        assert arrived == {"ts": drive.first_inside(), "source": "geofence", "unit_id": UNIT}
        await wait_for(lambda: jthub.hub.live.units[UNIT].status == "on_scene")
        assert (await incident(jthub, iid))["assignments"][0]["status"] == "on_scene"

        # The emergency button: the report is confirmed as an alarm; an sos alert and an SOS incident.
        term.emergency(True)
        await wait_for(lambda: term.counters.events["alarm_confirmed"] == 1)

        async def sos_alert() -> dict[str, Any] | None:
            alerts = (await jthub.api.get("/api/v1/alerts")).json()["alerts"]
            return next((a for a in alerts if a["kind"] == "sos" and a.get("incident_id")), None)

        alert = await wait_for(sos_alert)
        assert alert["device_id"] == DEV and alert["unit_id"] == UNIT
        assert haversine_m(alert["lat"], alert["lon"], *offset(LAT, LON, STOP_NORTH_M, 0.0)) < 1.0
        sos = await incident(jthub, alert["incident_id"])
        assert sos["category"] == "sos" and sos["priority"] == 1 and sos["status"] == "open"
        # Held down: no second sos while the bit stays set.
        after = len(drive.reports) + 3
        await wait_for(lambda: len(drive.reports) >= after)
        assert gw.counters["sos"] == 1
    assert term.counters.rejected == {} and term.counters.gave_up == {}
    # The terminal hung up: offline at once.
    await wait_for(lambda: jthub.hub.live.devices[DEV].state == "offline", timeout=5)


async def test_revocation_drops_the_terminal_and_rotation_reopens_its_registration(jthub: RunningHub) -> None:
    await provision(jthub, DEV, UNIT, PHONE)
    await provision(jthub, "jt-trk-2", "JT2", "13800138002")
    gw = gateway(jthub)
    async with Jt808Terminal(terminal_config(gw.port)) as revoked, \
            Jt808Terminal(terminal_config(gw.port, phone="13800138002")) as rotated:
        await wait_for(lambda: gw.online(DEV) and gw.online("jt-trk-2"))
        await wait_for(lambda: jthub.hub.live.devices[DEV].state == "online")
        first_code = rotated.auth_code
        async with await admin(jthub) as api:
            r = await api.delete(f"/api/v1/devices/{DEV}")
            assert r.status_code == 200, r.text
            # Revoked: its connection is closed at once, and it is offline.
            await wait_for(lambda: not gw.online(DEV), timeout=1.0)
            await wait_for(lambda: jthub.hub.live.devices[DEV].state == "offline", timeout=3)
            # It comes back; its code is refused, and its registration too (an unknown phone): never online.
            await wait_for(lambda: revoked.counters.refused["register_4"] >= 1, timeout=10)
            assert revoked.counters.events["auth_failed"] >= 1 and revoked.auth_code is None
            assert not gw.online(DEV) and not revoked.authenticated.is_set()

            r = await api.post("/api/v1/devices/jt-trk-2/rotate")
            assert r.status_code == 200, r.text
            assert r.json()["gateway"]["registration_open"] is True and r.json()["password"] is None
        # Rotated: dropped at once; its old code is refused, so it forgets it, registers again and is back.
        await wait_for(lambda: rotated.counters.events["registered"] == 2, timeout=10)
        await wait_for(lambda: gw.online("jt-trk-2") and rotated.authenticated.is_set(), timeout=10)
        assert rotated.counters.events["auth_failed"] == 1 and rotated.auth_code != first_code
        assert rotated.counters.events["connects"] >= 2 and gw.counters["kicked"] == 2
        await wait_for(lambda: jthub.hub.live.devices["jt-trk-2"].state == "online", timeout=3)
        # The window closed again behind it: the same phone cannot take a new code.
        login = await jthub.hub.gateways.devices.store.by_device("jt-trk-2")  # type: ignore[union-attr]
        assert login is not None and login.registration_open is False


@pytest.fixture
def gcj_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"jt808_datum": "gcj02"})


async def test_2019_headers_on_a_gcj02_hub_land_at_the_wgs84_truth(gcj_settings: Settings) -> None:
    truth = (31.2304, 121.4737)  # Shanghai, where the offset is about 500 m
    assert haversine_m(*truth, *wgs84_to_gcj02(*truth)) > 300
    async with running_hub(gcj_settings) as rh:
        await provision(rh, DEV, UNIT, "013912345678")
        gw = gateway(rh)
        config = terminal_config(gw.port, phone="013912345678", version=2019, datum="gcj02",
                                 position=lambda: (*truth, 0.0, 0.0, 5.0))
        async with Jt808Terminal(config):
            await wait_for(lambda: rh.count("SELECT count(*) FROM fixes WHERE device_id = %s", DEV))
        [row, *_] = await rh.hub.db.track([DEV], 0, 2**53, 10)
        assert haversine_m(row["lat"], row["lon"], *truth) < 1.0
        fix = rh.hub.live.devices[DEV].fix
        assert fix is not None and haversine_m(fix.lat, fix.lon, *truth) < 1.0
