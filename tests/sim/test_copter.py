"""The pure copter model: ArduCopter's answers to commands, and how it flies."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from geo.geodesy import haversine_m, offset
from sim.copter import FORCE_MAGIC, Copter, CopterConfig, CopterEvent, LandedState, MissionItem, Mode, NavCmd, Result

T0 = 1_795_000_000_000
DOCK = (34.2610, 117.1859, 40.0)


def make(**config: Any) -> Copter:
    return Copter(*DOCK, T0, random.Random(3), CopterConfig(**config))


def run_until(c: Copter, done: Callable[[Copter], bool], limit_s: float = 600.0, step_ms: int = 250) -> float:
    """Step until ``done``; return the simulated seconds it took (fails the test at ``limit_s``)."""
    start = c.now_ms
    while not done(c):
        assert c.now_ms - start < limit_s * 1000, f"not done after {limit_s} s: {c.mode.name} {c.landed_state.name}"
        c.step(c.now_ms + step_ms)
    return (c.now_ms - start) / 1000


def note(seen: list[Any], *values: Any) -> bool:
    """Record values from inside a ``run_until`` predicate; always False so the predicate goes on."""
    seen.extend(values)
    return False


def flying(alt: float = 20.0, **config: Any) -> Copter:
    c = make(**config)
    assert c.set_mode(Mode.GUIDED) == Result.ACCEPTED
    assert c.arm() == Result.ACCEPTED
    assert c.takeoff(alt) == Result.ACCEPTED
    run_until(c, lambda c: c.landed_state is LandedState.IN_AIR)
    return c


def distance_to(c: Copter, lat: float, lon: float) -> float:
    here = c.position()
    return haversine_m(here[0], here[1], lat, lon)


@pytest.mark.parametrize(
    ("setup", "force", "expected", "armed"),
    [
        (lambda c: None, False, Result.ACCEPTED, True),
        (lambda c: setattr(c.gps, "fix_type", 1), False, Result.FAILED, False),
        (lambda c: setattr(c.gps, "satellites", 4), False, Result.FAILED, False),
        (lambda c: c.set_battery(10.0), False, Result.FAILED, False),
        (lambda c: setattr(c.gps, "fix_type", 1), True, Result.ACCEPTED, True),
        (lambda c: c.set_battery(10.0), True, Result.ACCEPTED, True),
        (lambda c: c.set_mode(Mode.RTL), False, Result.FAILED, False),  # RTL is not an arming mode
    ],
)
def test_arming_checks_and_force(setup: Callable[[Copter], object], force: bool, expected: Result,
                                 armed: bool) -> None:
    c = make()
    setup(c)
    assert c.arm(force=force) == expected
    assert c.armed is armed
    texts = [e.text for e in c.drain_events() if e.kind == "text"]
    assert any(t.startswith("Arm: ") for t in texts) is (expected == Result.FAILED)


def test_force_magic_is_ardupilots() -> None:
    assert FORCE_MAGIC == 21196


@pytest.mark.parametrize(
    ("mode", "arm", "expected"),
    [(Mode.GUIDED, True, Result.ACCEPTED), (Mode.GUIDED, False, Result.FAILED),
     (Mode.LOITER, True, Result.FAILED), (Mode.STABILIZE, True, Result.FAILED)],
)
def test_takeoff_only_armed_in_guided(mode: Mode, arm: bool, expected: Result) -> None:
    c = make()
    c.set_mode(mode)
    if arm:
        c.arm()
    assert c.takeoff(15.0) == expected
    c.step(T0 + 2000)
    assert (c.body.alt > 0) is (expected == Result.ACCEPTED)


def test_takeoff_climbs_at_about_2_5_mps_and_reports_landed_states() -> None:
    c = make()
    c.set_mode(Mode.GUIDED)
    c.arm()
    assert c.landed_state is LandedState.ON_GROUND
    c.takeoff(20.0)
    c.step(T0 + 4000)
    assert c.landed_state is LandedState.TAKEOFF
    assert 6.0 < c.body.alt < 10.0  # 2.5 m/s after a short acceleration
    took = run_until(c, lambda c: c.landed_state is LandedState.IN_AIR)
    assert abs(c.body.alt - 20.0) < 0.5
    assert 3.0 < took < 8.0
    assert c.takeoff(30.0) == Result.FAILED  # already flying


def test_unknown_and_position_modes_refused() -> None:
    c = make()
    assert c.set_mode(1) == Result.FAILED  # ACRO is not simulated
    assert c.set_mode(99) == Result.FAILED
    c.gps.fix_type = 0
    assert c.set_mode(Mode.GUIDED) == Result.FAILED
    assert c.set_mode(Mode.ALT_HOLD) == Result.ACCEPTED
    assert c.mode is Mode.ALT_HOLD


def test_guided_goto_flies_at_cruise_speed_heads_there_and_hovers() -> None:
    c = flying(20.0)
    lat, lon = offset(DOCK[0], DOCK[1], 300.0, 400.0)  # 500 m away, bearing about 53 degrees
    assert c.goto(lat, lon, 25.0) == Result.ACCEPTED
    speeds: list[float] = []
    took = run_until(c, lambda c: (note(speeds, c.ground_speed()) or distance_to(c, lat, lon) < 1.0))
    assert max(speeds) == pytest.approx(12.0, abs=0.01)
    assert 500 / 12 < took < 500 / 12 + 12  # cruise plus accelerating and braking
    assert abs(c.body.heading - 53.13) < 1.0
    c.step(c.now_ms + 20_000)
    assert distance_to(c, lat, lon) < 0.5 and c.ground_speed() < 0.1 and abs(c.body.alt - 25.0) < 0.2
    assert c.mode is Mode.GUIDED and c.landed_state is LandedState.IN_AIR


def test_goto_refused_outside_guided_or_on_ground() -> None:
    c = make()
    c.set_mode(Mode.GUIDED)
    assert c.goto(DOCK[0] + 0.001, DOCK[1], 20.0) == Result.FAILED  # on the ground
    c = flying()
    c.set_mode(Mode.LOITER)
    assert c.goto(DOCK[0] + 0.001, DOCK[1], 20.0) == Result.DENIED


def _mission() -> list[MissionItem]:
    a = offset(DOCK[0], DOCK[1], 200.0, 0.0)
    b = offset(DOCK[0], DOCK[1], 200.0, 200.0)
    return [
        MissionItem(NavCmd.WAYPOINT, DOCK[0], DOCK[1], 0.0, frame=0),  # home, never flown
        MissionItem(NavCmd.TAKEOFF, alt=20.0),
        MissionItem(NavCmd.WAYPOINT, *a, 20.0),
        MissionItem(NavCmd.LOITER_TIME, *b, 25.0, param1=5.0),
        MissionItem(NavCmd.RETURN_TO_LAUNCH),
    ]


def test_mission_runs_items_in_order_reports_reached_and_ends_home_disarmed() -> None:
    c = make(rtl_loiter_s=1.0)
    c.set_mission(_mission())
    c.set_mode(Mode.GUIDED)
    c.arm()
    assert c.mission_start() == Result.ACCEPTED
    events: list[CopterEvent] = []
    run_until(c, lambda c: (note(events, *c.drain_events()) or not c.armed), limit_s=300)
    current = [e.value for e in events if e.kind == "mission_current"]
    reached = [e.value for e in events if e.kind == "item_reached"]
    assert current == [1, 2, 3, 4]
    assert reached == [1, 2, 3, 4]
    assert distance_to(c, DOCK[0], DOCK[1]) < 1.0 and c.landed_state is LandedState.ON_GROUND


def test_auto_needs_a_takeoff_item_on_the_ground_and_a_mission() -> None:
    c = make()
    c.set_mode(Mode.GUIDED)
    c.arm()
    assert c.set_mode(Mode.AUTO) == Result.FAILED  # no mission
    c.set_mission(_mission()[:1] + _mission()[2:])  # starts with a waypoint
    assert c.set_mode(Mode.AUTO) == Result.FAILED
    assert any("Missing Takeoff" in e.text for e in c.drain_events())


def test_auto_in_the_air_flies_waypoint_then_hovers_at_the_end() -> None:
    c = flying()
    c.set_mission(_mission()[:3])
    assert c.set_mode(Mode.AUTO) == Result.ACCEPTED
    a = offset(DOCK[0], DOCK[1], 200.0, 0.0)
    run_until(c, lambda c: any(e.text == "Mission complete" for e in c.drain_events()))
    assert distance_to(c, *a) < 2.0 and c.armed and c.mode is Mode.AUTO


@pytest.mark.parametrize("start_alt", [10.0, 45.0])
def test_rtl_climbs_to_rtl_alt_flies_home_lands_and_disarms(start_alt: float) -> None:
    c = flying(start_alt, rtl_loiter_s=2.0)
    lat, lon = offset(DOCK[0], DOCK[1], -250.0, 100.0)
    c.goto(lat, lon, start_alt)
    run_until(c, lambda c: distance_to(c, lat, lon) < 1.0)
    assert c.set_mode(Mode.RTL) == Result.ACCEPTED
    alts: list[float] = []
    run_until(c, lambda c: (note(alts, c.body.alt) or distance_to(c, DOCK[0], DOCK[1]) < 1.0))
    assert min(alts[-5:]) >= max(30.0, start_alt) - 0.5  # the return leg is at RTL altitude or higher
    run_until(c, lambda c: not c.armed)
    assert c.landed_state is LandedState.ON_GROUND and distance_to(c, DOCK[0], DOCK[1]) < 1.0


def test_land_descends_about_1_mps_and_disarms_on_touchdown() -> None:
    c = flying(20.0)
    assert c.set_mode(Mode.LAND) == Result.ACCEPTED
    assert c.landed_state is LandedState.LANDING
    took = run_until(c, lambda c: not c.armed)
    assert 20 / 1.5 < took < 20 / 1.0 + 5
    assert c.body.alt == 0.0 and c.landed_state is LandedState.ON_GROUND
    assert [e.text for e in c.drain_events() if e.kind == "text"][-2:] == ["Landed", "Disarming motors"]


def test_disarm_in_flight_refused_unless_forced() -> None:
    c = flying()
    assert c.disarm() == Result.FAILED and c.armed
    assert c.disarm(force=True) == Result.ACCEPTED and not c.armed


def test_battery_drains_with_time_and_faster_when_flying_fast() -> None:
    hover, cruise = flying(), flying()
    far = offset(DOCK[0], DOCK[1], 5000.0, 0.0)
    cruise.goto(*far, 20.0)
    h0, c0 = hover.battery_pct, cruise.battery_pct
    for c in (hover, cruise):
        c.step(c.now_ms + 60_000)
    hover_used, cruise_used = h0 - hover.battery_pct, c0 - cruise.battery_pct
    assert hover_used == pytest.approx(60 * 100 / 1500, rel=0.01)  # a 25-minute hover
    assert cruise_used > hover_used * 1.2


def test_disarmed_copter_does_not_drain() -> None:
    c = make()
    c.step(T0 + 600_000)
    assert c.battery_pct == 100.0


def test_low_battery_failsafe_returns_home() -> None:
    c = flying(low_battery_pct=30.0, rtl_loiter_s=0.0)
    c.goto(*offset(DOCK[0], DOCK[1], 400.0, 0.0), 20.0)
    c.step(c.now_ms + 10_000)
    c.set_battery(30.5)
    run_until(c, lambda c: c.mode is Mode.RTL, limit_s=120)
    assert any(e.kind == "text" and e.value == 2 and "low" in e.text for e in c.drain_events())
    run_until(c, lambda c: not c.armed)
    assert distance_to(c, DOCK[0], DOCK[1]) < 1.0


def test_auto_disarm_after_delay_on_the_ground() -> None:
    c = make(disarm_delay_s=10.0)
    c.set_mode(Mode.GUIDED)
    c.arm()
    c.step(T0 + 9_000)
    assert c.armed
    c.step(T0 + 10_500)
    assert not c.armed


@pytest.mark.parametrize(
    ("enable", "mode", "expected"),
    [(0, Mode.GUIDED, Mode.GUIDED), (1, Mode.GUIDED, Mode.RTL), (2, Mode.GUIDED, Mode.RTL),
     (2, Mode.AUTO, Mode.AUTO), (3, Mode.GUIDED, Mode.RTL), (4, Mode.GUIDED, Mode.LAND),
     (5, Mode.GUIDED, Mode.LAND), (6, Mode.GUIDED, Mode.RTL)],
)
def test_gcs_failsafe_follows_fs_gcs_enable(enable: int, mode: Mode, expected: Mode) -> None:
    c = flying(fs_gcs_enable=enable)
    if mode is Mode.AUTO:
        c.set_mission(_mission())
        assert c.set_mode(Mode.AUTO) == Result.ACCEPTED
    c.gcs_heartbeat(255)
    c.step(c.now_ms + 4_900)
    assert c.mode is mode and not c.gcs_failsafe  # FS_GCS_TIMEOUT is 5 s
    c.step(c.now_ms + 300)
    assert c.mode is expected and c.gcs_failsafe is (enable != 0)
    texts = [e.text for e in c.drain_events() if e.kind == "text"]
    assert ("GCS Failsafe" in texts) is (enable != 0)
    c.gcs_heartbeat(255)
    assert not c.gcs_failsafe


def test_gcs_failsafe_needs_a_heartbeat_from_mav_gcs_sysid_first() -> None:
    c = flying(fs_gcs_enable=1, gcs_sysid=250)
    c.step(c.now_ms + 30_000)
    assert c.mode is Mode.GUIDED  # never heard its GCS: nothing to lose
    c.gcs_heartbeat(255)  # not MAV_GCS_SYSID: does not count
    c.step(c.now_ms + 30_000)
    assert c.mode is Mode.GUIDED
    c.gcs_heartbeat(250)
    c.step(c.now_ms + 5_200)
    assert c.mode is Mode.RTL


def test_gcs_failsafe_waits_for_fs_gcs_timeout_and_not_on_the_ground() -> None:
    c = flying(fs_gcs_enable=1, fs_gcs_timeout_s=20.0)
    c.gcs_heartbeat(255)
    c.step(c.now_ms + 19_000)
    assert c.mode is Mode.GUIDED
    c.step(c.now_ms + 1_500)
    assert c.mode is Mode.RTL
    parked = make(fs_gcs_enable=1)
    parked.gcs_heartbeat(255)
    parked.set_mode(Mode.GUIDED)
    parked.arm()
    parked.step(parked.now_ms + 8_000)
    assert parked.mode is Mode.GUIDED and parked.armed  # armed on the ground: not flying, no failsafe


def test_gps_noise_is_a_few_metres_and_wanders_slowly() -> None:
    c = make()
    errors, jumps = [], []
    last = c.gps_position()
    for k in range(1, 2400):
        c.step(T0 + k * 250)
        fix = c.gps_position()
        errors.append(haversine_m(*fix, DOCK[0], DOCK[1]))
        jumps.append(haversine_m(*fix, *last))
        last = fix
    assert 0.3 < sum(errors) / len(errors) < 5.0
    assert max(errors) < 10.0
    assert max(jumps) < 1.0  # correlated error: no white-noise jitter between fixes


def land_at(c: Copter, lat: float, lon: float) -> None:
    c.goto(lat, lon, 20.0)
    run_until(c, lambda c: distance_to(c, lat, lon) < 0.5)
    c.set_mode(Mode.LAND)
    run_until(c, lambda c: not c.armed)


def test_home_is_reset_where_it_arms() -> None:
    c = flying()
    spot = offset(DOCK[0], DOCK[1], 100.0, 0.0)
    land_at(c, *spot)
    c.drain_events()
    c.set_mode(Mode.GUIDED)
    c.arm()
    assert haversine_m(*c.home()[:2], *spot) < 1.0
    assert c.home()[2] == DOCK[2] and not c.home_locked
    assert [e.kind for e in c.drain_events()].count("home") == 1  # HOME_POSITION goes out unasked


def test_set_home_locks_it_over_arming_and_rtl_lands_there() -> None:
    c = flying(rtl_loiter_s=0.0)
    assert c.set_home(DOCK[0], DOCK[1], DOCK[2]) == Result.ACCEPTED and c.home_locked
    spot = offset(DOCK[0], DOCK[1], 0.0, 150.0)
    land_at(c, *spot)
    c.set_mode(Mode.GUIDED)
    assert c.arm() == Result.ACCEPTED
    assert haversine_m(*c.home()[:2], DOCK[0], DOCK[1]) < 0.01  # kept: DO_SET_HOME locked it
    c.takeoff(20.0)
    run_until(c, lambda c: c.landed_state is LandedState.IN_AIR)
    c.set_mode(Mode.RTL)
    run_until(c, lambda c: not c.armed)
    assert distance_to(c, DOCK[0], DOCK[1]) < 1.0


def test_set_home_in_flight_refusals_and_relative_altitudes() -> None:
    c = flying(30.0)
    assert c.set_home(*offset(DOCK[0], DOCK[1], 50_100.0, 0.0), DOCK[2]) == Result.FAILED  # too far
    assert c.set_home(float("nan"), DOCK[1], DOCK[2]) == Result.DENIED
    assert c.set_home(91.0, DOCK[1], DOCK[2]) == Result.DENIED
    assert c.home_locked is False
    assert c.set_home_here() == Result.ACCEPTED  # in the air: home is up here, as in ArduPilot
    assert c.home()[2] == pytest.approx(DOCK[2] + 30.0, abs=0.5)
    assert c.position()[2] == pytest.approx(0.0, abs=0.5)  # altitudes are above home
    c.set_home(DOCK[0], DOCK[1], DOCK[2] + 10.0)
    assert c.position()[2] == pytest.approx(20.0, abs=0.5)
    c.goto(DOCK[0], DOCK[1], 15.0)  # 15 m above a home 10 m up
    run_until(c, lambda c: distance_to(c, DOCK[0], DOCK[1]) < 0.5 and abs(c.body.alt - 25.0) < 0.2)


def test_prearm_checks_order_reasons_and_arming_check() -> None:
    c = make()
    c.set_fault("Gyros inconsistent")
    c.gps.fix_type = 1
    c.set_battery(10.0)
    reasons: list[str] = []
    for clear in (lambda: c.set_fault(None), lambda: setattr(c.gps, "fix_type", 3), lambda: c.set_battery(90)):
        assert c.arm() == Result.FAILED and not c.prearm_ok
        reasons += [e.text for e in c.drain_events() if e.kind == "text" and e.text.startswith("Arm: ")]
        clear()
    assert [r.split(" (")[0] for r in reasons] == [
        "Arm: Gyros inconsistent", "Arm: Need Position Estimate", "Arm: Battery 1 below minimum arming capacity"]
    assert c.prearm_ok
    skipped = make(arming_check=0)
    skipped.set_fault("Gyros inconsistent")
    skipped.gps.fix_type = 0
    assert skipped.prearm_ok
    skipped.set_mode(Mode.ALT_HOLD)
    assert skipped.arm() == Result.ACCEPTED
    mode_refused = make(arming_check=0)
    mode_refused.set_mode(Mode.LAND)
    assert mode_refused.arm() == Result.FAILED  # ARMING_CHECK does not skip the mode check
    assert [e.text for e in mode_refused.drain_events()] == ["Arm: Mode not armable: LAND"]
    only_gps = make(arming_check=8)  # ArmingCheck.GPS alone: the sensor fault is not checked
    only_gps.set_fault("Gyros inconsistent")
    assert only_gps.prearm_ok
    only_gps.gps.fix_type = 0
    assert not only_gps.prearm_ok


def test_failing_prearm_is_repeated_every_30_s_while_disarmed() -> None:
    c = make()
    c.set_fault("Gyros inconsistent")
    times: list[int] = []
    for k in range(1, 4 * 70 + 1):  # 70 s in 250 ms steps
        c.step(T0 + k * 250)
        times += [c.now_ms - T0 for e in c.drain_events() if e.text == "PreArm: Gyros inconsistent"]
    assert times == [250, 30_250, 60_250]  # at once, then every 30 s (seen at the end of each 250 ms step)
    c.set_fault(None)
    c.step(c.now_ms + 60_000)
    assert c.drain_events() == []


def test_power_off_and_boot_keep_mission_and_config() -> None:
    c = flying(disarm_delay_s=7.0)
    c.set_mission(_mission())
    spot = offset(DOCK[0], DOCK[1], 80.0, 0.0)
    c.goto(*spot, 20.0)
    run_until(c, lambda c: distance_to(c, *spot) < 1.0)
    c.set_home(DOCK[0], DOCK[1], DOCK[2])
    c.power_off()
    assert not c.armed and c.body.alt == 0.0 and c.landed_state is LandedState.ON_GROUND
    assert distance_to(c, *spot) < 1.0  # on the ground below where it was
    c.boot(c.now_ms + 3_000)
    assert c.time_boot_ms() == 0 and c.mode is Mode.STABILIZE and not c.armed
    assert not c.home_locked and haversine_m(*c.home()[:2], *spot) < 1.0
    assert [e.text for e in c.drain_events() if e.kind == "text"] == ["ArduCopter V4.7.0-dev (sim)"]
    assert len(c.mission) == 5 and c.config.disarm_delay_s == 7.0
    c.step(c.now_ms + 1_500)
    assert c.time_boot_ms() == 1_500


def test_a_boot_forgets_the_gcs_it_had_heard() -> None:
    c = flying(fs_gcs_enable=1)
    c.gcs_heartbeat(255)
    c.power_off()
    c.boot(c.now_ms + 3_000)
    c.set_mode(Mode.GUIDED)
    c.arm()
    c.takeoff(20.0)
    c.step(c.now_ms + 30_000)
    assert c.mode is Mode.GUIDED and c.landed_state is LandedState.IN_AIR  # no GCS since boot: nothing lost
    c.gcs_heartbeat(255)
    c.step(c.now_ms + 5_200)
    assert c.mode is Mode.RTL


def test_clock_runs_with_its_offset_and_needs_a_fix() -> None:
    c = make()
    assert c.unix_time_us() == (T0 - 2650) * 1000
    c.step(T0 + 1_000)
    assert c.unix_time_us() == (T0 + 1_000 - 2650) * 1000
    c.gps.fix_type = 0
    assert c.unix_time_us() == 0
