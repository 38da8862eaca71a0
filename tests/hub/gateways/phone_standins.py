"""Stand-ins for the phone gateways' tests: the login store's reads over a dict (with real PBKDF2 digests), a
recording ``Pipeline.submit``, the token registry's ``check``, a settable clock, and the hub's app as far as the
gateway routes see it (create_app's parameter rule, error table and body limit)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from hub.access.auth import FailedAuthLimiter
from hub.access.tokens import TokenRefused
from hub.api import errors
from hub.api.body_limit import BodyLimit
from hub.api.inputs import refuse_unstorable_params
from hub.api.routes import gateways
from hub.domain.device_login import new_login
from hub.gateways.osmand.gateway import OsmAndGateway
from hub.gateways.owntracks.gateway import OwnTracksGateway
from hub.storage.gateway_logins import GatewayLogin
from hub.storage.tokens import TokenRecord

PHONE, SECRET = "p1", "s3cret-p1-0123456789"
TRACKER, KEY = "902064", "k3y-902064-abcdefgh"
ADMIN, DEVICE_TOKEN, BOUND_TOKEN, DISPATCHER = "fh_admin", "fh_device", "fh_bound", "fh_dispatcher"


class MemoryLogins:
    """``GatewayLoginStore``'s reads over a dict, with real PBKDF2 digests; counts its look-ups."""

    def __init__(self) -> None:
        self.logins: dict[tuple[str, str], GatewayLogin] = {}
        self.lookups = 0
        self.down = False
        self.gate: asyncio.Event | None = None  # set: look-ups wait for it

    def add(self, device_id: str, protocol: str, secret: str) -> None:
        self.logins[(protocol, device_id)] = GatewayLogin(device_id, "U1", protocol, device_id,
                                                          new_login(device_id, secret), None, False)

    def revoke(self, device_id: str) -> None:
        self.logins = {k: v for k, v in self.logins.items() if v.device_id != device_id}

    def owns(self, protocol: str) -> Any:
        return lambda device_id: (protocol, device_id) in self.logins

    async def by_ident(self, protocol: str, ident: str) -> GatewayLogin | None:
        self.lookups += 1
        if self.down:
            raise ConnectionError("the database is away")
        found = self.logins.get((protocol, ident))
        if self.gate is not None:
            await self.gate.wait()
        return found

    async def by_device(self, device_id: str) -> GatewayLogin | None:
        return next((v for v in self.logins.values() if v.device_id == device_id), None)


@dataclass
class Pipe:
    """``Pipeline.submit`` recording what it is given; commits at once, never (``hold``), or refuses (``full``)."""

    hold: bool = False
    full: bool = False
    messages: list[tuple[str, Any, int, bool]] = field(default_factory=list)

    def __call__(self, topic: str, payload: bytes, qos: int, retained: bool = False) -> asyncio.Future[None] | None:
        if self.full:
            return None
        self.messages.append((topic, json.loads(payload), qos, retained))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.hold:
            future.set_result(None)
        return future

    def on(self, channel: str) -> list[Any]:
        return [body for topic, body, _, _ in self.messages if topic.endswith("/" + channel)]


class Tokens:
    def __init__(self) -> None:
        self.records = {s: TokenRecord(i, s, s, role, device, 0, None, None) for i, (s, role, device) in enumerate(
            [(ADMIN, "admin", None), (DEVICE_TOKEN, "device", None), (BOUND_TOKEN, "device", "other"),
             (DISPATCHER, "dispatcher", None)], 1)}

    def check(self, secret: str) -> TokenRecord:
        if secret not in self.records:
            raise TokenRefused("unknown")
        return self.records[secret]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Phones:
    owntracks: OwnTracksGateway
    osmand: OsmAndGateway
    logins: MemoryLogins
    pipe: Pipe
    clock: Clock
    published: list[tuple[str, bytes]]
    http: httpx.AsyncClient
    app: FastAPI


def make_app(owntracks: OwnTracksGateway | None, osmand: OsmAndGateway | None, *, max_body: int = 1 << 20) -> FastAPI:
    """The hub's app as far as these routes see it (create_app's dependency, error table and body limit)."""
    app = FastAPI(dependencies=[Depends(refuse_unstorable_params)])
    app.state.hub = SimpleNamespace(tokens=Tokens(), auth_failures=FailedAuthLimiter(60, 10))
    app.state.owntracks, app.state.osmand = owntracks, osmand
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=max_body)
    app.include_router(gateways.router)
    return app


def make_phones(*, limiter: FailedAuthLimiter | None = None, store_timeout_s: float = 0.3, hold: bool = False,
                full: bool = False) -> Phones:
    logins, p, clock, published = MemoryLogins(), Pipe(hold=hold, full=full), Clock(), []
    logins.add(PHONE, "owntracks", SECRET)
    logins.add(TRACKER, "osmand", KEY)
    common: dict[str, Any] = dict(submit=p, logins=logins, limiter=limiter, store_timeout_s=store_timeout_s,
                                  clock=clock)
    ot = OwnTracksGateway(owns=logins.owns("owntracks"), publish=lambda t, b: published.append((t, b)), **common)
    om = OsmAndGateway(owns=logins.owns("osmand"), **common)
    app = make_app(ot, om)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub")
    return Phones(ot, om, logins, p, clock, published, http, app)


@pytest.fixture
async def phones() -> AsyncIterator[Phones]:
    made = make_phones()
    async with made.http:
        yield made


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "X-Limit-U": user, "X-Limit-D": "phone"}


async def post_owntracks(phones: Phones, body: Any, user: str = PHONE, password: str = SECRET) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await phones.http.post("/gateway/owntracks", content=raw,
                                  headers={**basic(user, password), "Content-Type": "application/json"})
