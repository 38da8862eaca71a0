"""Device logins for the benchmarks, obtained as an installer obtains them: ``POST /api/v1/devices`` on the hub.

Every benchmark that publishes as devices provisions them here before its run; the secrets are kept by the stack
(:meth:`bench.stack.BenchStack.add_logins`, a 0600 file the load processes read); the broker then loads them all
at once (:meth:`bench.stack.BenchStack.reload_logins` says why not one by one). Against the anonymous comparison
broker nothing is provisioned: its devices connect without a login, as before issue 13.

A benchmark that watches the wire (``fieldhub bench dispatch`` reads every ``cmd`` topic) gets a read-only
observer login of its own from the broker's administrator: no device may read another's commands.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from typing import Any

import httpx

from bench.stack import BenchError, BenchStack
from devices.errors import DevicesError
from devices.provision import provision
from hub.access.dynsec import BrokerAdmin, BrokerAdminError

__all__ = ["PROVISION_CONCURRENCY", "observer_login", "provision_devices"]

PROVISION_CONCURRENCY = 16


async def provision_devices(stack: BenchStack, http: httpx.AsyncClient, devices: Sequence[tuple[str, str, str | None]],
                            concurrency: int = PROVISION_CONCURRENCY) -> dict[str, Any]:
    """Give each (device id, unit id, kind) its login through the hub's REST API (``http`` carries the stack's admin
    token); the units must exist. Returns how many and how long, for the results."""
    if not stack.secure:
        return {"devices": 0, "seconds": 0.0}
    gate = asyncio.Semaphore(concurrency)
    logins: dict[str, str] = {}

    async def one(device_id: str, unit_id: str, kind: str | None) -> None:
        async with gate:
            login = await provision(http, device_id, unit_id, kind)
        logins[login.username] = login.password

    started = time.monotonic()
    try:
        await asyncio.gather(*(one(*d) for d in devices))
    except (DevicesError, httpx.HTTPError) as exc:
        raise BenchError(f"provisioning device logins failed: {exc}") from exc
    finally:
        stack.add_logins(logins)  # whatever was issued, even if the rest failed
    issued_s = time.monotonic() - started
    loaded = await stack.reload_logins()
    return {"devices": len(logins), "seconds": round(issued_s, 2), "broker_logins": loaded,
            "broker_reload_s": round(time.monotonic() - started - issued_s, 2)}


async def observer_login(stack: BenchStack, topic_filter: str) -> tuple[str, str] | None:
    """A login that may only subscribe to ``topic_filter`` (the benchmark's tap on the wire), made through the
    broker's dynamic-security administrator; None for the anonymous broker (no login needed there)."""
    if stack.admin_url is None:
        return None
    username, secret = f"bench-observer-{secrets.token_hex(4)}", secrets.token_urlsafe(32)
    role = f"{username}-role"
    try:
        async with BrokerAdmin(stack.admin_url) as admin:
            await admin.run([
                {"command": "createRole", "rolename": role,
                 "acls": [{"acltype": "subscribePattern", "topic": topic_filter, "allow": True}]},
                {"command": "createClient", "username": username, "password": secret, "clientid": username,
                 "roles": [{"rolename": role}]}])
    except BrokerAdminError as exc:
        raise BenchError(f"the broker refused the observer login: {exc}") from exc
    return username, secret
