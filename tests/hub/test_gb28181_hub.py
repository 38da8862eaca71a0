"""GB/T 28181 devices in a running hub: provisioned with the device commands (REST and CLI: a 20-digit id and a
password, of which only the digest HA1 is stored), registered by SIPp against the hub's own SIP server, refused
with a wrong password, dropped at once when revoked; a SIP port in use stops the start-up with its name."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import socket
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.config import Settings
from hub.errors import HubStartError
from tests.conftest import RunningHub, hub_env, running_hub, wait_for
from tests.gb28181.sipp import run_sipp

SERVER = "34020000002000000001"
DOMAIN = SERVER[:10]
DEV = "34020000001320000042"
UNIT = "GB-U1"

needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (Debian sip-tester) is not installed")


@pytest.fixture
async def gbhub(settings: Settings) -> RunningHub:
    enabled = settings.model_copy(update={"gb28181": True, "gb28181_host": "127.0.0.1", "gb28181_port": 0})
    async with running_hub(enabled) as rh:
        yield rh  # type: ignore[misc]


async def _admin(hub: RunningHub) -> httpx.AsyncClient:
    secret = await hub.hub.create_token("admin", "installer")
    return httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=10)


def _port(hub: RunningHub) -> int:
    assert hub.hub.gb28181 is not None
    return hub.hub.gb28181.udp_port


@needs_sipp
async def test_a_provisioned_camera_registers_and_only_its_digest_is_kept(gbhub: RunningHub, tmp_path: Path) -> None:
    await gbhub.put_unit(UNIT, [])
    async with await _admin(gbhub) as admin:
        r = await admin.post("/api/v1/devices", json={"device_id": DEV, "unit_id": UNIT, "protocol": "gb28181"})
        assert r.status_code == 201, r.text
        assert r.headers["cache-control"] == "no-store"
        creds = r.json()
    password = creds["password"]
    assert creds["protocol"] == "gb28181" and creds["username"] == DEV and len(password) == 20
    assert creds["sip"] == {"server_id": SERVER, "domain": DOMAIN, "host": "127.0.0.1", "port": _port(gbhub),
                            "transport": "udp or tcp", "enabled": True}
    # Only HA1 = MD5(id:realm:password) is stored; no MQTT login was made.
    async with gbhub.hub.db.connection() as conn:
        cur = await conn.execute("SELECT realm, ha1 FROM sip_logins WHERE device_id = %s", (DEV,))
        row = await cur.fetchone()
        cur = await conn.execute("SELECT count(*) FROM device_logins WHERE device_id = %s", (DEV,))
        mqtt = await cur.fetchone()
    assert row is not None and mqtt == (0,)
    assert row == (DOMAIN, hashlib.md5(f"{DEV}:{DOMAIN}:{password}".encode()).hexdigest())
    assert password not in " ".join(row)
    # The device is on its unit's live picture at once.
    assert gbhub.hub.live.devices[DEV].unit_id == UNIT
    # A wrong password is refused; the right one registers, and the keepalive is answered.
    assert await run_sipp(_port(gbhub), "register_refused.xml", tmp_path, [DEV, DOMAIN, SERVER], user=DEV,
                          password=password + "x") == 0
    assert await run_sipp(_port(gbhub), "register.xml", tmp_path, [DEV, DOMAIN, SERVER], user=DEV,
                          password=password) == 0
    gw = gbhub.hub.gb28181
    assert gw is not None and gw.registrar.presence.get(DEV) is not None
    # The list shows the protocol, never a secret.
    async with await _admin(gbhub) as admin:
        listed = (await admin.get("/api/v1/devices")).json()["devices"]
        [mine] = [d for d in listed if d["device_id"] == DEV]
        assert mine["protocol"] == "gb28181" and mine["login"] == "active" and password not in json.dumps(listed)
        # Revoked: its registration is dropped at once, and it can no longer register.
        r = await admin.delete(f"/api/v1/devices/{DEV}")
        assert r.status_code == 200, r.text
    assert gw.registrar.presence.get(DEV) is None
    assert await run_sipp(_port(gbhub), "register_unknown.xml", tmp_path, [DEV, DOMAIN, SERVER], user=DEV,
                          password=password) == 0


async def test_rotate_with_a_chosen_password_and_refusals(gbhub: RunningHub) -> None:
    await gbhub.put_unit(UNIT, [])
    async with await _admin(gbhub) as admin:
        for body, why in (
            ({"device_id": "3402000000132000004", "unit_id": UNIT, "protocol": "gb28181"}, "20 digits"),
            ({"device_id": DEV, "unit_id": UNIT, "protocol": "gb28181", "password": 'has"quote'}, "quotes"),
            ({"device_id": DEV, "unit_id": UNIT, "protocol": "mqtt", "password": "abcdefgh1"}, "generated"),
        ):
            r = await admin.post("/api/v1/devices", json=body)
            assert r.status_code == 422 and why in r.json()["error"]["message"], (body, r.text)
        for body in ({"device_id": DEV, "unit_id": UNIT, "protocol": "sip"},
                     {"device_id": DEV, "unit_id": UNIT, "protocol": "gb28181", "password": "short"}):
            assert (await admin.post("/api/v1/devices", json=body)).status_code == 422
        r = await admin.post("/api/v1/devices", json={"device_id": DEV, "unit_id": UNIT, "protocol": "gb28181",
                                                      "password": "Camera-Pass-01"})
        assert r.status_code == 201 and r.json()["password"] == "Camera-Pass-01"
        # Its id cannot get a second login of either kind.
        for protocol in ("gb28181", "mqtt"):
            r = await admin.post("/api/v1/devices", json={"device_id": DEV, "unit_id": UNIT, "protocol": protocol})
            assert r.status_code == 409, r.text
        r = await admin.post(f"/api/v1/devices/{DEV}/rotate", json={"password": "Camera-Pass-02"})
        assert r.status_code == 200 and r.json()["password"] == "Camera-Pass-02" and r.json()["protocol"] == "gb28181"
        r = await admin.post(f"/api/v1/devices/{DEV}/rotate")
        assert r.status_code == 200 and len(r.json()["password"]) == 20
    secret = await gbhub.hub.gb28181.registrar.password_of(DEV)  # type: ignore[union-attr]
    assert secret == hashlib.md5(f"{DEV}:{DOMAIN}:{r.json()['password']}".encode()).hexdigest()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(device_id=st.text(min_size=0, max_size=30), password=st.text(min_size=0, max_size=40))
async def test_hostile_gb28181_bodies_never_500(gbhub: RunningHub, device_id: str, password: str) -> None:
    async with await _admin(gbhub) as admin:
        r = await admin.post("/api/v1/devices", json={"device_id": device_id, "unit_id": "NOUNIT",
                                                      "protocol": "gb28181", "password": password})
    assert r.status_code in (404, 409, 422), r.text


async def test_cli_adds_a_camera_with_its_password_from_stdin(gbhub: RunningHub) -> None:
    await gbhub.put_unit(UNIT, [])
    env = hub_env(gbhub.hub.settings)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fieldhub", "device", "add", DEV, "--unit", UNIT, "--protocol", "gb28181",
        "--password-stdin", "--json", env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(b"From-Stdin-99\n"), 60)
    assert proc.returncode == 0, err.decode()
    answer = json.loads(out)
    assert answer["password"] == "From-Stdin-99" and answer["sip"]["server_id"] == SERVER
    # The running hub heard of it: the camera is on its unit, and the CLI's list shows the protocol.
    await wait_for(lambda: DEV in gbhub.hub.live.devices, timeout=5)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "fieldhub", "device", "list", env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    [line] = [x for x in out.decode().splitlines() if x.startswith(DEV)]
    assert "gb28181" in line and "active" in line and "From-Stdin-99" not in out.decode()


async def test_a_sip_port_in_use_stops_the_start_quickly(settings: Settings) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        busy = settings.model_copy(update={"gb28181": True, "gb28181_host": "127.0.0.1", "gb28181_port": port})
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(HubStartError, match="gb28181"):
            async with running_hub(busy):
                pass
        assert loop.time() - started < 15


@needs_sipp
async def test_metrics_count_registrations_and_refusals(gbhub: RunningHub, tmp_path: Path) -> None:
    await gbhub.put_unit(UNIT, [])
    async with await _admin(gbhub) as admin:
        r = await admin.post("/api/v1/devices", json={"device_id": DEV, "unit_id": UNIT, "protocol": "gb28181"})
        password = r.json()["password"]
    assert await run_sipp(_port(gbhub), "register.xml", tmp_path, [DEV, DOMAIN, SERVER], user=DEV,
                          password=password) == 0
    assert await run_sipp(_port(gbhub), "register_refused.xml", tmp_path, [DEV, DOMAIN, SERVER], user=DEV,
                          password="wrong-password") == 0
    text = (await gbhub.api.get("/metrics")).text
    assert "fieldhub_gb28181_registered 1.0" in text
    assert 'fieldhub_gb28181_sip_total{event="registered"} 1.0' in text
    assert 'fieldhub_gb28181_sip_total{event="auth_failed"} 1.0' in text
