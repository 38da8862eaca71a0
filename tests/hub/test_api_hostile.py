"""Hostile requests against a running hub (real PostgreSQL, real Mosquitto): never a 500, always the JSON error.

The routes are not listed here: they are read from the app itself (its OpenAPI schema, cross-checked against
``app.routes``), so a route added later is fuzzed without touching this file. Each generated request takes a
route, path values (known ids or hostile text), query values, a body (hostile JSON, a valid body with one
field made hostile, raw bytes, garbage SDP) and a content type, all drawn by Hypothesis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from aiortc import RTCPeerConnection
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.routing import Mount
from websockets.sync.client import connect as ws_connect

from devices.client import DeviceClient
from devices.clock import now_ms
from devices.payloads import Fix
from hub.api.app import create_app
from hub.api.inputs import unstorable
from tests.conftest import TOKEN, RunningHub, wait_for

UNIT, DEVICE = "HU1", "hu1-trk"
# A 503 that is the truth about this hub, not a reaction to the input: no drone link and no 12345 hotline
# are configured in the test hub, so their routes answer "unavailable" to every well-formed request.
NOT_CONFIGURED = {"unavailable"}
ERROR_LOGGERS = ("hub", "video", "uvicorn", "asyncio", "fastapi", "starlette")


# ---------------------------------------------------------------- the routes, read from the app
@dataclass(frozen=True)
class Route:
    method: str
    path: str  # with {placeholders}
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    body: dict[str, Any] | None  # a valid-looking example, built from the body's schema; None: no JSON body
    optional: dict[str, Any]  # an example of each optional field of the body


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    return schema


# Values the schema cannot know (an existing unit, a known category); everything else comes from the schema.
KNOWN = {"category": "robbery", "unit_id": UNIT, "from_unit_id": UNIT, "unit_ids": [UNIT], "devices": [DEVICE],
         "name": "fuzz"}


def example(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """The simplest value a JSON schema accepts (bounds, patterns and enums taken into account)."""
    schema = _resolve(schema, defs)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if _resolve(s, defs).get("type") != "null"]
        return example(options[0], defs) if options else None
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: KNOWN.get(k, example(v, defs)) for k, v in props.items() if k in schema.get("required", ())}
    if kind == "array":
        return [example(schema.get("items", {}), defs)] * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        low, high = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum")
        value = low if low is not None else (high if high is not None and high < 1 else 1)
        return int(value) if kind == "integer" else float(value)
    if kind == "string":
        return "U1" if "pattern" in schema else "x" * max(1, schema.get("minLength", 1))
    if kind == "boolean":
        return False
    return None


def routes(app: FastAPI) -> list[Route]:
    spec = app.openapi()
    defs = spec.get("components", {}).get("schemas", {})
    found: list[Route] = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            params = op.get("parameters", [])
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            schema = _resolve(content["schema"], defs) if content else {}
            body = example(schema, defs) if content else None
            optional = {k: KNOWN.get(k, example(v, defs)) for k, v in schema.get("properties", {}).items()
                        if k not in schema.get("required", ())}
            found.append(Route(method.upper(), path, tuple(p["name"] for p in params if p["in"] == "path"),
                               tuple(p["name"] for p in params if p["in"] == "query"), body, optional))
    # Every route that takes input is in the schema (the page and the favicon take none); mounts (static
    # files) are not, and are walked as such.
    documented = {(r.method, r.path) for r in found}
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            assert {(m, route.path) for m in route.methods or ()} <= documented, route.path
        if isinstance(route, Mount):
            found += [Route(m, route.path + "/{file}", ("file",), (), None, {}) for m in ("GET", "HEAD", "POST")]
    return found


# ---------------------------------------------------------------- hostile values
NASTY = ["\x00", "\ud800", "\udfff", "\udc80abc", "\x1b[31m", "\x7f", "\x85", "\x08", "\ufffe", "\u202e",
         "\n", "\t", "\r\n", "é", "东", "😀", "'; DROP TABLE units; --", "%00", "..", "../..", " ", ""]
text = st.one_of(
    st.lists(st.one_of(st.sampled_from(NASTY), st.characters()), max_size=12).map("".join),
    st.text(max_size=30),
    st.sampled_from(["x" * 5000, "é" * 3000, "U1\x00", "U1\ud800", "a" * 65, "P" * 64]),
)
# A plausible value with one bad character inside: it passes length and emptiness checks and reaches the service.
# NUL and lone surrogates weigh more: they are what PostgreSQL and the UTF-8 encoder refuse.
poisoned = st.tuples(st.sampled_from(["U1", "robbery", "Main St", "fuzz"]),
                     st.sampled_from(["\x00"] * 8 + ["\ud800", "\udfff"] * 3 + NASTY),
                     st.sampled_from(["", "x"])).map("".join)
numbers = st.one_of(
    st.integers(),
    st.floats(),
    st.sampled_from([10**30, -10**30, 2**63, 2**63 - 1, -(2**63) - 1, 2**31, 2**53 + 1, 10**19, 1e308, -1e308,
                     5e-324, -0.0, 4_102_444_800_001, 10**9]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
hostile_json = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(text, inner, max_size=4)),
                            max_leaves=10)


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


RAW_BODIES = [
    b"", b"{", b"{nope", b'{"name": "x"', b"\xff\xfe\x00{", b'{"name": "\xed\xa0\x80"}', b'{"name": "\xc0\x80"}',
    b"[" * 20_000 + b"]" * 20_000, _deep(5000), b'{"ts": ' + b"9" * 5000 + b"}", b'{"lat": 1e999, "lon": -1e999}',
    b'{"priority": NaN}', b'{"lat": Infinity}', b"null", b"[]", b"0", b'"text"', b"\x00" * 100,
    b'{"a": 1, "a": 2}', b"\xef\xbb\xbf{}", b"{\"name\": \"\\u0000\"}", b'{"name": "\\ud800"}',
]
SDP_LINES = ["m=", "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=rtpmap:x", "a=rtpmap:96 VP8/0", "a=candidate:1",
             "a=candidate:1 1 udp 1 999.1.1.1 99999 typ host", "c=", "o=", "a=ice-ufrag:", "a=fingerprint:sha-999 zz",
             "a=setup:nonsense", "a=group:BUNDLE 7", "a=mid:", "a=ssrc:99999999999999", "a=extmap:99999 x",
             "a=fmtp:96 " + "x=1;" * 500, "a=msid:" + "\x00" * 3, "a=sendonly", "a=recvonly", "a=inactive"]


@st.composite
def sdp_bodies(draw: st.DrawFn, offers: list[str]) -> bytes:
    """A real offer (aiortc's) with lines inserted, deleted or cut: garbage, but garbage that gets far."""
    lines = draw(st.sampled_from(offers)).split("\r\n")
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.one_of(st.sampled_from(SDP_LINES), poisoned, text)))
    for _ in range(draw(st.integers(0, 2))):
        del lines[draw(st.integers(0, len(lines) - 1))]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(lines) - 1))
        lines[at] = lines[at][: draw(st.integers(0, len(lines[at])))]
    return "\r\n".join(lines).encode("utf-8", "surrogatepass")


def _dumps(value: Any) -> bytes:
    # ensure_ascii writes lone surrogates as \\udXXX escapes, which the hub's JSON parser turns back into them.
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


def _video(route: Route) -> bool:
    return route.path.startswith(("/whip/", "/whep/"))


@st.composite
def bodies(draw: st.DrawFn, route: Route, offers: list[str]) -> bytes | None:
    # Weighted towards what gets far: a valid body with one field made hostile, a real offer made garbage.
    how = draw(st.sampled_from(["sdp"] * 6 + ["none", "hostile", "raw"] if _video(route) else
                               ["one_field"] * 5 + ["valid"] * 2 + ["none", "hostile", "hostile", "extra_field", "raw",
                                                                    "raw", "sdp"]))
    if how == "none":
        return None
    if how == "raw":
        return draw(st.one_of(st.sampled_from(RAW_BODIES), st.binary(max_size=64)))
    if how == "sdp":
        return draw(sdp_bodies(offers))
    if how == "hostile" or not isinstance(route.body, dict):
        return _dumps(draw(hostile_json))
    body = dict(route.body)
    for key, value in route.optional.items():  # some optional fields, valid
        if draw(st.booleans()):
            body[key] = value
    keys = sorted({*route.body, *route.optional}) or ["x"]
    if how == "valid":  # changes the hub's state, so that later requests meet more of it
        pass
    elif how == "one_field":
        key = draw(st.sampled_from(keys))
        body[key] = draw(st.one_of(poisoned, numbers, hostile_json, st.lists(poisoned, min_size=1, max_size=3)))
    else:
        body[draw(text)] = draw(hostile_json)
    return _dumps(body)


def _segment(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]


@st.composite
def requests(draw: st.DrawFn, route: Route, ids: list[str], admin: str, offers: list[str]) -> Request:
    url = route.path
    for name in route.path_params:
        value = draw(st.one_of(st.sampled_from(ids), st.sampled_from(ids), poisoned, text,
                               st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)))
        url = url.replace("{" + name + "}", _segment(value) or "%20")
    names = list(route.query_params) + draw(st.lists(text, max_size=1))
    query = [(n, draw(st.one_of(text, numbers.map(str), st.sampled_from(["1", "0", "-1", "open", "unit"]))))
             for n in names if draw(st.booleans())]
    if query:
        url += "?" + "&".join(f"{_segment(n)}={_segment(v)}" for n, v in query)
    headers = {"Authorization": draw(st.sampled_from([f"Bearer {admin}"] * 20 + [
        f"Bearer {TOKEN}", "", "Bearer", "Bearer fh_nope", "Basic YTpi", "Bearer " + "a" * 4000, "bearer \x7f\x80"]))}
    likely = ["application/sdp"] * 8 + ["application/trickle-ice-sdpfrag"] * 4 if _video(route) else \
        ["application/json"] * 12
    content_type = draw(st.sampled_from([
        *likely, "application/json", "application/json; charset=utf-16", "text/plain",
        "application/sdp", "application/trickle-ice-sdpfrag", "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zz", "application/merge-patch+json", None]))
    if content_type is not None:
        headers["Content-Type"] = content_type
    for name, value in draw(st.lists(st.sampled_from([("If-Match", "*"), ("If-Match", '"x"'),
                                                      ("Accept", "application/xml"),
                                                      ("Content-Encoding", "gzip")]), max_size=2)):
        headers[name] = value
    return Request(route.method, url, draw(bodies(route, offers)), headers)


def check_answer(request: Request, response: httpx.Response) -> None:
    where = f"{request.method} {request.url} {request.headers} {request.body!r:.300}"
    code = None
    if response.status_code == 400 and response.text == "Invalid HTTP request received.":
        return  # refused by uvicorn's HTTP parser (e.g. DEL in a header) before the app sees the request
    if response.status_code >= 400 and request.method != "HEAD":  # an answer to HEAD has no body
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AssertionError(f"{where} -> {response.status_code} without the JSON error: {response.text:.300}") \
                from exc
        assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), where
        code = error["code"]
    assert response.status_code < 500 or (response.status_code == 503 and code in NOT_CONFIGURED), \
        f"{where} -> {response.status_code} {response.text:.300}"


@given(st.text(st.characters(codec=None, exclude_categories=())))
def test_what_passes_the_text_rule_is_storable(value: str) -> None:
    if unstorable(value) is None:
        assert "\x00" not in value
        value.encode("utf-8")  # no lone surrogate
        assert all(c in "\t\n\r" or (c >= " " and not "\x7f" <= c <= "\x9f") for c in value)


# ---------------------------------------------------------------- the fixtures of a fuzz run
@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The ERROR records the hub has logged so far in the test: a swallowed crash is a defect too."""
    caplog.set_level(logging.WARNING)
    return lambda: [r.getMessage() for r in caplog.records
                    if r.levelno >= logging.ERROR and r.name.startswith(ERROR_LOGGERS)]


async def _prepare(hub: RunningHub) -> tuple[str, list[str]]:
    admin = await hub.hub.create_token("admin", "fuzz")
    await hub.put_unit(UNIT, [DEVICE], home={"lat": 34.26, "lon": 117.18})
    r = await hub.api.post("/api/v1/incidents", json={"category": "robbery", "priority": 2, "lat": 34.26,
                                                      "lon": 117.18, "address": "1 Main St"})
    assert r.status_code == 201, r.text
    return admin, [UNIT, r.json()["id"], DEVICE, "NOPE", "x"]


async def _real_offers() -> list[str]:
    """Offers as aiortc makes them (to publish: sendonly video, with audio; to view: recvonly)."""
    offers = []
    for direction, kinds in (("sendonly", ["video"]), ("sendonly", ["video", "audio"]), ("recvonly", ["video"])):
        pc = RTCPeerConnection()
        for kind in kinds:
            pc.addTransceiver(kind, direction=direction)
        await pc.setLocalDescription(await pc.createOffer())
        offers.append(str(pc.localDescription.sdp))
        await pc.close()
    return offers


async def _still_healthy(hub: RunningHub) -> None:
    health = (await hub.api.get("/healthz")).json()
    assert health["status"] == "ok" and health["database"] is True, health
    await hub.put_unit(UNIT, [DEVICE])  # the fuzz may have re-PUT the unit with other devices
    before = await hub.count()
    async with DeviceClient(DEVICE, hub.hub.mqtt_url or "", unit_id=UNIT) as device:
        device.send_fix(Fix(now_ms(), 34.2601, 117.1801))
        await wait_for(lambda: _count_above(hub, before))
    r = await hub.api.get(f"/api/v1/units/{UNIT}")
    assert r.status_code == 200 and r.json()["position"] is not None


async def _count_above(hub: RunningHub, n: int) -> bool:
    return await hub.count() > n


# ---------------------------------------------------------------- the tests
@pytest.mark.timeout(600)
async def test_no_generated_request_gets_a_500(hub: RunningHub, errors_logged: Callable[[], list[str]]) -> None:
    admin, ids = await _prepare(hub)
    offers = await _real_offers()
    catalogue = routes(create_app(hub.hub))
    assert len(catalogue) >= 25 and any(r.path.startswith("/whip/") for r in catalogue)

    def fuzz(route: Route) -> None:
        # Every route gets its own run, so each is reached whatever the draws; more for those that take a body.
        examples = 100 if route.body is not None or route.path.startswith(("/whip", "/whep")) else 20
        with httpx.Client(base_url=hub.base_url, timeout=30) as http:

            @hsettings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(requests(route, ids, admin, offers))
            def one(request: Request) -> None:
                # As bytes (beyond ASCII), one connection per request: the server drops a connection whose
                # request its parser refused.
                headers = [(k.encode(), v.encode("latin-1")) for k, v in request.headers.items()]
                headers.append((b"Connection", b"close"))
                response = http.request(request.method, request.url, content=request.body, headers=headers)
                check_answer(request, response)

            one()

    for route in catalogue:
        if (route.method, route.path) == ("DELETE", "/api/v1/tokens/{token_id}"):
            continue  # a drawn "1" or "2" would revoke the tokens this run uses: fuzzed in test_tokens.py
        await asyncio.to_thread(fuzz, route)
    await _still_healthy(hub)
    assert errors_logged() == []


async def test_bodies_over_the_limit_are_413_before_parsing(hub: RunningHub) -> None:
    limit = hub.hub.settings.http_max_body_bytes
    big = b'{"name": "' + b"x" * limit + b'"}'
    for method, path, ctype in (("PUT", f"/api/v1/units/{UNIT}", "application/json"),
                                ("POST", "/api/v1/incidents", "application/json"),
                                ("POST", "/api/v1/nothing-here", "application/json"),
                                ("GET", "/healthz", "text/plain"),
                                ("POST", "/whip/cam-1", "application/sdp"),
                                ("POST", "/whep/stream", "application/sdp")):
        r = await hub.api.request(method, path, content=big, headers={"Content-Type": ctype})
        assert r.status_code == 413, (path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "too_large"

    async def chunks() -> Any:  # no Content-Length: the body is streamed (chunked) past the limit
        for _ in range(limit // 1000 + 2):
            yield b"x" * 1000

    r = await hub.api.put(f"/api/v1/units/{UNIT}", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    admin = await hub.hub.create_token("admin", "video")  # WHIP authorizes before it reads the offer
    await hub.put_unit(UNIT, [DEVICE])
    r = await hub.api.post(f"/whip/{DEVICE}", content=chunks(), headers={"Content-Type": "application/sdp",
                                                                     "Authorization": f"Bearer {admin}"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    # Just under the limit is parsed as usual (and a name that long is then refused by its own bound).
    r = await hub.api.put(f"/api/v1/units/{UNIT}", content=b" " * (limit - 20) + b'{"name": "ok"}',
                          headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    # The connection stays usable after a refusal.
    assert (await hub.api.get("/healthz")).status_code == 200


@pytest.mark.parametrize(("path", "body"), [
    (f"/api/v1/units/{UNIT}", {"name": "a\x00b"}),
    (f"/api/v1/units/{UNIT}", {"name": "a\ud800b"}),
    (f"/api/v1/units/{UNIT}", {"name": "bell\x07"}),
    (f"/api/v1/units/{UNIT}", {"name": "ok", "capabilities": ["fire\x00arm"]}),
    ("/api/v1/incidents", {"category": "robbery", "priority": 2, "lat": 34.2, "lon": 117.1, "summary": "a\x00"}),
    ("/api/v1/incidents", {"category": "robbery", "priority": 2, "lat": 34.2, "lon": 117.1, "address": "\udc80"}),
    ("/api/v1/incidents", {"category": "rob\x1bbery", "priority": 2, "lat": 34.2, "lon": 117.1}),
    ("/api/v1/incidents", {"category": "robbery", "priority": 2, "lat": 34.2, "lon": 117.1, "policy": "\x00"}),
    ("/api/v1/incidents", {"category": "robbery", "priority": 2, "lat": 1e308, "lon": 117.1}),
    ("/api/v1/incidents", {"category": "robbery", "priority": 2, "lat": 34.2, "lon": 117.1, "received_at": 10**30}),
])
async def test_unstorable_text_and_numbers_are_422(hub: RunningHub, path: str, body: dict[str, Any]) -> None:
    method = "PUT" if path.startswith("/api/v1/units") else "POST"
    r = await hub.api.request(method, path, content=_dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid"


async def test_unstorable_path_and_query_values_are_422(hub: RunningHub) -> None:
    admin, ids = await _prepare(hub)
    incident_id = ids[1]
    headers = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
    for method, url, body in (
        ("GET", "/api/v1/units/U%00", None),
        ("POST", f"/api/v1/incidents/{incident_id}/events", {"type": "note", "text": "a\x00b"}),
        ("POST", f"/api/v1/incidents/{incident_id}/events", {"type": "note", "text": "\ud83d"}),
        ("POST", f"/api/v1/incidents/{incident_id}/events", {"type": "note", "text": "x", "ts": 10**30}),
        ("POST", f"/api/v1/incidents/{incident_id}/cancel", {"unit_id": UNIT, "reason": "\x00"}),
        ("POST", f"/api/v1/incidents/{incident_id}/close", {"reason": "done\x00"}),
        ("POST", f"/api/v1/incidents/{incident_id}/dispatch", {"auto": True, "count": 10**9}),
        ("GET", f"/api/v1/units/{UNIT}/track?from=-1&to={2**63}", None),
        ("GET", f"/api/v1/incidents?limit={10**30}", None),
        ("GET", "/api/v1/incidents?status=open%00", None),
        ("GET", f"/api/v1/reports/response-times?from={10**30}", None),
        ("POST", "/whip/cam%00", None),
        ("DELETE", "/whip/cam-1/sess%00ion", None),
        ("DELETE", "/whep/%ED%A0%80/s", None),
    ):
        r = await hub.api.request(method, url, content=None if body is None else _dumps(body), headers=headers)
        assert r.status_code == 422, (method, url, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid"


# ---------------------------------------------------------------- the live feed
def _watch_url(hub: RunningHub) -> str:
    return hub.base_url.replace("http", "ws") + "/api/v1/live"


BEARER = {"Authorization": f"Bearer {TOKEN}"}


ws_messages = st.lists(st.one_of(
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")),
    st.binary(max_size=200),
    st.sampled_from(["\x00" * 10, '{"type": "subscribe"}', "[" * 10_000, b"\xff" * 100, "x" * 2_000_000]),
), max_size=4)


@pytest.mark.timeout(300)
async def test_hostile_live_clients_do_not_hurt_the_feed(hub: RunningHub,
                                                         errors_logged: Callable[[], list[str]]) -> None:
    await hub.put_unit(UNIT, [DEVICE])
    url = _watch_url(hub)
    async with websockets.connect(url, additional_headers=BEARER) as watcher:
        snapshot = json.loads(await asyncio.wait_for(watcher.recv(), 5))
        assert snapshot["type"] == "snapshot"
        closes: list[int | None] = []

        def fuzz() -> None:
            @hsettings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(ws_messages, st.sampled_from(["", "%00", "%ED%A0%80", "x" * 3000, "lt_forged", TOKEN]))
            def one(messages: list[str | bytes], ticket: str) -> None:
                # The bearer header, or a forged ticket (and the long-lived token as a ticket) in the URL.
                headers = BEARER if ticket == TOKEN else None
                target = url if ticket == TOKEN else f"{url}?ticket={ticket}"
                try:
                    ws = ws_connect(target, max_size=None, open_timeout=5, close_timeout=2, additional_headers=headers)
                except websockets.exceptions.InvalidStatus as refused:  # an unstorable token: 422 to the handshake
                    assert refused.response.status_code == 422, refused.response.body
                    return
                with ws:
                    try:
                        for message in messages:
                            ws.send(message)
                        ws.recv(timeout=0.2)
                    except (websockets.exceptions.ConnectionClosed, TimeoutError):
                        pass
                closes.append(ws.close_code)

            one()
            # Below the WebSocket framing: a handshake, then bytes that are no frame at all.
            host, port = hub.base_url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=5) as raw:
                raw.sendall(f"GET /api/v1/live HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                            "Upgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n".encode())
                assert b"101" in raw.recv(1024)
                raw.sendall(b"\xff\xff\xff\xff\xff\xff\x00\x00garbage" * 100)

        await asyncio.to_thread(fuzz)
        assert 1011 not in closes, closes  # 1011: the server's "internal error"
        # The watcher still gets the feed: a change made now reaches it.
        await hub.put_unit("HU2", ["hu2-trk"])

        async def sees_hu2() -> bool:
            while True:
                frame = json.loads(await asyncio.wait_for(watcher.recv(), 5))
                if frame["type"] == "unit" and any(u["unit_id"] == "HU2" for u in frame["units"]):
                    return True

        assert await sees_hu2()
    await _still_healthy(hub)
    assert errors_logged() == []


# ---------------------------------------------------------------- WHIP / WHEP
async def test_whip_and_whep_refuse_bad_offers_with_4xx(hub: RunningHub) -> None:
    admin, _ = await _prepare(hub)
    publish_offer, _, view_offer = await _real_offers()
    sdp = {"Authorization": f"Bearer {admin}", "Content-Type": "application/sdp"}
    limit = hub.hub.settings.http_max_body_bytes
    for path in (f"/whip/{DEVICE}", "/whep/no-such-stream"):
        for body, headers, status in (
            (b"garbage", sdp, 400),
            (b"v=0\r\n" + b"a=x\r\n" * 200, sdp, 400),
            (b"v=0\r\n\xff\xfe", sdp, 400),
            ((publish_offer if "whip" in path else view_offer).replace("a=ice-ufrag:", "a=ice-ufrag:\x00"), sdp, 400),
            (b"v=0\r\n" + b"a=x\r\n" * (limit // 5), sdp, 413),
            (publish_offer.encode(), {**sdp, "Content-Type": "application/json"}, 415),
            (publish_offer.encode(), {**sdp, "Content-Type": "text/plain"}, 415),
        ):
            r = await hub.api.post(path, content=body, headers=headers)
            expected = 404 if "whep" in path and status == 400 else status  # WHEP looks up the stream first
            assert r.status_code in (status, expected), (path, body[:40], r.status_code, r.text)
            assert isinstance(r.json()["error"]["code"], str)
    # A real offer is taken; garbage never cost the hub its video service.
    r = await hub.api.post(f"/whip/{DEVICE}", content=publish_offer, headers=sdp)
    assert r.status_code == 201, r.text
    session = r.headers["location"]
    for unknown in (f"/whip/{DEVICE}/{'0' * 32}", f"/whep/{'0' * 32}/{'1' * 32}"):
        r = await hub.api.delete(unknown, headers=sdp)
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_session", r.text
    r = await hub.api.delete(session, headers=sdp)
    assert r.status_code == 200


async def test_a_client_that_sends_binary_or_junk_keeps_its_feed(hub: RunningHub) -> None:
    """What a client sends is read and ignored, whatever its type: it neither ends its own feed nor anyone's."""
    async with websockets.connect(_watch_url(hub), additional_headers=BEARER) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "snapshot"
        for junk in (b"\x00\xff" * 100, "\x00 not json", "[" * 10_000, b""):
            await ws.send(junk)
        await hub.put_unit("HU3", ["hu3-trk"])
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if frame["type"] == "unit" and any(u["unit_id"] == "HU3" for u in frame["units"]):
                break
