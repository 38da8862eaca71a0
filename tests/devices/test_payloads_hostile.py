"""Generated hostile payloads against the codec (Hypothesis).

Invariants: every decoder returns or raises PayloadError with a known reason;
whatever it returns is storable (checked here by an independent walk, and by
writing it into a real PostgreSQL with the hub's column types); an accepted fix
keeps the contract's ranges; a valid fix is never refused and keeps its values.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from devices import bounds, payloads
from devices.errors import PayloadError
from devices.payloads import MIN_TS_MS, Fix
from hub.infra.embedded import EmbeddedPostgres
from hub.storage.database import FIX_COLUMNS, FIX_TYPES

NOW = 1_795_000_000_000
SKEW = payloads.MAX_FUTURE_SKEW_MS
QUICK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Json = Any

# ------------------------------------------------------------------ strategies
@st.composite
def mostly(draw: st.DrawFn, usual: st.SearchStrategy[Json], rare: st.SearchStrategy[Json], odds: int = 4) -> Json:
    """``usual``, and ``rare`` about once in ``odds + 1`` draws (``one_of`` would pick the two evenly)."""
    return draw(rare if draw(st.integers(0, odds)) == odds else usual)


HOSTILE_TEXT = st.sampled_from([
    "\x00", "a\x00b", "\ud800", "\udfff", "x\udbff", "\udc00y", "\x07", "\x1b[31m", "\x01\x02", "\x7f", "\x85",
    "\t\n\r", "\u2028", "\ufffe\uffff", "\U0001F600", "", "null", "{[", "\\", '"', "\\u0000",
])
ANY_CHAR = mostly(st.characters(exclude_categories=["Cs"]),
                  st.one_of(st.characters(categories=["Cs"]), st.characters(max_codepoint=0x1F)), 8)
LONG_TEXT = st.integers(4090, 4200).map("z".__mul__)
TEXT = st.one_of(st.text(ANY_CHAR, max_size=12), st.text(ANY_CHAR, max_size=12), HOSTILE_TEXT, LONG_TEXT)
HOSTILE_INT = st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30, -(10**400)])
NUMBER = st.one_of(st.integers(), HOSTILE_INT, st.floats(), st.sampled_from([1e308, -1e308, 5e-324, -0.0]))
LEAF = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)


def nest(value: Json, depth: int, kind: str) -> Json:
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


# A tree with hostile leaves, and now and then one beyond the structural limits.
TREE = st.recursive(LEAF, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)), max_leaves=10)
SPECIAL = st.one_of(
    st.builds(nest, TREE, st.integers(25, 70), st.sampled_from(["list", "dict"])),
    st.integers(250, 270).map(lambda n: {f"k{i}": i for i in range(n)}),
    st.integers(995, 1005).map(lambda n: [0] * n),
)
VALUE = mostly(TREE, SPECIAL, 6)
TS = mostly(st.one_of(st.integers(NOW - 10**9, NOW + 2 * SKEW), st.integers(NOW + SKEW - 2, NOW + SKEW + 2),
                      st.integers(MIN_TS_MS - 2, MIN_TS_MS + 2)),
            st.one_of(st.integers(), HOSTILE_INT, st.floats(), TEXT, st.none(), TREE))


def shaped(required: dict[str, st.SearchStrategy[Json]],
           optional: dict[str, st.SearchStrategy[Json]]) -> st.SearchStrategy[dict[str, Json]]:
    """An object with the contract's fields, mostly plausible, now and then hostile or missing,
    extra keys with hostile leaves, and rarely one value beyond the structural limits."""
    known = st.fixed_dictionaries(
        {k: mostly(v, TREE, 12) for k, v in required.items()},
        optional={k: mostly(v, TREE) for k, v in optional.items()})
    extras = st.dictionaries(TEXT, TREE, max_size=3)
    special = mostly(st.just({}), st.dictionaries(TEXT, SPECIAL, min_size=1, max_size=1), 8)
    dropped = mostly(st.none(), st.sampled_from(sorted(required)), 12)
    return st.builds(lambda k, extra, more, drop: {key: v for key, v in {**extra, **more, **k}.items() if key != drop},
                     known, extras, special, dropped)


def in_range(low: float, high: float) -> st.SearchStrategy[float | int]:
    return st.one_of(st.floats(low, high), st.integers(int(low), int(high)))


ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
FIX_LIKE = shaped({"ts": TS, "lat": st.floats(-95, 95), "lon": in_range(-185, 185)},
                  {"acc": mostly(in_range(0, 100), NUMBER, 8), "speed": mostly(in_range(0, 50), NUMBER, 8),
                   "heading": mostly(in_range(0, 360), NUMBER, 8), "battery": mostly(in_range(0, 100), NUMBER, 8),
                   "sats": mostly(st.integers(0, 30), NUMBER, 8), "seq": mostly(st.integers(0, 2**40), NUMBER, 8),
                   "attrs": VALUE})
STATUS_LIKE = shaped({"ts": TS, "state": mostly(st.sampled_from(["online", "offline"]), TEXT, 8)},
                     {"kind": st.sampled_from(sorted(payloads.DEVICE_KINDS)), "unit_id": mostly(ID, TEXT, 8),
                      "recording": st.booleans(), "battery": mostly(in_range(0, 100), NUMBER, 8), "fw": TEXT})
EVENT_LIKE = shaped({"ts": TS, "type": st.sampled_from(["sos", "note", "ack", "contact", "ptt", "video"]),
                     "cmd_id": TEXT, "incident_id": TEXT, "on": st.booleans(),
                     "state": mostly(st.sampled_from(["started", "stopped"]), TEXT, 8), "stream_id": TEXT}, {})
COMMAND_LIKE = shaped({"cmd_id": mostly(ID, TEXT, 8), "ts": TS,
                       "type": st.sampled_from(sorted(payloads.COMMAND_TYPES))}, {"incident": VALUE, "token": TEXT})
DOCUMENT = st.one_of(FIX_LIKE, st.lists(FIX_LIKE, min_size=1, max_size=6), STATUS_LIKE, EVENT_LIKE,
                     COMMAND_LIKE, VALUE)


def encode(doc: Json, ascii_only: bool) -> bytes:
    if ascii_only:  # lone surrogates as \ud800 escapes: valid JSON, not storable
        return json.dumps(doc).encode()
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")  # invalid UTF-8


@st.composite
def payload(draw: st.DrawFn) -> bytes:
    raw = encode(draw(DOCUMENT), draw(st.booleans()))
    how = draw(st.sampled_from(["as_is"] * 6 + ["truncate", "insert", "binary"]))
    if how == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif how == "insert":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    elif how == "binary":
        raw = draw(st.binary(max_size=64))
    return raw


# ---------------------------------------------------------------- the checks
def assert_storable(value: Json, depth: int = 0) -> None:
    """Independent of devices.bounds: what PostgreSQL jsonb/text/bigint will take, within the limits."""
    if isinstance(value, str):
        value.encode("utf-8")  # no lone surrogate
        assert len(value) <= bounds.MAX_TEXT
        assert all(c in "\t\n\r" or ord(c) >= 0x20 for c in value), repr(value)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        assert -(2**63) <= value < 2**63
    elif isinstance(value, float):
        assert value == value and abs(value) != float("inf")
    elif isinstance(value, dict):
        assert depth < bounds.MAX_DEPTH and len(value) <= bounds.MAX_KEYS
        for key, item in value.items():
            assert isinstance(key, str)
            assert_storable(key)
            assert_storable(item, depth + 1)
    else:
        assert isinstance(value, list) and depth < bounds.MAX_DEPTH and len(value) <= bounds.MAX_ARRAY
        for item in value:
            assert_storable(item, depth + 1)


def assert_known_reason(exc: PayloadError) -> None:
    assert exc.reason in payloads.REASONS, exc.reason
    exc.detail.encode("utf-8")
    assert "\x00" not in exc.detail


def assert_fix_in_contract(fix: Fix, now_ms: int | None) -> None:
    assert isinstance(fix.ts, int) and 0 <= fix.ts <= payloads.MAX_TS_MS
    if now_ms is not None:
        assert MIN_TS_MS <= fix.ts <= now_ms + SKEW
    assert -90 <= fix.lat <= 90 and -180 <= fix.lon <= 180
    for name, _kind, low, high in payloads._FIX_FIELDS:
        value = getattr(fix, name)
        assert value is None or ((low is None or value >= low) and (high is None or value <= high)), name
    assert fix.sats is None or type(fix.sats) is int
    assert fix.seq is None or type(fix.seq) is int
    if fix.attrs is not None:
        assert fix.attrs and len(json.dumps(fix.attrs, ensure_ascii=False).encode()) <= payloads.MAX_ATTRS_BYTES
        assert_storable(fix.attrs, 1)


def decode_all(raw: bytes) -> Iterator[tuple[str, Callable[[], Any]]]:
    yield "fixes", lambda: payloads.decode_fixes(raw, NOW)
    yield "fixes_no_clock", lambda: payloads.decode_fixes(raw)
    yield "status", lambda: payloads.decode_status(raw, NOW)
    yield "event", lambda: payloads.decode_event(raw, NOW)
    yield "json", lambda: payloads.decode_json(raw)
    yield "command", lambda: payloads.decode_command(raw)


def check_result(name: str, raw: bytes, result: Any) -> None:
    if name.startswith("fixes"):
        fixes, bad = result
        now = NOW if name == "fixes" else None
        for fix in fixes:
            assert_fix_in_contract(fix, now)
        for _index, exc in bad:
            assert_known_reason(exc)
        doc = json.loads(raw)  # accepted, so it is JSON
        assert len(fixes) + len(bad) == (len(doc) if isinstance(doc, list) else 1)
        # The fast path and the checked path agree.
        checked, checked_bad = payloads._decode_fixes_checked(raw, now, SKEW)
        assert checked == fixes
        assert [(i, e.reason) for i, e in checked_bad] == [(i, e.reason) for i, e in bad]
    elif name == "status":
        assert MIN_TS_MS <= result.ts <= NOW + SKEW
        assert_storable(payloads.decode_json(raw))  # the hub stores the payload whole
    elif name == "event":
        assert MIN_TS_MS <= result.ts <= NOW + SKEW
        assert_storable(result.type)
        assert_storable(result.data, 1)
        assert len(payloads.encode_json(result.data)) <= payloads.MAX_ATTRS_BYTES
    elif name == "json":
        assert_storable(result)
    else:  # hub-authored command: structural limits only
        assert result.type in payloads.COMMAND_TYPES


# ------------------------------------------------------------------ the tests
@QUICK
@given(raw=payload())
def test_every_decoder_returns_or_refuses_with_a_known_reason(raw: bytes) -> None:
    for name, decode in decode_all(raw):
        try:
            result = decode()
        except PayloadError as exc:
            event(f"{name}: {exc.reason}")
            assert_known_reason(exc)
            if name.startswith("fixes"):
                with pytest.raises(PayloadError) as again:
                    payloads._decode_fixes_checked(raw, NOW if name == "fixes" else None, SKEW)
                assert again.value.reason == exc.reason
        else:
            event(f"{name}: accepted")
            check_result(name, raw, result)


@QUICK
@given(doc=st.one_of(VALUE, FIX_LIKE, st.lists(FIX_LIKE, max_size=4)), limit=st.integers(0, 40))
def test_nesting_prescan_is_exact_on_valid_json(doc: Json, limit: int) -> None:
    raw = json.dumps(doc).encode()
    def depth(value: Json) -> int:
        if isinstance(value, dict):
            return 1 + max(map(depth, value.values()), default=0)
        if isinstance(value, list):
            return 1 + max(map(depth, value), default=0)
        return 0

    deepest = depth(doc)
    assert bounds.nesting_exceeds(raw, limit) == (deepest > limit)
    assert not bounds.nesting_exceeds(raw, deepest)  # and exact at the edge
    assert deepest == 0 or bounds.nesting_exceeds(raw, deepest - 1)


def depth_reached(raw: bytes) -> int:
    """How deep a JSON parser gets before the first certain error: a reference scanner, byte by byte."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
            if depth < 0:
                break
        elif byte == 0x5C:  # a backslash outside a string: the parser stops here
            break
    return deepest


@QUICK
@given(raw=payload(), limit=st.integers(0, 40))
def test_nesting_prescan_never_underestimates_broken_json(raw: bytes, limit: int) -> None:
    reached = depth_reached(raw)
    if reached > limit:
        assert bounds.nesting_exceeds(raw, limit)
    assert reached == 0 or bounds.nesting_exceeds(raw, reached - 1)


@QUICK
@given(raw=st.one_of(st.text("[]{}[]{}\"\\ ,1", max_size=600),
                     st.builds(lambda a, n, b: a + "[]" * n + b, st.text("[[[]{", max_size=80), st.integers(0, 300),
                               st.text("]]]}[", max_size=80))).map(str.encode),
       limit=st.integers(0, 12))
def test_nesting_prescan_on_bracket_soup(raw: bytes, limit: int) -> None:
    reached = depth_reached(raw)
    if reached > limit:
        assert bounds.nesting_exceeds(raw, limit)
    assert reached == 0 or bounds.nesting_exceeds(raw, reached - 1)
    try:
        doc = json.loads(raw)
    except ValueError:
        return
    balanced = json.dumps(doc).encode()
    assert bounds.nesting_exceeds(raw, limit) == bounds.nesting_exceeds(balanced, limit) == (depth_reached(raw) > limit)


# A fix inside the contract, with harmless attributes.
SAFE_CHAR = st.one_of(st.characters(exclude_categories=["Cs"], min_codepoint=0x20), st.sampled_from("\t\n\r"))
SAFE_TEXT = st.text(SAFE_CHAR, max_size=16)
SAFE_KEY = st.one_of(SAFE_TEXT.filter(lambda k: k not in payloads._FIX_KNOWN), st.just("attrs"))
SAFE_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                      st.floats(allow_nan=False, allow_infinity=False), SAFE_TEXT)
SAFE_ATTRS = st.dictionaries(SAFE_KEY, st.recursive(SAFE_LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(
    SAFE_TEXT, c, max_size=3), max_leaves=6), max_size=4)
NUM = {"alt": (-1000.0, 100_000.0), "acc": (0.0, 1e6), "speed": (0.0, 1000.0), "heading": (0.0, 360.0),
       "battery": (0.0, 100.0)}


@st.composite
def good_fix(draw: st.DrawFn, max_future_ms: int) -> dict[str, Json]:
    fix: dict[str, Json] = {"ts": draw(st.integers(MIN_TS_MS, NOW + max_future_ms)),
                            "lat": draw(in_range(-90, 90)), "lon": draw(in_range(-180, 180))}
    for name, (low, high) in NUM.items():
        if draw(st.booleans()):
            fix[name] = draw(in_range(low, high))
    if draw(st.booleans()):
        fix["sats"] = draw(st.integers(0, 1000))
    if draw(st.booleans()):
        fix["seq"] = draw(st.integers(0, 2**63 - 1))
    attrs = draw(SAFE_ATTRS)
    if len(json.dumps(attrs, ensure_ascii=False).encode()) <= payloads.MAX_ATTRS_BYTES // 2:
        fix.update(attrs)
    return fix


def assert_same(fix: Fix, obj: dict[str, Json]) -> None:
    assert fix.ts == obj["ts"] and fix.lat == obj["lat"] and fix.lon == obj["lon"]
    for name in (*NUM, "sats", "seq"):
        assert getattr(fix, name) == obj.get(name)
    extra = {k: v for k, v in obj.items() if k not in payloads._FIX_KNOWN and (k, v) != ("attrs", None)}
    assert fix.attrs == (extra or None)


@QUICK
@given(data=st.data(), max_future_ms=st.sampled_from([SKEW, 0, 60_000, 86_400_000]), batch=st.booleans())
def test_valid_fixes_are_never_refused_and_keep_their_values(data: st.DataObject, max_future_ms: int,
                                                             batch: bool) -> None:
    objs = data.draw(st.lists(good_fix(max_future_ms), min_size=1, max_size=5 if batch else 1))
    raw = json.dumps(objs if batch else objs[0], ensure_ascii=data.draw(st.booleans())).encode()
    fixes, bad = payloads.decode_fixes(raw, NOW, max_future_ms=max_future_ms)
    assert bad == []
    assert len(fixes) == len(objs)
    for fix, obj in zip(fixes, objs, strict=True):
        assert_same(fix, obj)
        assert payloads.fix_from_obj(payloads.fix_to_obj(fix), NOW, max_future_ms=max_future_ms) == fix


HOSTILE_LEAF = st.one_of(
    st.sampled_from(["\x00", "a\x00", "\ud800", "x\udfff", "\udbff\x00", "\x07", "\x1b[0m", "\x1f"]).map(
        lambda t: ("bad_text", t)),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**300)]).map(lambda n: ("number_too_large", n)),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e400]).map(lambda f: ("non_finite", f)),
)


@QUICK
@given(data=st.data(), hostile=HOSTILE_LEAF, as_key=st.booleans(),
       wraps=st.lists(st.sampled_from(["list", "dict"]), max_size=6), batch=st.integers(0, 4))
def test_one_hostile_leaf_anywhere_costs_exactly_its_message(data: st.DataObject, hostile: tuple[str, Json],
                                                             as_key: bool, wraps: list[str], batch: int) -> None:
    reason, value = hostile
    if as_key and isinstance(value, str):
        value = {value: 1}
    for wrap in wraps:
        value = [value] if wrap == "list" else {data.draw(SAFE_TEXT): value}
    objs = data.draw(st.lists(good_fix(SKEW), min_size=max(batch, 1), max_size=max(batch, 1)))
    index = data.draw(st.integers(0, len(objs) - 1))
    objs[index]["hostile"] = value
    raw = json.dumps(objs if batch else objs[0]).encode()  # surrogates as \u escapes, NaN as a token
    if batch:
        fixes, bad = payloads.decode_fixes(raw, NOW)
        assert [(i, e.reason) for i, e in bad] == [(index, reason)]
        for fix, obj in zip(fixes, objs[:index] + objs[index + 1:], strict=True):
            assert_same(fix, obj)
    else:
        with pytest.raises(PayloadError) as info:
            payloads.decode_fixes(raw, NOW)
        assert info.value.reason == reason
    for doc, decode in (({"ts": NOW, "state": "online", "x": value}, payloads.decode_status),
                        ({"ts": NOW, "type": "note", "x": value}, payloads.decode_event),
                        ({"x": value}, lambda raw, _now: payloads.decode_json(raw))):
        with pytest.raises(PayloadError) as info:
            decode(json.dumps(doc).encode(), NOW)
        assert info.value.reason == reason


@QUICK
@given(margin=st.sampled_from([0, 1, 60_000, SKEW, 86_400_000]), offset=st.integers(-3, 3),
       extra=st.sampled_from([{}, {"rssi": -70}]), batch=st.booleans())
def test_the_future_margin_is_exact(margin: int, offset: int, extra: dict[str, Json], batch: bool) -> None:
    fix = {"ts": NOW + margin + offset, "lat": 1.5, "lon": 2.5, **extra}
    raw = json.dumps([{"ts": NOW, "lat": 0, "lon": 0}, fix] if batch else fix).encode()
    if offset <= 0:
        fixes, bad = payloads.decode_fixes(raw, NOW, max_future_ms=margin)
        assert bad == [] and fixes[-1].ts == fix["ts"]
    elif batch:
        fixes, bad = payloads.decode_fixes(raw, NOW, max_future_ms=margin)
        assert [f.ts for f in fixes] == [NOW] and [(i, e.reason) for i, e in bad] == [(1, "ts_in_future")]
    else:
        with pytest.raises(PayloadError) as info:
            payloads.decode_fixes(raw, NOW, max_future_ms=margin)
        assert info.value.reason == "ts_in_future"


@QUICK
@given(text=st.text(ANY_CHAR, max_size=300), limit=st.integers(-1, 400))
def test_storable_text_always_stores(text: str, limit: int) -> None:
    out = payloads.storable_text(text, limit)
    out.encode("utf-8")
    assert "\x00" not in out and len(out) <= max(limit, 0)
    assert out == text[: max(limit, 0)] or "\ufffd" in out


# ------------------------------------------ the proof: PostgreSQL stores it
@pytest.fixture(scope="module")
def probe_db(postgres: EmbeddedPostgres) -> Iterator[psycopg.Connection[Any]]:
    url = postgres.create_database("t_" + uuid.uuid4().hex[:12])
    with psycopg.connect(url, autocommit=True) as conn:
        columns = ", ".join(f"{c} {t}" for c, t in zip(FIX_COLUMNS, FIX_TYPES, strict=True))
        conn.execute(f"CREATE TABLE fixes_probe ({columns})")  # the hub's column types, no key
        conn.execute("CREATE TABLE docs_probe (kind text, doc jsonb, note text)")
        yield conn


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(raw=payload())
def test_whatever_the_codec_accepts_postgresql_stores(probe_db: psycopg.Connection[Any], raw: bytes) -> None:
    """The hub's write path (binary COPY with its types, Jsonb) never meets a value it cannot store."""
    fixes: list[Fix] = []
    docs: list[tuple[str, Json, str]] = []
    for name, decode in decode_all(raw):
        try:
            result = decode()
        except PayloadError as exc:  # the reject row's detail is text too
            docs.append(("reject", None, payloads.storable_text(exc.detail, 500)))
            continue
        if name == "fixes":
            fixes.extend(result[0])
        elif name == "status":
            docs.append(("status", payloads.decode_json(raw), result.fw or ""))
        elif name == "event":
            docs.append(("event", result.data, result.type))
        elif name == "json":
            docs.append(("json", result, ""))
    with probe_db.transaction(force_rollback=True), probe_db.cursor() as cur:
        with cur.copy(f"COPY fixes_probe ({', '.join(FIX_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(FIX_TYPES))
            for f in fixes:
                copy.write_row(("dev-1", f.ts, f.lat, f.lon, f.alt, f.acc, f.speed, f.heading, f.battery, f.sats,
                                f.seq, f.attrs, NOW))
        cur.executemany("INSERT INTO docs_probe VALUES (%s, %s, %s)",
                        [(kind, None if doc is None else Jsonb(doc), note) for kind, doc, note in docs])
        stored = cur.execute("SELECT (SELECT count(*) FROM fixes_probe), (SELECT count(*) FROM docs_probe)")
        assert stored.fetchone() == (len(fixes), len(docs))
