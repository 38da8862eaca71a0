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
        checked = payloads._decode_fixes_checked(raw, NOW)
    except PayloadError as exc:
        with pytest.raises(PayloadError) as info:
            payloads.decode_fixes(raw, NOW)
        assert info.value.reason == exc.reason
    else:
        assert payloads.decode_fixes(raw, NOW) == checked


def test_fast_path_is_taken_for_plain_fixes() -> None:
    raw = json.dumps({"ts": NOW, "lat": 34.26, "lon": 117.18, "acc": 4, "speed": 8.3}).encode()
    assert payloads._fast_fix_decoder.decode(raw) == payloads.decode_fixes(raw, NOW)[0][0]
