"""Hypothesis strategies for hostile device messages: (channel, payload bytes) as a buggy or malicious
device could publish them.

Each payload is built to be hard on a different layer: the JSON parser (invalid UTF-8, truncation, deep
nesting), the codec (wrong types, out-of-range and non-finite numbers, missing fields, far-future and
ancient times), PostgreSQL (NUL, lone surrogates and control characters in keys and values, at any depth)
and the batch logic (good and bad elements mixed). Times are relative to ``now`` and kept away from the
codec's window edges, so a verdict does not depend on a millisecond of scheduling.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

DAY_MS = 86_400_000
_INCIDENT_EVENTS = frozenset({"sos", "ack", "contact"})

# Strings PostgreSQL refuses (NUL, lone surrogates) or that a device has no business sending.
EVIL_TEXT = st.sampled_from(["a\x00b", "\x00", "\ud800", "x\udfffy", "\x01\x02", "\x1b[31m", "\u202e", "é\x00",
                             "\ufffe", "\U0010ffff", "ok", ""])
TEXT = st.one_of(EVIL_TEXT, st.text(max_size=20), st.text(alphabet=st.characters(codec="utf-8"), max_size=8))
NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 2**31, 2**63, 2**64, 10**30, 1e308, -1e308, 5e-324]),
)
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
JSON_VALUE = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)


def _ts(now: int) -> st.SearchStrategy[Any]:
    return st.sampled_from([now - 10_000, now - 3_600_000, now + 23 * 3_600_000, now - 200 * DAY_MS, 0, -5,
                            1.5e12, "1795000000000", None, 10**20, True])


def _dump(obj: Any) -> bytes:
    # ensure_ascii writes lone surrogates as \udxxx escapes, as a hostile device would.
    return json.dumps(obj, ensure_ascii=True, allow_nan=True).encode()


@st.composite
def hostile_fix(draw: st.DrawFn, now: int) -> dict[str, Any]:
    fix: dict[str, Any] = {"ts": draw(_ts(now)), "lat": draw(st.one_of(st.just(34.2), NUMBER, TEXT)),
                           "lon": draw(st.one_of(st.just(117.1), NUMBER))}
    for key in draw(st.lists(st.sampled_from(["alt", "acc", "speed", "heading", "battery", "sats", "seq"]),
                             max_size=3)):
        fix[key] = draw(st.one_of(NUMBER, SCALAR))
    for _ in range(draw(st.integers(0, 2))):
        fix[draw(TEXT)] = draw(JSON_VALUE)
    if draw(st.booleans()):
        fix.pop(draw(st.sampled_from(["ts", "lat", "lon"])), None)
    return fix


def good_fix(now: int, i: int) -> dict[str, Any]:
    return {"ts": now - 20_000 + i, "lat": 34.2 + i * 1e-5, "lon": 117.1, "acc": 5.0}


@st.composite
def telemetry_payload(draw: st.DrawFn, now: int) -> bytes:
    kind = draw(st.sampled_from(["fix", "batch", "deep", "bytes", "truncated", "value", "nul_key", "huge"]))
    if kind == "fix":
        return _dump(draw(hostile_fix(now)))
    if kind == "batch":  # good and bad elements side by side
        items = [draw(st.one_of(hostile_fix(now), st.builds(good_fix, st.just(now), st.integers(0, 5000)),
                                JSON_VALUE)) for _ in range(draw(st.integers(1, 6)))]
        return _dump(items)
    if kind == "deep":
        depth = draw(st.sampled_from([33, 100, 5000, 20_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = _dump(good_fix(now, 1)).decode()
        return (opener * depth + inner + closer * depth).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "truncated":
        raw = _dump(draw(hostile_fix(now)))
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    if kind == "value":
        return _dump(draw(JSON_VALUE))
    if kind == "nul_key":
        return _dump(dict(good_fix(now, draw(st.integers(0, 5000))), **{draw(EVIL_TEXT): draw(SCALAR)}))
    size = draw(st.sampled_from([5_000, 200_000, 300_000]))
    return _dump(dict(good_fix(now, 7), note="x" * size))


@st.composite
def status_payload(draw: st.DrawFn, now: int) -> bytes:
    status: dict[str, Any] = {"ts": draw(_ts(now)), "state": draw(st.one_of(st.sampled_from(["online", "offline"]),
                                                                            TEXT))}
    for key in draw(st.lists(st.sampled_from(["kind", "unit_id", "recording", "battery", "fw"]), max_size=3)):
        status[key] = draw(SCALAR)
    if draw(st.booleans()):
        status[draw(TEXT)] = draw(JSON_VALUE)
    return _dump(status)


@st.composite
def event_payload(draw: st.DrawFn, now: int) -> bytes:
    # No sos/ack/contact here: those start incident work that this suite does not judge.
    etype = st.one_of(st.sampled_from(["ptt", "video", "note"]), TEXT.filter(lambda t: t not in _INCIDENT_EVENTS))
    event: dict[str, Any] = {"ts": draw(_ts(now)), "type": draw(etype)}
    for _ in range(draw(st.integers(0, 3))):
        event[draw(st.one_of(st.sampled_from(["on", "state", "stream_id"]), TEXT))] = draw(JSON_VALUE)
    return _dump(event)


def hostile_message(now: int) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(
        st.tuples(st.just("telemetry"), telemetry_payload(now)),
        st.tuples(st.just("status"), status_payload(now)),
        st.tuples(st.just("event"), event_payload(now)),
    )
