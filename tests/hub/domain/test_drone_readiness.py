"""The link failsafe as ArduCopter's parameters make it, and a drone's readiness: pure, table-driven."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.drone_candidate import DroneCandidate, DroneEnergy, Failsafe
from hub.domain.drone_readiness import FAILSAFE_PARAMS, Readiness, gcs_failsafe, readiness

HUB = 250
ENERGY = DroneEnergy(dock_radius_m=30.0)


# ------------------------------------------------------------------- failsafe
@pytest.mark.parametrize(("enable", "action", "text"), [
    (1, "rtl", "on link loss the autopilot returns to launch after 5 s (FS_GCS_ENABLE=1)"),
    (2, "continue_or_rtl",
     "on link loss the autopilot returns to launch (it would continue a mission flown in AUTO) after 5 s "
     "(FS_GCS_ENABLE=2)"),
    (3, "smartrtl_or_rtl",
     "on link loss the autopilot flies back along its path (SmartRTL; RTL if that is unavailable) after 5 s "
     "(FS_GCS_ENABLE=3)"),
    (4, "smartrtl_or_land",
     "on link loss the autopilot flies back along its path (SmartRTL; lands where it is if that is unavailable) "
     "after 5 s (FS_GCS_ENABLE=4)"),
    (5, "land", "on link loss the autopilot lands where it is after 5 s (FS_GCS_ENABLE=5)"),
    (6, "land_start_or_rtl",
     "on link loss the autopilot flies its mission's landing sequence (DO_LAND_START; RTL if there is none) "
     "after 5 s (FS_GCS_ENABLE=6)"),
])
def test_each_enabled_failsafe_says_what_the_autopilot_does(enable: int, action: str, text: str) -> None:
    fs = gcs_failsafe({"FS_GCS_ENABLE": float(enable), "MAV_GCS_SYSID": 250.0}, HUB)
    assert fs == Failsafe(True, True, action, text, {"FS_GCS_ENABLE": float(enable), "MAV_GCS_SYSID": 250.0})


def test_disabled_failsafe_is_none() -> None:
    fs = gcs_failsafe({"FS_GCS_ENABLE": 0.0, "MAV_GCS_SYSID": 250.0, "FS_GCS_TIMEOUT": 5.0}, HUB)
    assert (fs.known, fs.ok, fs.action) == (True, False, "none")
    assert fs.text == ("NO link failsafe: FS_GCS_ENABLE=0, on link loss the drone flies on to its last target and "
                       "hovers there until its battery failsafe")


def test_stock_arducopter_has_no_failsafe_for_the_hub() -> None:
    """Issue 14: FS_GCS_ENABLE=0 and MAV_GCS_SYSID=255 with the hub at 250: both faults are named."""
    fs = gcs_failsafe({"FS_GCS_ENABLE": 0.0, "MAV_GCS_SYSID": 255.0}, HUB)
    assert not fs.ok and fs.action == "none"
    assert fs.text.startswith("NO link failsafe: FS_GCS_ENABLE=0")
    assert "only from system 255 (MAV_GCS_SYSID) and the hub is system 250" in fs.text


@pytest.mark.parametrize(("params", "source"), [
    ({"FS_GCS_ENABLE": 1.0, "MAV_GCS_SYSID": 255.0}, "MAV_GCS_SYSID"),
    ({"FS_GCS_ENABLE": 1.0, "SYSID_MYGCS": 255.0}, "SYSID_MYGCS"),
    ({"FS_GCS_ENABLE": 1.0}, "MAV_GCS_SYSID not read: its default"),
])
def test_a_gcs_sysid_other_than_the_hubs_means_no_failsafe(params: dict[str, float], source: str) -> None:
    fs = gcs_failsafe(params, HUB)
    assert (fs.known, fs.ok, fs.action) == (True, False, "none")
    assert fs.text == (f"NO link failsafe: the autopilot takes ground-station heartbeats only from system 255 "
                       f"({source}) and the hub is system 250")


def test_older_firmware_sysid_name_and_the_default_both_match() -> None:
    assert gcs_failsafe({"FS_GCS_ENABLE": 1.0, "SYSID_MYGCS": 250.0}, HUB).ok
    assert gcs_failsafe({"FS_GCS_ENABLE": 1.0}, 255).ok  # a hub at 255 matches the stock default
    # MAV_GCS_SYSID is the current name: it wins over a stale SYSID_MYGCS.
    assert not gcs_failsafe({"FS_GCS_ENABLE": 1.0, "MAV_GCS_SYSID": 255.0, "SYSID_MYGCS": 250.0}, HUB).ok


def test_the_timeout_is_stated() -> None:
    fs = gcs_failsafe({"FS_GCS_ENABLE": 5.0, "MAV_GCS_SYSID": 250.0, "FS_GCS_TIMEOUT": 2.5}, HUB)
    assert fs.text == "on link loss the autopilot lands where it is after 2.5 s (FS_GCS_ENABLE=5)"


@pytest.mark.parametrize(("params", "text"), [
    ({}, "link failsafe unknown: parameters not read"),
    ({"MAV_GCS_SYSID": 250.0}, "link failsafe unknown: parameters not read"),
    ({"FS_GCS_ENABLE": 7.0, "MAV_GCS_SYSID": 250.0},
     "link failsafe unknown: FS_GCS_ENABLE=7 is not a value the hub knows"),
    ({"FS_GCS_ENABLE": 1.5, "MAV_GCS_SYSID": 250.0},
     "link failsafe unknown: FS_GCS_ENABLE=1.5 is not a value the hub knows"),
    ({"FS_GCS_ENABLE": math.nan}, "link failsafe unknown: FS_GCS_ENABLE=nan is not a value the hub knows"),
    ({"FS_GCS_ENABLE": 1.0, "MAV_GCS_SYSID": 250.5},
     "link failsafe unknown: MAV_GCS_SYSID or FS_GCS_TIMEOUT unreadable"),
    ({"FS_GCS_ENABLE": 1.0, "MAV_GCS_SYSID": 250.0, "FS_GCS_TIMEOUT": -1.0},
     "link failsafe unknown: MAV_GCS_SYSID or FS_GCS_TIMEOUT unreadable"),
])
def test_missing_or_strange_parameters_are_unknown_and_not_ok(params: dict[str, float], text: str) -> None:
    fs = gcs_failsafe(params, HUB)
    assert (fs.known, fs.ok, fs.action, fs.text) == (False, False, "unknown", text)


def test_other_parameters_are_not_kept() -> None:
    fs = gcs_failsafe({"FS_GCS_ENABLE": 1.0, "MAV_GCS_SYSID": 250.0, "WPNAV_SPEED": 1000.0}, HUB)
    assert fs.params == {"FS_GCS_ENABLE": 1.0, "MAV_GCS_SYSID": 250.0}


_value = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-300, 300).map(float)


@settings(max_examples=300)
@given(params=st.dictionaries(st.sampled_from([*FAILSAFE_PARAMS, "OTHER"]), _value), hub=st.integers(1, 255))
def test_hostile_parameters_never_crash_and_ok_only_when_it_really_triggers(params: dict[str, float],
                                                                            hub: int) -> None:
    fs = gcs_failsafe(params, hub)
    assert fs.text and fs.action in {"rtl", "land", "continue_or_rtl", "smartrtl_or_rtl", "smartrtl_or_land",
                                     "land_start_or_rtl", "none", "unknown"}
    assert set(fs.params) <= set(FAILSAFE_PARAMS)
    if fs.ok:
        sysid = params.get("MAV_GCS_SYSID", params.get("SYSID_MYGCS", 255.0))
        assert fs.known and params["FS_GCS_ENABLE"] in {1.0, 2.0, 3.0, 4.0, 5.0, 6.0} and sysid == hub
        assert fs.text.startswith("on link loss the autopilot ")
    else:
        assert fs.text.startswith(("NO link failsafe: ", "link failsafe unknown: "))
    assert fs.known == (fs.action != "unknown")


# ------------------------------------------------------------------ readiness
GOOD_FAILSAFE = gcs_failsafe({"FS_GCS_ENABLE": 1.0, "MAV_GCS_SYSID": 250.0}, HUB)


def candidate(**changes: object) -> DroneCandidate:
    c = DroneCandidate("D1", 34.26, 117.18, 90.0, True, False, True, 3.0, failsafe=GOOD_FAILSAFE)
    return dataclasses.replace(c, **changes)  # type: ignore[arg-type]


# Every fault at once, then each removed in priority order: the state and reason each time.
FAULTS: list[tuple[dict[str, object], Readiness]] = [
    ({"signing": "refused"},
     Readiness("refused_unsigned", "link refused: the hub has no key for it and no \"unsigned\" opt-in")),
    ({"heard": False}, Readiness("offline", "never heard")),
    ({"link_ok": False}, Readiness("unavailable", "link lost")),
    ({"signed_no_key": True},
     Readiness("signed_no_key", "signed, no key: the autopilot drops every command the hub sends it")),
    ({"telemetry_problem": "no GLOBAL_POSITION_INT 5 s after SET_MESSAGE_INTERVAL"},
     Readiness("no_telemetry", "no GLOBAL_POSITION_INT 5 s after SET_MESSAGE_INTERVAL")),
    ({"position_fresh": False}, Readiness("no_telemetry", "no fresh position")),
    ({"armed": True, "on_ground": False}, Readiness("flying")),
    ({"prearm_ok": False, "prearm_text": "PreArm: Gyros inconsistent"},
     Readiness("not_ready", "PreArm: Gyros inconsistent")),
    ({"dock_distance_m": 119.4}, Readiness("landed_away", "landed 119 m from its dock", ("return_to_dock",))),
    ({"failsafe": gcs_failsafe({"FS_GCS_ENABLE": 0.0, "MAV_GCS_SYSID": 250.0}, HUB)},
     Readiness("no_failsafe", "NO link failsafe: FS_GCS_ENABLE=0, on link loss the drone flies on to its last "
                              "target and hovers there until its battery failsafe", ("enable_failsafe",))),
]


@pytest.mark.parametrize("k", range(len(FAULTS) + 1))
def test_readiness_names_the_first_fault_in_priority_order(k: int) -> None:
    changes: dict[str, object] = {}
    for faults, _ in FAULTS[k:]:
        changes.update(faults)
    expected = FAULTS[k][1] if k < len(FAULTS) else Readiness("ready")
    assert readiness(candidate(**changes), ENERGY) == expected


@pytest.mark.parametrize(("changes", "expected"), [
    ({"lat": None, "lon": None, "dock_distance_m": None}, Readiness("no_telemetry", "no position")),
    ({"lat": None, "lon": None, "dock_distance_m": None, "position_fresh": False},
     Readiness("no_telemetry", "no fresh position")),
    ({"prearm_ok": False}, Readiness("not_ready", "pre-arm checks failing")),
    ({"prearm_ok": None}, Readiness("ready")),  # the autopilot does not report it: counts as healthy
    ({"prearm_ok": True, "prearm_text": "Arm: old refusal"}, Readiness("ready")),
    ({"armed": True}, Readiness("flying")),
    ({"on_ground": False}, Readiness("flying")),
    ({"dock_distance_m": 30.0}, Readiness("ready")),
    ({"dock_distance_m": 31.0}, Readiness("landed_away", "landed 31 m from its dock", ("return_to_dock",))),
    ({"failsafe": None}, Readiness("no_failsafe", "link failsafe unknown: parameters not read", ("enable_failsafe",))),
    ({"signing": "unsigned"}, Readiness("ready")),
    ({"heard": False, "link_ok": False}, Readiness("offline", "never heard")),
])
def test_readiness_cases(changes: dict[str, object], expected: Readiness) -> None:
    assert readiness(candidate(**changes), ENERGY) == expected


def test_a_drone_landed_away_with_failing_prearm_is_not_ready_first() -> None:
    r = readiness(candidate(dock_distance_m=500.0, prearm_ok=False, prearm_text="Arm: Need Position Estimate"),
                  ENERGY)
    assert r == Readiness("not_ready", "Arm: Need Position Estimate")
