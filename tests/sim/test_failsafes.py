"""The copter's watchdogs, its GPS error and AUTO's place in a mission, fed times and samples directly."""

from __future__ import annotations

import random
import statistics

from sim.arducopter import CopterConfig, MissionItem, NavCmd
from sim.auto_mission import AutoMission
from sim.failsafes import Failsafes
from sim.gps import GpsReceiver

T0 = 1_000_000


def test_gcs_failsafe_needs_a_heartbeat_from_mav_gcs_sysid_then_fires_once_and_clears() -> None:
    cfg, w = CopterConfig(fs_gcs_enable=1, fs_gcs_timeout_s=5.0, gcs_sysid=255), Failsafes(T0)
    assert not w.gcs_timeout(cfg, T0 + 60_000)  # never heard a ground station: nothing to lose
    assert not w.gcs_heartbeat(cfg, 42, T0)  # another system's heartbeat does not count
    assert not w.gcs_timeout(cfg, T0 + 60_000)
    assert not w.gcs_heartbeat(cfg, 255, T0)  # heard, and nothing to clear
    assert not w.gcs_timeout(cfg, T0 + 5_000)  # FS_GCS_TIMEOUT is not over yet
    assert w.gcs_timeout(cfg, T0 + 5_001) and w.gcs_lost
    assert not w.gcs_timeout(cfg, T0 + 9_000)  # fired once, not on every tick
    assert w.gcs_heartbeat(cfg, 255, T0 + 9_000) and not w.gcs_lost


def test_gcs_failsafe_off_by_default_and_forgotten_at_boot() -> None:
    w = Failsafes(T0)
    assert not w.gcs_heartbeat(CopterConfig(), 255, T0)
    assert not w.gcs_timeout(CopterConfig(), T0 + 60_000)  # stock FS_GCS_ENABLE=0
    cfg = CopterConfig(fs_gcs_enable=1)
    assert w.gcs_timeout(cfg, T0 + 60_000)
    w.boot()
    assert not w.gcs_lost and not w.gcs_timeout(cfg, T0 + 120_000)  # no heartbeat since boot


def test_battery_failsafe_once_per_arming_and_the_disarm_delay() -> None:
    cfg, w = CopterConfig(low_battery_pct=20.0, disarm_delay_s=10.0), Failsafes(T0)
    assert not w.battery_low(cfg, 20.0)
    assert w.battery_low(cfg, 19.9) and not w.battery_low(cfg, 15.0)
    w.armed(T0 + 1_000)
    assert w.battery_low(cfg, 15.0)
    assert not w.disarm_due(cfg, T0 + 10_999) and w.disarm_due(cfg, T0 + 11_000)
    w.airborne(T0 + 20_000)
    assert not w.disarm_due(cfg, T0 + 29_999)
    assert not w.disarm_due(CopterConfig(disarm_delay_s=0.0), T0 + 10**9)  # 0: never


def test_prearm_failure_repeated_every_30_s_and_only_when_failing() -> None:
    w = Failsafes(T0)
    assert not w.prearm_report("", T0)
    assert w.prearm_report("Need Position Estimate", T0)
    assert not w.prearm_report("Need Position Estimate", T0 + 29_999)
    assert w.prearm_report("Need Position Estimate", T0 + 30_000)


def test_gps_error_wanders_slowly_around_the_truth() -> None:
    gps, rng = GpsReceiver(), random.Random(5)
    steps = []
    for _ in range(20_000):
        before = gps.error_ne
        gps.wander(rng, 1.5)
        steps.append(abs(gps.error_ne[0] - before[0]))
    assert max(steps) < 0.5  # drifts, it does not jump
    north = []
    for _ in range(20_000):
        gps.wander(rng, 1.5)
        north.append(gps.error_ne[0])
    assert abs(statistics.fmean(north)) < 1.0 and 0.5 < statistics.pstdev(north) < 3.0
    assert gps.ok
    gps.satellites = 5
    assert not gps.ok


def test_auto_mission_starts_after_home_advances_and_ends() -> None:
    items = [MissionItem(NavCmd.WAYPOINT, 0.0, 0.0, 0.0, 0)] * 3
    auto = AutoMission()
    auto.store(items)
    assert not auto.select(0) and not auto.select(3)
    assert auto.start() == 1 and auto.running
    auto.current = 1
    assert auto.advance() == 2
    auto.current = 2
    assert auto.advance() is None and not auto.running
