"""The hostile payload catalogue of ``fieldhub bench hostile``: each kind makes what its name claims, owes
what the contract says, and never collides with a good fix; the generators interleave and flood as
documented. Seeds come from Hypothesis, so every kind is checked over many draws of its random parts."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import hostile
from bench.hostile_load import FloodGenerator, HostileGenerator
from bench.hostile_payloads import (
    BROKER_LIMIT_BYTES,
    FUTURE_MS,
    KIND_NAMES,
    MAX_DEPTH,
    MAX_PAYLOAD_BYTES,
    MIXED_MARK,
    PAST_OFFSET_MS,
    Forge,
    Schedule,
)
from bench.hostile_runs import FLOOD_DEVICE, GOOD_PATTERN
from devices import payloads
from devices.errors import PayloadError
from devices.topics import is_valid_id

NOW = 1_796_000_000_000
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


def forge(seed: int) -> Forge:
    return Forge(seed, NOW, clock=lambda: NOW)


def depth(raw: bytes) -> int:
    """Deepest nesting of ``[``/``{`` outside strings, without recursing (the point is 10,000 levels)."""
    deepest = level = 0
    in_string = escaped = False
    for byte in raw:
        char = chr(byte)
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


def walk(value: Any) -> list[Any]:
    """Every key and value inside a parsed JSON document."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        found.append(item)
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
    return found


def strings(raw: bytes) -> list[str]:
    return [v for v in walk(json.loads(raw)) if isinstance(v, str)]


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS)
def test_every_kind_is_made_on_a_device_channel_and_owes_a_reject(seed: int) -> None:
    f = forge(seed)
    for kind in KIND_NAMES:
        made = f.make(kind)
        assert made.kind == kind
        assert made.channel == kind.split(".")[0].replace("fix", "telemetry")
        assert made.rejects >= 1
        assert len(made.payload) < BROKER_LIMIT_BYTES - 1024  # the broker passes it on to the hub


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS)
def test_kinds_do_what_their_names_say(seed: int) -> None:
    f = forge(seed)

    def make(kind: str) -> bytes:
        return f.make(kind).payload

    for kind in ("fix.deep_nesting", "fix.deep_attrs", "status.deep_nesting", "event.deep_nesting"):
        assert depth(make(kind)) > MAX_DEPTH + (1 if kind != "fix.deep_nesting" else 0), kind
    with pytest.raises(UnicodeDecodeError):
        make("fix.invalid_utf8").decode()
    for kind in ("fix.nul_value", "fix.nul_key", "status.nul", "event.nul"):
        assert any("\x00" in s for s in strings(make(kind))), kind
    for kind in ("fix.lone_surrogate", "status.lone_surrogate", "event.lone_surrogate"):
        assert any(0xD800 <= ord(c) <= 0xDFFF for s in strings(make(kind)) for c in s), kind
    assert any(isinstance(v, float) and math.isinf(v) for v in walk(json.loads(make("fix.huge_float"))))
    assert any(type(v) is int and not -(2**63) <= v < 2**63 for v in walk(json.loads(make("fix.huge_int"))))
    huge = make("fix.huge_string")
    assert len(huge) <= MAX_PAYLOAD_BYTES and max(map(len, strings(huge))) >= 64 * 1024
    assert MAX_PAYLOAD_BYTES < len(make("fix.oversize")) < BROKER_LIMIT_BYTES
    fix = json.loads(make("fix.missing_field"))
    assert {"ts", "lat", "lon"} - set(fix)
    assert json.loads(make("fix.ts_future"))["ts"] - NOW in range(FUTURE_MS, FUTURE_MS + 1000)
    assert json.loads(make("status.ts_future"))["ts"] - NOW == FUTURE_MS
    assert json.loads(make("event.ts_future"))["ts"] - NOW == FUTURE_MS
    assert not isinstance(json.loads(make("fix.not_object")), dict)
    assert json.loads(make("fix.empty_batch")) == []
    assert len(json.loads(make("fix.batch_too_large"))) > payloads.MAX_BATCH
    assert len(json.loads(make("status.huge_string"))["fw"]) > 64


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS)
def test_ts_past_is_before_2000_or_beyond_retention(seed: int) -> None:
    ts = json.loads(forge(seed).make("fix.ts_past").payload)["ts"]
    assert ts < payloads.MIN_TS_MS or ts < NOW - 90 * 86_400_000


def test_deep_nesting_reaches_thousands_of_levels() -> None:
    depths = [depth(forge(seed).make("fix.deep_nesting").payload) for seed in range(40)]
    assert max(depths) >= 5000
    assert min(depths) > MAX_DEPTH


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS)
def test_a_mixed_batch_holds_exactly_the_good_and_bad_elements_it_claims(seed: int) -> None:
    made = forge(seed).make("fix.mixed_batch")
    items = json.loads(made.payload)
    good = bad = 0
    for item in items:
        try:
            fix = payloads.fix_from_obj(item, NOW)
        except PayloadError:
            bad += 1
            assert not (isinstance(item, dict) and item.get("bench") == MIXED_MARK["bench"])
        else:
            good += 1
            assert fix.attrs == MIXED_MARK
    assert (good, bad) == (made.good, made.rejects)
    assert good >= 1 and bad >= 1


@settings(max_examples=20, deadline=None)
@given(seed=SEEDS)
def test_the_contract_codec_refuses_every_hostile_message(seed: int) -> None:
    """The rejects a kind owes are the contract's: the decoders of devices.payloads refuse each message
    whole (or, for a mixed batch, exactly its bad elements)."""
    f = forge(seed)
    decode = {"telemetry": payloads.decode_fixes, "status": payloads.decode_status, "event": payloads.decode_event}
    for kind in KIND_NAMES:
        made = f.make(kind)
        if kind == "fix.mixed_batch":
            fixes, bad = payloads.decode_fixes(made.payload, NOW)
            assert (len(fixes), len(bad)) == (made.good, made.rejects)
            continue
        if kind == "fix.ts_past" and json.loads(made.payload)["ts"] >= payloads.MIN_TS_MS:
            continue  # older than the retention window: the hub's validate stage refuses it, not the codec
        with pytest.raises(PayloadError):
            decode[made.channel](made.payload, NOW)


@settings(max_examples=20, deadline=None)
@given(seed=SEEDS)
def test_fixes_that_could_be_stored_never_share_a_ts_with_a_good_fix(seed: int) -> None:
    """Reserved ts values are distinct and an hour before the run: a lenient hub that stores a hostile fix
    still cannot turn a good fix into a duplicate."""
    f = forge(seed)
    reserved: list[int] = []
    for kind in KIND_NAMES * 3:
        if not kind.startswith("fix.") or kind in ("fix.ts_future", "fix.ts_past", "fix.huge_int"):
            continue
        try:
            doc = json.loads(f.make(kind).payload)
        except (ValueError, RecursionError):  # not JSON, or nested past what the json module parses
            continue
        for item in doc if isinstance(doc, list) else [doc]:
            # (a bad element 23 h ahead is never a good fix's twin: good fixes carry the time of publish)
            if isinstance(item, dict) and type(item.get("ts")) is int and NOW - 2 * PAST_OFFSET_MS < item["ts"] < NOW:
                reserved.append(item["ts"])
    assert reserved
    assert len(set(reserved)) == len(reserved)
    assert max(reserved) < NOW - PAST_OFFSET_MS
    assert min(reserved) >= f.past_lo


def test_schedule_sends_every_kind_once_per_round() -> None:
    schedule = Schedule(random.Random(3))
    first = [schedule.next() for _ in KIND_NAMES]
    second = [schedule.next() for _ in KIND_NAMES]
    assert sorted(first) == sorted(second) == sorted(KIND_NAMES)
    assert first != second


# ------------------------------------------------------------------ generators
class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    @property
    def published(self) -> int:
        return len(self.sent)

    def publish(self, topic: bytes, payload: bytes, qos: int) -> bool:
        self.sent.append((topic, payload))
        return True


def _args(**extra: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"device_prefix": "bench-", "qos": 1, "hostile_every": 10, "seed": 5, **extra})


def test_hostile_messages_follow_a_good_fix_of_the_same_device_on_its_connection() -> None:
    gen = HostileGenerator(_args(devices=20))
    recorders = [_Recorder() for _ in range(20)]  # one connection per device
    gen.connections = recorders  # type: ignore[assignment]
    for k in range(200):
        gen.send(k)
    summary = gen.summary()
    assert summary["hostile"] == 20 == sum(summary["hostile_by_kind"].values())
    assert summary["expected_rejects"] >= 20
    hostile_seen = 0
    for recorder in recorders:
        for i, (topic, payload) in enumerate(recorder.sent):
            if _is_good(payload):
                continue
            hostile_seen += 1
            good_topic, good_payload = recorder.sent[i - 1]
            assert i > 0 and _is_good(good_payload)
            assert topic[2:].rsplit(b"/", 1)[0] == good_topic[2:].rsplit(b"/", 1)[0]  # the same device
    assert hostile_seen == 20
    assert sum(len(r.sent) for r in recorders) == 220


def _is_good(payload: bytes) -> bool:
    """The generator's own good fixes (compact JSON; hostile payloads are written with spaces)."""
    return re.match(rb'\{"ts":\d+,"lat"', payload) is not None


def test_the_flood_is_one_device_with_distinct_valid_fixes() -> None:
    gen = FloodGenerator(_args(devices=1, device_prefix="bench-flood-"))
    recorder = _Recorder()
    gen.connections = [recorder]  # type: ignore[list-item]
    for k in range(500):
        gen.send(k)
    topics = {topic for topic, _ in recorder.sent}
    assert len(topics) == 1 and FLOOD_DEVICE.encode() in next(iter(topics))
    now = time.time_ns() // 1_000_000
    stamps = [payloads.fix_from_obj(json.loads(p), now).ts for _, p in recorder.sent]
    assert len(set(stamps)) == 500
    assert all(b < a for a, b in itertools.pairwise(stamps))


def test_the_flooding_device_is_registered_and_never_counted_as_good() -> None:
    parser = argparse.ArgumentParser()
    hostile.add_arguments(parser)
    args = parser.parse_args(["--devices", "30"])
    devices = hostile.registered_devices(args)
    assert FLOOD_DEVICE in devices and is_valid_id(FLOOD_DEVICE)
    assert not re.match(GOOD_PATTERN, FLOOD_DEVICE)
    assert all(re.match(GOOD_PATTERN, d) for d in devices if d != FLOOD_DEVICE)
