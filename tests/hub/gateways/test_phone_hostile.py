"""Hostile input to the phone gateways: random query strings, bodies, content types and credentials through the real
routes, and random topics and payloads into ``on_owntracks``. Nothing is ever a 500 or an exception, every answer is
one the apps understand (200, 400, 401, 403, 413, 422, 429), nothing unauthenticated is stored, and a good phone keeps
reporting (200, stored) between the attacks, its secret cached while its address is over the failure limit."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.access.auth import FailedAuthLimiter
from tests.hostile import EVIL_TEXT, JSON_VALUE, NUMBER, TEXT
from tests.hub.gateways.phone_standins import KEY, PHONE, SECRET, TRACKER, Phones, basic, make_phones
from tests.hub.gateways.test_owntracks import BOOKLET_LOCATION, BOOKLET_TRANSITION

FUZZ = settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
ANSWERS = {200, 400, 401, 403, 413, 422, 429}

_KEYS = st.sampled_from(["id", "deviceid", "lat", "lon", "location", "timestamp", "speed", "bearing", "heading",
                         "altitude", "accuracy", "batt", "hdop", "valid", "charge", "key", "_type", "x"])
_PRINTABLE = st.text(st.characters(min_codepoint=0x20, exclude_categories=("Cc", "Cs")), max_size=16)
# Mostly printable: a control character anywhere is the API's 422 before any gateway runs (tested once is enough).
_KNOWN = st.sampled_from([TRACKER, KEY, PHONE, "34.2", "1e308", "nan", "-1", "2016-01-27T18:55:47Z", "true",
                          "60.0,30.0", ""])
_VALUES = st.one_of(_PRINTABLE, _PRINTABLE, NUMBER.map(str), EVIL_TEXT, _KNOWN)


@st.composite
def queries(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 4)) == 0:
        return _quoted(draw(st.text(max_size=80) | TEXT), draw(st.sampled_from(["", "=&", "=&,:+%"])))
    pairs = draw(st.lists(st.tuples(_KEYS | _PRINTABLE, _VALUES), max_size=10))
    safe = draw(st.sampled_from(["/", "=&%"]))  # "=&%": values that break the pairs apart, or half-escapes
    return "&".join(f"{_quoted(k, safe)}={_quoted(v, safe)}" for k, v in pairs)


def _quoted(value: str, safe: str = "") -> str:
    return quote(value, safe, errors="surrogatepass")  # a lone surrogate as the invalid UTF-8 it would be


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["binary", "json", "owntracks", "client", "forward", "form", "empty"]))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return _dump(draw(JSON_VALUE))
    if kind == "owntracks":
        doc = dict(BOOKLET_LOCATION)
        for key in draw(st.lists(st.sampled_from([*doc, "event", "desc", "wtst"]), max_size=4)):
            doc[key] = draw(JSON_VALUE | NUMBER | EVIL_TEXT)
        doc["_type"] = draw(st.sampled_from(["location", "transition", "lwt", "encrypted", "waypoint", "cmd"]) | TEXT)
        return _dump(doc)
    if kind == "client":
        coords = draw(st.dictionaries(st.sampled_from(["latitude", "longitude", "speed", "heading", "accuracy"]),
                                      NUMBER | JSON_VALUE, max_size=5))
        return _dump({"device_id": draw(st.sampled_from([TRACKER, PHONE]) | JSON_VALUE),
                      "location": {"timestamp": draw(TEXT | st.just("2021-07-21T08:06:34.444Z")), "coords": coords,
                                   "battery": draw(JSON_VALUE)}})
    if kind == "forward":
        return _dump({"position": draw(st.dictionaries(st.sampled_from(["fixTime", "latitude", "longitude", "valid",
                                                                        "speed", "attributes"]), JSON_VALUE)),
                      "device": {"uniqueId": draw(st.sampled_from([TRACKER, "x"]) | JSON_VALUE)}})
    if kind == "form":
        return draw(queries()).encode()
    return b""


_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)


@st.composite
def authorizations(draw: st.DrawFn) -> str | None:
    kind = draw(st.sampled_from(["none", "good", "basic", "raw", "bearer"]))
    if kind == "none":
        return None
    if kind == "good":
        return basic(PHONE, SECRET)["Authorization"]
    if kind == "basic":
        raw = f"{draw(st.sampled_from([PHONE, TRACKER]) | TEXT)}:{draw(TEXT)}".encode("utf-8", "surrogatepass")
        return "Basic " + base64.b64encode(raw).decode()
    if kind == "bearer":
        return "Bearer " + draw(st.sampled_from(["fh_admin", "fh_device", "fh_bound", "fh_dispatcher"]) | _HEADER_TEXT)
    return draw(_HEADER_TEXT)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    route = draw(st.sampled_from(["/gateway/owntracks", "/gateway/osmand", "/gateway/traccar"]))
    method = "GET" if route == "/gateway/osmand" and draw(st.booleans()) else "POST"
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                                                     "text/plain", ""]) | _HEADER_TEXT)}
    auth = draw(authorizations())
    if auth is not None:
        headers["Authorization"] = auth
    if draw(st.booleans()):
        headers["X-Limit-U"], headers["X-Limit-D"] = draw(_HEADER_TEXT), draw(_HEADER_TEXT)
    query = draw(queries())
    if draw(st.booleans()):
        query += "&key=" + draw(st.sampled_from([KEY, SECRET, "wrong"]))
    return method, f"{route}?{query}", b"" if method == "GET" else draw(bodies()), headers


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


def call(runner: asyncio.Runner, phones: Phones, method: str, target: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> httpx.Response:
    # As bytes: header values beyond ASCII reach the app as a real client could send them.
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return runner.run(phones.http.request(method, target, content=body, headers=raw))


def good_reports(runner: asyncio.Runner, phones: Phones, i: int) -> None:
    """The good phones report, and are stored, whatever came before."""
    before = len(phones.pipe.messages)
    location = json.dumps({**BOOKLET_LOCATION, "tst": 1_500_000_000 + i}).encode()
    r = call(runner, phones, "POST", "/gateway/owntracks", location, basic(PHONE, SECRET))
    assert (r.status_code, r.json()) == (200, [])
    q = call(runner, phones, "GET", f"/gateway/osmand?id={TRACKER}&lat=34.2&lon=117.1&timestamp={1_500_000_000 + i}"
                                    f"&key={KEY}")
    assert q.status_code == 200
    assert len(phones.pipe.messages) == before + 2


def authenticated(target: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether a request carries a good phone's credentials (or is Traccar's forwarding, checked by token)."""
    if target.startswith("/gateway/owntracks"):
        return headers.get("Authorization") == basic(PHONE, SECRET)["Authorization"]
    if target.startswith("/gateway/osmand"):
        return f"key={KEY}" in target or f"key={KEY}".encode() in body
    return headers.get("Authorization") in ("Bearer fh_admin", "Bearer fh_device")


def test_no_request_gets_a_500_and_a_good_phone_keeps_reporting(runner: asyncio.Runner) -> None:
    phones = make_phones(limiter=FailedAuthLimiter(per_min=60, burst=10))
    good_reports(runner, phones, 0)  # both good phones' secrets are cached from here on
    counter = iter(range(1, 10**6))
    seen: Counter[int] = Counter()

    @FUZZ
    @given(requests())
    def one(request: tuple[str, str, bytes, dict[str, str]]) -> None:
        method, target, body, headers = request
        before = len(phones.pipe.messages)
        r = call(runner, phones, method, target, body, headers)
        assert r.status_code in ANSWERS, (r.status_code, r.text)
        seen[r.status_code] += 1
        assert r.status_code != 200 or authenticated(target, body, headers)
        if r.status_code != 200:
            assert len(phones.pipe.messages) == before  # a refusal stores nothing
        good_reports(runner, phones, next(counter))

    one()
    # The fuzzing reached the codecs' refusals and the secret checks, not only the parameter rule.
    assert {400, 401} <= set(seen), seen
    assert "bad_secret" in phones.owntracks.rejects and len(phones.osmand.rejects) >= 2
    runner.run(phones.http.aclose())


_TOPICS = st.one_of(
    st.builds(lambda u, d, s: f"owntracks/{u}/{d}{s}", st.sampled_from([PHONE, "stranger", ""]) | TEXT,
              st.sampled_from(["phone", ""]) | TEXT, st.sampled_from(["", "/event", "/cmd", "/x", "/"]) | TEXT),
    TEXT,
)


def test_hostile_mqtt_messages_never_raise_and_a_good_phone_keeps_reporting(runner: asyncio.Runner) -> None:
    phones = make_phones()

    @FUZZ
    @given(_TOPICS, bodies())
    def one(topic: str, payload: bytes) -> None:
        async def both() -> None:
            future = phones.owntracks.on_owntracks(topic, payload)
            assert future is not None  # the stand-in pipeline is never full
            await asyncio.wait_for(future, 1)
            before = len(phones.pipe.messages)
            good = phones.owntracks.on_owntracks(f"owntracks/{PHONE}/phone/event", BOOKLET_TRANSITION)
            assert good is not None
            await asyncio.wait_for(good, 1)
            assert len(phones.pipe.messages) == before + 2

        runner.run(both())

    one()
    assert phones.owntracks.rejects
    assert all(t.startswith(f"fieldhub/v1/dev/{PHONE}/") for t, _, _, _ in phones.pipe.messages)
