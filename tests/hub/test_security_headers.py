"""Security headers on every answer, /metrics and the API docs behind a token, the live feed's tickets (issue 13).

Against a real hub (HTTP on a port, real PostgreSQL); the HTTPS and 500 cases through the app in-process.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re

import httpx
import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st

from hub.api.app import create_app
from hub.api.deps import Principal
from hub.api.routes.live import LiveTickets
from hub.api.security_headers import content_security_policy, tile_source
from tests.conftest import TOKEN, RunningHub

FIXED = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY"}
PROTECTED = ("/metrics", "/openapi.json", "/docs", "/redoc")


def directives(csp: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in csp.split(";"):
        name, *values = part.split()
        assert name not in out, f"{name} twice in {csp!r}"
        out[name] = values
    return out


def assert_secured(r: httpx.Response, *, https: bool = False) -> None:
    where = f"{r.request.method} {r.request.url.path} -> {r.status_code}"
    for name, value in FIXED.items():
        assert r.headers.get(name) == value, (where, name, r.headers.get(name))
    policy = directives(r.headers["content-security-policy"])
    assert policy["frame-ancestors"] == ["'none'"], where
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"], where
    for scripts in (policy["script-src"], policy["default-src"]):
        assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "data:", "blob:"} & set(scripts), (where, scripts)
    assert ("strict-transport-security" in r.headers) is https, where


def ws_url(hub: RunningHub, query: str = "") -> str:
    return hub.base_url.replace("http", "ws") + "/api/v1/live" + query


async def close_code(url: str, headers: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Connect and read until the hub closes: its close code and reason (the feed would send a snapshot first)."""
    with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
        async with websockets.connect(url, additional_headers=headers) as ws:
            while True:
                frame = await asyncio.wait_for(ws.recv(), 5)
                assert '"snapshot"' not in str(frame)[:40], "the feed was opened"
    rcvd = info.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd else (None, "")


async def snapshot(url: str, headers: dict[str, str] | None = None) -> str:
    async with websockets.connect(url, additional_headers=headers) as ws:
        return str(await asyncio.wait_for(ws.recv(), 5))


# --------------------------------------------------------------------------------- headers
async def test_every_kind_of_answer_carries_the_headers(hub: RunningHub) -> None:
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as anonymous:
        answers = [
            await anonymous.get("/"),
            await anonymous.get("/static/app/main.js"),
            await anonymous.get("/static/nope.js"),
            await anonymous.get("/healthz"),
            await anonymous.get("/api/v1/units"),          # 401
            await hub.api.get("/api/v1/nope"),             # 404
            await hub.api.delete("/healthz"),              # 405
            await hub.api.get("/api/v1/units/%00"),        # 422
            await anonymous.post("/api/v1/incidents",  # 413, refused before routing
                                 content=b"x" * (hub.hub.settings.http_max_body_bytes + 1)),
        ]
    assert [r.status_code for r in answers] == [200, 200, 404, 200, 401, 404, 405, 422, 413]
    for r in answers:
        assert_secured(r)
    page = answers[0]
    assert "text/html" in page.headers["content-type"]
    # No inline script and no inline handler: the policy would block them, and the page would not work.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text), "inline <script> in index.html"
    assert not re.search(r"\son[a-z]+\s*=", page.text), "inline event handler in index.html"
    assert directives(page.headers["content-security-policy"])["script-src"] == ["'self'"]
    assert directives(page.headers["content-security-policy"])["connect-src"] == ["'self'"]


async def test_hsts_only_over_https_and_a_500_is_covered_too(hub: RunningHub) -> None:
    app = create_app(hub.hub)

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    for scheme in ("https", "http"):
        async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://hub.test") as client:
            for r in (await client.get("/"), await client.get("/healthz"), await client.get("/boom")):
                assert_secured(r, https=scheme == "https")
                if scheme == "https":
                    assert r.headers["strict-transport-security"].startswith("max-age=")
            assert r.status_code == 500 and r.json()["error"]["code"] == "internal"


def test_the_tile_server_is_the_only_outside_image_origin() -> None:
    assert directives(content_security_policy())["img-src"] == ["'self'", "data:", "blob:"]
    osm = directives(content_security_policy("https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png"))
    assert osm["img-src"] == ["'self'", "data:", "blob:", "https://*.tile.openstreetmap.org"]
    assert osm["connect-src"] == ["'self'"] and osm["script-src"] == ["'self'"]
    assert tile_source("http://tiles.local:8080/{z}/{x}/{y}.png") == "http://tiles.local:8080"
    assert tile_source("https://user:secret@tiles.example/{z}/{x}/{y}.png") == "https://tiles.example"
    assert tile_source("https://tiles-{s}.example/{z}/{x}/{y}.png") == "https:"
    assert tile_source("/tiles/{z}/{x}/{y}.png") is None  # the hub's own: 'self'
    assert tile_source("javascript:alert(1)//x") is None
    assert tile_source("https://x.example; script-src *") == "https:"


@given(st.text(max_size=200))
def test_no_tile_setting_can_write_a_directive_of_its_own(tile_url: str) -> None:
    csp = content_security_policy(tile_url)
    csp.encode("latin-1")  # a header value
    assert not any(c in csp for c in "\r\n\x00,")
    policy = directives(csp)
    assert set(policy) == set(directives(content_security_policy()))
    assert policy["script-src"] == ["'self'"]
    assert len(policy["img-src"]) <= 4


# ------------------------------------------------------------------ token-protected endpoints
async def test_metrics_and_docs_need_a_readers_token(hub: RunningHub) -> None:
    tokens = {role: await hub.hub.create_token(role, f"hdr-{role}") for role in
              ("admin", "viewer", "drone_operator", "device")}
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
        assert (await http.get("/healthz")).status_code == 200  # liveness stays open
        for path in PROTECTED:
            for headers in ({}, {"Authorization": "Bearer fh_bogus"}, {"Authorization": f"Basic {TOKEN}"}):
                r = await http.get(path, headers=headers)
                assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (path, headers, r.text)
                assert_secured(r)
            r = await http.get(path, headers={"Authorization": f"Bearer {tokens['device']}"})
            assert r.status_code == 403, (path, r.text)
            for secret in (TOKEN, tokens["admin"], tokens["viewer"], tokens["drone_operator"]):
                r = await http.get(path, headers={"Authorization": f"Bearer {secret}"})
                assert r.status_code == 200, (path, r.text)
    assert "fieldhub_rejects_total" in (await hub.api.get("/metrics")).text
    spec = (await hub.api.get("/openapi.json")).json()
    assert "/api/v1/live/ticket" in spec["paths"] and "/openapi.json" not in spec["paths"]


async def test_the_docs_pages_allow_their_one_inline_script_by_hash(hub: RunningHub) -> None:
    r = await hub.api.get("/docs")
    assert r.status_code == 200 and "swagger-ui" in r.text
    scripts = directives(r.headers["content-security-policy"])["script-src"]
    assert "'unsafe-inline'" not in scripts and directives(r.headers["content-security-policy"])[
        "frame-ancestors"] == ["'none'"]
    inline = re.findall(r"<script>(.*?)</script>", r.text, re.S)
    assert inline, "Swagger UI starts from an inline script"
    for body in inline:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in scripts
    redoc = await hub.api.get("/redoc")
    assert redoc.status_code == 200 and "redoc" in redoc.text
    assert "'unsafe-inline'" not in directives(redoc.headers["content-security-policy"])["script-src"]


# ------------------------------------------------------------------------- the live feed
async def test_live_tickets_are_single_use_and_for_readers_only(hub: RunningHub) -> None:
    viewer = await hub.hub.create_token("viewer", "hdr-viewer")
    device = await hub.hub.create_token("device", "hdr-device")
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
        assert (await http.post("/api/v1/live/ticket")).status_code == 401
        refused = await http.post("/api/v1/live/ticket", headers={"Authorization": f"Bearer {device}"})
        assert refused.status_code == 403
        r = await http.post("/api/v1/live/ticket", headers={"Authorization": f"Bearer {viewer}"})
        assert r.status_code == 200 and r.json()["expires_in_s"] == 30
        assert_secured(r)
        ticket = r.json()["ticket"]
        other = (await http.post("/api/v1/live/ticket", headers={"Authorization": f"Bearer {viewer}"})).json()
    assert ticket != other["ticket"] and len(ticket) >= 32
    assert '"snapshot"' in await snapshot(ws_url(hub, f"?ticket={ticket}"))
    code, reason = await close_code(ws_url(hub, f"?ticket={ticket}"))  # the same ticket again
    assert code == 4401 and "ticket" in reason
    assert (await close_code(ws_url(hub, "?ticket=lt_forged")))[0] == 4401
    assert (await close_code(ws_url(hub, f"?ticket={viewer}")))[0] == 4401  # a token is no ticket
    assert '"snapshot"' in await snapshot(ws_url(hub, f"?ticket={other['ticket']}"))  # each its own


async def test_a_ticket_of_a_token_revoked_since_is_refused(hub: RunningHub) -> None:
    viewer = await hub.hub.create_token("viewer", "hdr-revoked")
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
        r = await http.post("/api/v1/live/ticket", headers={"Authorization": f"Bearer {viewer}"})
        ticket = r.json()["ticket"]
    record = hub.hub.tokens.known(viewer)
    assert record is not None
    await hub.hub.tokens.revoke(record.token_id)
    code, reason = await close_code(ws_url(hub, f"?ticket={ticket}"))  # within the ticket's 30 s
    assert code == 4401 and "revoked" in reason


async def test_the_live_feed_refuses_a_token_in_the_url(hub: RunningHub) -> None:
    code, reason = await close_code(ws_url(hub, f"?token={TOKEN}"))
    assert code == 4401 and "URL" in reason and "ticket" in reason
    # Not even beside a good header: a URL with a token is refused wherever it comes from.
    code, _ = await close_code(ws_url(hub, f"?token={TOKEN}"), {"Authorization": f"Bearer {TOKEN}"})
    assert code == 4401
    assert '"snapshot"' in await snapshot(ws_url(hub), {"Authorization": f"Bearer {TOKEN}"})
    assert (await close_code(ws_url(hub)))[0] == 4401  # nothing at all
    device = await hub.hub.create_token("device", "hdr-device")
    assert (await close_code(ws_url(hub), {"Authorization": f"Bearer {device}"}))[0] == 4403


def test_a_ticket_expires_after_30_s_and_names_its_principal() -> None:
    now = [1000.0]
    tickets = LiveTickets(clock=lambda: now[0])
    viewer, operator = Principal(7, "v", "viewer"), Principal(8, "o", "drone_operator")
    a, b, c = tickets.issue(viewer), tickets.issue(operator), tickets.issue(viewer)
    now[0] += 29.9
    assert tickets.redeem(b) == operator and tickets.redeem(b) is None
    now[0] += 0.1
    assert tickets.redeem(a) is None and tickets.redeem(c) is None  # 30 s: gone
    assert tickets.redeem("") is None
    tickets.issue(viewer)
    now[0] += 31
    tickets.issue(viewer)  # issuing prunes the expired ones: memory does not grow with unused tickets
    assert len(tickets) == 1


def test_tickets_in_memory_are_bounded() -> None:
    tickets = LiveTickets(capacity=3)
    first = tickets.issue(Principal(1, "a", "viewer"))
    rest = [tickets.issue(Principal(1, "a", "viewer")) for _ in range(3)]
    assert len(tickets) == 3 and tickets.redeem(first) is None  # the oldest went first
    assert all(tickets.redeem(t) is not None for t in rest)
