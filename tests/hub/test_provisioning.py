"""Provisioning device logins: REST (admin only), the CLI, what is stored (a digest only), and the tables EMQX reads."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.broker import BrokerAddress
from devices.client import DeviceClient
from hub.domain.device_login import StoredLogin, verify_secret
from tests.conftest import RunningHub, hub_env, wait_for


async def _admin(hub: RunningHub) -> httpx.AsyncClient:
    secret = await hub.hub.create_token("admin", "installer")
    return httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=10)


async def test_rest_add_rotate_revoke_and_only_a_digest_is_kept(hub: RunningHub) -> None:
    await hub.put_unit("U1", [])
    # A dispatcher may not hand out logins.
    r = await hub.api.post("/api/v1/devices", json={"device_id": "u1-cam", "unit_id": "U1"})
    assert r.status_code == 403
    async with await _admin(hub) as admin:
        r = await admin.post("/api/v1/devices", json={"device_id": "u1-cam", "unit_id": "U1", "kind": "bodycam"})
        assert r.status_code == 201, r.text
        assert r.headers["cache-control"] == "no-store"
        first = r.json()
        assert first["username"] == first["client_id"] == "u1-cam" and len(first["password"]) >= 40
        assert (await admin.post("/api/v1/devices", json={"device_id": "u1-cam", "unit_id": "U1"})).status_code == 409
        r = await admin.post("/api/v1/devices", json={"device_id": "x1", "unit_id": "NOPE"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_unit"
        # A device named like the hub's or the administrator's broker login would replace that login: refused.
        for name in (hub.hub.settings.mqtt_client_id, "fieldhub-admin", "tests-service"):
            r = await admin.post("/api/v1/devices", json={"device_id": name, "unit_id": "U1"})
            assert r.status_code == 422 and "broker login" in r.json()["error"]["message"], (name, r.text)
        # The device is on its unit at once: its fixes are not `unknown_device`.
        assert hub.hub.live.devices["u1-cam"].unit_id == "U1"
        async with hub.hub.db.connection() as conn:
            cur = await conn.execute("SELECT device_id, salt, secret_hash, iterations FROM device_logins "
                                     "WHERE device_id = 'u1-cam'")
            stored = await cur.fetchone()
        assert stored is not None and first["password"] not in " ".join(map(str, stored))
        login = StoredLogin("u1-cam", stored[1], stored[2], stored[3])
        assert verify_secret(login, first["password"]) and not verify_secret(login, first["password"] + "x")
        old_url = BrokerAddress.parse(first["mqtt_url"]).with_login("u1-cam", first["password"]).url()
        async with DeviceClient("u1-cam", old_url, unit_id="U1") as dev:
            assert dev.connected
            r = await admin.post("/api/v1/devices/u1-cam/rotate")
            assert r.status_code == 200, r.text
            second = r.json()
            assert second["password"] != first["password"]
            await wait_for(lambda: not dev.connected, timeout=5)  # the old secret's session is ended ...
            await asyncio.sleep(1.5)
            assert not dev.connected  # ... and refused from then on
        new_url = BrokerAddress.parse(second["mqtt_url"]).with_login("u1-cam", second["password"]).url()
        async with DeviceClient("u1-cam", new_url, unit_id="U1") as dev:
            assert dev.connected
        r = await admin.get("/api/v1/devices")
        assert first["password"] not in r.text and second["password"] not in r.text and "hash" not in r.text
        assert (await admin.delete("/api/v1/devices/u1-cam")).status_code == 200
        assert (await admin.delete("/api/v1/devices/u1-cam")).status_code == 404
        actions = [(a["action"], a["target"]) for a in (await admin.get("/api/v1/audit")).json()["entries"]
                   if a["action"].startswith("device.")]
        assert actions == [("device.revoke", "u1-cam"), ("device.rotate", "u1-cam"), ("device.add", "u1-cam")]


async def test_hostile_device_bodies_are_refused_cleanly(hub: RunningHub) -> None:
    await hub.put_unit("U1", [])
    async with await _admin(hub) as admin:

        # Hypothesis drives a sync function; draw the examples first, then send them.
        bodies: list[dict[str, object]] = []

        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(st.one_of(st.text(max_size=80), st.integers(), st.none()),
               st.one_of(st.text(max_size=12), st.none()))
        def collect(device_id: object, kind: object) -> None:
            bodies.append({"device_id": device_id, "unit_id": "U1", "kind": kind})

        collect()
        for body in bodies:
            r = await admin.post("/api/v1/devices", json=body)
            assert r.status_code in (201, 409, 422), (body, r.status_code, r.text)
            assert "error" in r.json() or r.status_code == 201


async def test_cli_add_list_revoke_against_a_running_hub(hub: RunningHub) -> None:
    await hub.put_unit("U2", [])
    env = hub_env(hub.hub.settings)

    async def cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "fieldhub", "device", *args, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = await cli("add", "u2-radio", "--unit", "U2", "--kind", "radio", "--json")
    assert code == 0, err
    creds = json.loads(out)
    url = BrokerAddress.parse(creds["mqtt_url"]).with_login(creds["username"], creds["password"]).url()
    code, out, err = await cli("add", "u2-radio", "--unit", "U2")
    assert code == 2 and "already has a login" in err and "Traceback" not in err
    code, out, _ = await cli("list")
    assert "u2-radio" in out and "active" in out and creds["password"] not in out
    await wait_for(lambda: "u2-radio" in hub.hub.live.devices, timeout=5)
    async with DeviceClient("u2-radio", url, unit_id="U2", reconnect_delay=0.2) as dev:
        assert dev.connected
        code, out, err = await cli("revoke", "u2-radio")
        assert code == 0, err
        await wait_for(lambda: not dev.connected, timeout=5)
    code, out, err = await cli("revoke", "nobody")
    assert code == 2 and "no live login" in err


async def test_emqx_reads_the_same_logins(hub: RunningHub) -> None:
    """The queries of docs/brokers.md, run as EMQX runs them (its placeholders bound as parameters), and the
    password check EMQX's pbkdf2/sha512 authenticator makes, give the same answer as the broker."""
    await hub.put_unit("U3", ["u3-phone"])
    url = await hub.device_url("u3-phone")
    secret = BrokerAddress.parse(url).password or ""
    authn = "SELECT password_hash, salt, is_superuser FROM mqtt_user WHERE username = %s LIMIT 1"
    authz = "SELECT permission, action, topic FROM mqtt_acl WHERE username = %s"
    async with hub.hub.db.connection() as conn:
        row = await (await conn.execute(authn, ("u3-phone",))).fetchone()
        acl = await (await conn.execute(authz, ("u3-phone",))).fetchall()
        assert row is not None
        password_hash, salt, superuser = row
        emqx = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt.encode(), 1000, 64).hex()
        assert emqx == password_hash and superuser is False
        assert sorted(acl) == sorted([("allow", "publish", "fieldhub/v1/dev/u3-phone/telemetry"),
                                      ("allow", "publish", "fieldhub/v1/dev/u3-phone/status"),
                                      ("allow", "publish", "fieldhub/v1/dev/u3-phone/event"),
                                      ("allow", "subscribe", "fieldhub/v1/dev/u3-phone/cmd")])
        await hub.hub.provisioner.revoke("u3-phone", actor="tests")  # type: ignore[union-attr]
        assert await (await conn.execute(authn, ("u3-phone",))).fetchone() is None
        assert await (await conn.execute(authz, ("u3-phone",))).fetchall() == []
        # An OwnTracks phone (issue 17) logs in the same way, with its own OwnTracks topics only.
        creds = await hub.hub.provisioner.add("u3-ot", "U3", None, actor="tests",  # type: ignore[union-attr]
                                              protocol="owntracks")
        password_hash, salt, _ = await (await conn.execute(authn, ("u3-ot",))).fetchone()  # type: ignore[misc]
        assert hashlib.pbkdf2_hmac("sha512", (creds.password or "").encode(), salt.encode(), 1000, 64).hex() == \
            password_hash
        assert sorted(await (await conn.execute(authz, ("u3-ot",))).fetchall()) == [
            ("allow", "publish", "owntracks/u3-ot/+"), ("allow", "publish", "owntracks/u3-ot/+/+"),
            ("allow", "subscribe", "owntracks/u3-ot/+/cmd")]
    assert os.environ.get("FIELDHUB_DEVICE_SECRET") is None  # nothing leaks into the environment
