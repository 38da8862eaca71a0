"""The payload contract, table-driven from tests/fixtures/payloads.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devices import payloads
from devices.errors import PayloadError
from devices.payloads import Fix

FIXTURES = json.loads((Path(__file__).parents[1] / "fixtures" / "payloads.json").read_text())
NOW = 1_795_000_000_000


def _raw(case: dict[str, Any]) -> bytes:
    if "raw" in case:
        return case["raw"].encode("utf-8", "surrogateescape")  # lone surrogates -> raw bytes
    return json.dumps(case["json"]).encode()


@pytest.mark.parametrize("case", FIXTURES["good_fixes"], ids=lambda c: c["name"])
def test_good_fix(case: dict[str, Any]) -> None:
    fixes, bad = payloads.decode_fixes(_raw(case), NOW)
    assert bad == []
    assert len(fixes) == case["count"]
    assert all(isinstance(f, Fix) for f in fixes)


@pytest.mark.parametrize("case", FIXTURES["bad_fixes"], ids=lambda c: c["name"])
def test_bad_fix(case: dict[str, Any]) -> None:
    with pytest.raises(PayloadError) as info:
        payloads.decode_fixes(_raw(case), NOW)
    assert info.value.reason == case["reason"]


def test_batch_keeps_good_elements_and_reports_bad_ones() -> None:
    raw = json.dumps([{"ts": NOW, "lat": 1, "lon": 2}, {"ts": NOW + 1, "lat": 91, "lon": 2},
                      {"ts": NOW + 2, "lat": 1}, {"ts": NOW + 3, "lat": 1.5, "lon": 2.5}]).encode()
    fixes, bad = payloads.decode_fixes(raw, NOW)
    assert [f.ts for f in fixes] == [NOW, NOW + 3]
    assert [(i, e.reason) for i, e in bad] == [(1, "out_of_range"), (2, "missing_field")]


def test_unknown_keys_are_kept_as_attributes_and_round_trip() -> None:
    raw = json.dumps({"ts": NOW, "lat": 34.2, "lon": 117.1, "acc": 4.5, "rssi": -71, "cell": "4G"}).encode()
    (fix,), _ = payloads.decode_fixes(raw, NOW)
    assert fix.attrs == {"rssi": -71, "cell": "4G"}
    assert fix.acc == 4.5
    again, _ = payloads.decode_fixes(payloads.encode_fixes([fix]), NOW)
    assert again == [fix]


def test_ts_window_only_applies_with_hub_time() -> None:
    old = json.dumps({"ts": 1000, "lat": 1, "lon": 1}).encode()
    assert payloads.decode_fixes(old)[0][0].ts == 1000
    with pytest.raises(PayloadError) as info:
        payloads.decode_fixes(old, NOW)
    assert info.value.reason == "ts_out_of_window"


@pytest.mark.parametrize("case", FIXTURES["statuses"], ids=lambda c: c["name"])
def test_status(case: dict[str, Any]) -> None:
    if case.get("reason"):
        with pytest.raises(PayloadError) as info:
            payloads.decode_status(_raw(case), NOW)
        assert info.value.reason == case["reason"]
    else:
        status = payloads.decode_status(_raw(case), NOW)
        assert status.state == case["json"]["state"]


@pytest.mark.parametrize("case", FIXTURES["events"], ids=lambda c: c["name"])
def test_event(case: dict[str, Any]) -> None:
    if case.get("reason"):
        with pytest.raises(PayloadError) as info:
            payloads.decode_event(_raw(case), NOW)
        assert info.value.reason == case["reason"]
    else:
        event = payloads.decode_event(_raw(case), NOW)
        assert event.type == case["json"]["type"]
        assert "ts" not in event.data and "type" not in event.data


def test_command_round_trip_and_refusals() -> None:
    cmd = payloads.Command("c-1", NOW, "dispatch", {"incident": {"id": "I1", "lat": 34.2, "lon": 117.1}})
    assert payloads.decode_command(payloads.encode_command(cmd)) == cmd
    with pytest.raises(PayloadError) as info:
        payloads.decode_command(b'{"cmd_id": "x", "ts": 1, "type": "self_destruct"}')
    assert info.value.reason == "bad_value"
    with pytest.raises(PayloadError) as info:
        payloads.decode_command(b'{"ts": 1, "type": "ping"}')
    assert info.value.reason == "missing_field"


def test_event_round_trip() -> None:
    event = payloads.Event(NOW, "ack", {"cmd_id": "c-9"})
    assert payloads.decode_event(payloads.encode_event(event), NOW) == event


@pytest.mark.parametrize("case", FIXTURES["good_fixes"] + FIXTURES["bad_fixes"], ids=lambda c: c["name"])
def test_fast_path_agrees_with_the_checked_path(case: dict[str, Any]) -> None:
    raw = _raw(case)
    try:
        checked = payloads._decode_fixes_checked(raw, NOW, payloads.MAX_FUTURE_SKEW_MS)
    except PayloadError as exc:
        with pytest.raises(PayloadError) as info:
            payloads.decode_fixes(raw, NOW)
        assert info.value.reason == exc.reason
    else:
        assert payloads.decode_fixes(raw, NOW) == checked


def test_fast_path_is_taken_for_plain_fixes() -> None:
    raw = json.dumps({"ts": NOW, "lat": 34.26, "lon": 117.18, "acc": 4, "speed": 8.3}).encode()
    assert payloads._fast_fix_decoder.decode(raw) == payloads.decode_fixes(raw, NOW)[0][0]


# ------------------------------------------------------------- clock skew
@pytest.mark.parametrize("extra", [{}, {"rssi": -71}], ids=["fast_path", "checked_path"])
def test_future_margin_is_five_minutes_and_configurable(extra: dict[str, Any]) -> None:
    def fix(ts: int) -> bytes:
        return json.dumps(dict({"ts": ts, "lat": 1.0, "lon": 2.0}, **extra)).encode()

    assert payloads.MAX_FUTURE_SKEW_MS == 300_000
    assert payloads.decode_fixes(fix(NOW + 300_000), NOW)[0][0].ts == NOW + 300_000
    with pytest.raises(PayloadError) as info:
        payloads.decode_fixes(fix(NOW + 300_001), NOW)
    assert info.value.reason == "ts_in_future"
    hour = 3_600_000
    assert payloads.decode_fixes(fix(NOW + hour), NOW, max_future_ms=hour)[0][0].ts == NOW + hour
    with pytest.raises(PayloadError) as info:
        payloads.decode_fixes(fix(NOW + 60_001), NOW, max_future_ms=60_000)
    assert info.value.reason == "ts_in_future"


def test_a_fix_23_hours_ahead_is_refused_even_though_the_old_margin_allowed_it() -> None:
    raw = json.dumps({"ts": NOW + 23 * 3_600_000, "lat": 1, "lon": 2}).encode()
    with pytest.raises(PayloadError) as info:
        payloads.decode_fixes(raw, NOW)
    assert info.value.reason == "ts_in_future"


def test_a_future_element_of_a_batch_costs_only_that_element() -> None:
    raw = json.dumps([{"ts": NOW - 1000, "lat": 1, "lon": 2}, {"ts": NOW + 23 * 3_600_000, "lat": 1, "lon": 2},
                      {"ts": NOW, "lat": 1, "lon": 2}]).encode()
    fixes, bad = payloads.decode_fixes(raw, NOW)
    assert [f.ts for f in fixes] == [NOW - 1000, NOW]
    assert [(i, e.reason) for i, e in bad] == [(1, "ts_in_future")]


def test_status_event_and_fix_from_obj_take_the_margin_too() -> None:
    ahead = NOW + 600_000
    status = json.dumps({"ts": ahead, "state": "online"}).encode()
    event = json.dumps({"ts": ahead, "type": "sos"}).encode()
    for decode in (payloads.decode_status, payloads.decode_event):
        with pytest.raises(PayloadError) as info:
            decode(status if decode is payloads.decode_status else event, NOW)
        assert info.value.reason == "ts_in_future"
    assert payloads.decode_status(status, NOW, max_future_ms=600_000).ts == ahead
    assert payloads.decode_event(event, NOW, max_future_ms=600_000).ts == ahead
    obj = {"ts": ahead, "lat": 1, "lon": 2}
    with pytest.raises(PayloadError) as info:
        payloads.fix_from_obj(obj, NOW)
    assert info.value.reason == "ts_in_future"
    assert payloads.fix_from_obj(obj, NOW, max_future_ms=600_000).ts == ahead


def test_too_old_keeps_its_own_reason() -> None:
    raw = json.dumps({"ts": payloads.MIN_TS_MS - 1, "lat": 1, "lon": 2}).encode()
    with pytest.raises(PayloadError) as info:
        payloads.decode_fixes(raw, NOW)
    assert info.value.reason == "ts_out_of_window"


# ------------------------------------------------ bounded, storable decoding
DEEP = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize("decode", [payloads.decode_json, payloads.decode_fixes, payloads.decode_status,
                                    payloads.decode_event, payloads.decode_command], ids=lambda f: f.__name__)
@pytest.mark.parametrize("raw", [DEEP, DEEP[:5000], b'{"a":' * 5000 + b"1" + b"}" * 5000,
                                 b'{"ts":1,"lat":1,"lon":1,"attrs":' + DEEP + b"}"], ids=["array", "truncated",
                                                                                          "object", "fast_attrs"])
def test_deep_nesting_is_a_reject_not_a_recursion_error(decode: Any, raw: bytes) -> None:
    with pytest.raises(PayloadError) as info:
        decode(raw)
    assert info.value.reason == "too_deep"


def test_nesting_of_exactly_32_passes_and_33_does_not() -> None:
    assert payloads.decode_json(b"[" * 32 + b"]" * 32) is not None
    with pytest.raises(PayloadError) as info:
        payloads.decode_json(b"[" * 33 + b"]" * 33)
    assert info.value.reason == "too_deep"
    # brackets inside strings are text, not nesting
    assert payloads.decode_json(json.dumps({"s": "[" * 100, "t": '\\"{' * 50}).encode())["s"] == "[" * 100


@pytest.mark.parametrize(("doc", "reason"), [
    ({"a": "x\u0000"}, "bad_text"),
    ({"a\u0000": 1}, "bad_text"),
    ({"a": "\u001f"}, "bad_text"),
    ({"a": "y" * 4097}, "too_long"),
    ({"a": [0] * 1001}, "too_long"),
    ({f"k{i}": 0 for i in range(257)}, "too_many_keys"),
    ({"a": 2**63}, "number_too_large"),
], ids=["nul", "nul_key", "control", "long_string", "long_array", "keys", "int"])
def test_decode_json_refuses_what_postgres_cannot_store(doc: dict[str, Any], reason: str) -> None:
    raw = json.dumps(doc).encode()  # json.dumps writes NUL and controls as \u escapes
    with pytest.raises(PayloadError) as info:
        payloads.decode_json(raw)
    assert info.value.reason == reason


def test_every_reason_is_known() -> None:
    reasons = {c["reason"] for section in FIXTURES.values() for c in section if c.get("reason")}
    assert reasons <= payloads.REASONS
    assert {"bad_text", "too_deep", "too_many_keys", "too_long", "number_too_large", "ts_in_future"} <= reasons


def test_an_unforeseen_failure_becomes_an_internal_reject() -> None:
    class Treacherous(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("boom")

    with pytest.raises(PayloadError) as info:
        payloads.fix_from_obj(Treacherous(ts=NOW, lat=1, lon=2))
    assert info.value.reason == "internal" and "RuntimeError" in info.value.detail


def test_a_command_keeps_a_long_summary() -> None:
    # Hub-authored: a dispatch must reach the device whatever the incident's text.
    cmd = payloads.Command("c-2", NOW, "dispatch", {"incident": {"id": "I2", "summary": "长" * 10_000}})
    assert payloads.decode_command(payloads.encode_command(cmd)) == cmd


def test_storable_text() -> None:
    assert payloads.storable_text("ok", 10) == "ok"
    assert payloads.storable_text("a\x00b\ud800c\udfff", 100) == "a\ufffdb\ufffdc\ufffd"
    assert payloads.storable_text("x" * 50, 8) == "x" * 8
    assert payloads.storable_text("tab\tand\x07bell", 100) == "tab\tand\x07bell"  # PostgreSQL stores these
    assert payloads.storable_text("abc", 0) == ""
    # In a Python str surrogates are always lone code points (a valid pair decodes to one character).
    assert payloads.storable_text("\ud83d\ude00\U0001F600", 4) == "\ufffd\ufffd\U0001F600"


def test_reject_details_are_storable() -> None:
    raw = b'{"ts": %d, "state": "\\u0000\\ud800 bad"}' % NOW
    with pytest.raises(PayloadError) as info:
        payloads.decode_status(raw, NOW)
    assert info.value.reason == "bad_value"
    info.value.detail.encode("utf-8")
    assert "\x00" not in info.value.detail
