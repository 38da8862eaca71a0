from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable, Iterator

import pytest

from devices.payloads import fix_from_obj, fix_to_obj
from geo.geodesy import bearing_deg, haversine_m, offset, segment_distance_m
from sim.city import City, build_city
from sim.traffic import ACCEL_MPS2, HARD_BRAKE_MPS2, Battery, GpsModel, SimVehicle

T0 = 1_795_000_000_000  # epoch ms, a plausible "now" for the payload window checks
CENTRE = (34.2610, 117.1859)


@pytest.fixture(scope="module")
def city() -> City:
    return build_city()


def drive(vehicle: SimVehicle, seconds: float, step_ms: int = 1000, start: int = T0) -> Iterator[int]:
    """Advance ``vehicle`` in steps and yield the time after each one."""
    now = start
    while now < start + seconds * 1000:
        now += step_ms
        vehicle.advance(now)
        yield now


def run_until(
    vehicle: SimVehicle,
    seconds: float,
    start: int = T0,
    step_ms: int = 1000,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Advance ``vehicle`` until ``stop()`` holds or ``seconds`` pass; the time reached."""
    now = start
    while now < start + seconds * 1000:
        now += step_ms
        vehicle.advance(now)
        if stop():
            break
    return now


def off_road_m(city: City, vehicle: SimVehicle) -> float:
    a, b = vehicle.edge
    if a == b:
        return haversine_m(*vehicle.position, *city.nodes[a])
    city.edge(a, b)  # the vehicle is on a real road
    return segment_distance_m(*vehicle.position, *city.nodes[a], *city.nodes[b])[0]


def angle_between(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


# ---------------------------------------------------------------- vehicles
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_vehicle_stays_on_roads_within_limits(city: City, seed: int) -> None:
    vehicle = SimVehicle(city, random.Random(seed), city.node_ids[seed * 11], T0)
    speeds = []
    for _ in drive(vehicle, 3 * 3600):
        assert off_road_m(city, vehicle) < 0.5
        if vehicle.speed > 0.0:
            assert vehicle.speed <= city.edge(*vehicle.edge).speed_mps + 1e-9
        assert vehicle.speed >= 0.0
        if vehicle.state != "driving":
            assert vehicle.speed == 0.0
        speeds.append(vehicle.speed)
    assert vehicle.odometer_m > 20_000  # it patrols, it does not sit still
    assert max(speeds) > 13.0  # reaches arterial speeds
    stopped = sum(s == 0.0 for s in speeds) / len(speeds)
    assert 0.05 < stopped < 0.7  # parks and waits at lights sometimes, not always


def test_speed_changes_like_a_car(city: City) -> None:
    vehicle = SimVehicle(city, random.Random(4), city.node_ids[40], T0)
    previous = vehicle.speed
    for _ in drive(vehicle, 2 * 3600, step_ms=500):
        change = (vehicle.speed - previous) / 0.5
        assert -HARD_BRAKE_MPS2 - 1e-9 <= change <= ACCEL_MPS2 + 1e-9
        previous = vehicle.speed


def test_slows_down_for_turns(city: City) -> None:
    vehicle = SimVehicle(city, random.Random(5), city.node_ids[60], T0, red_light_probability=0.0)
    corner_speeds = []
    last_edge = vehicle.edge
    last_heading = vehicle.heading
    last_speed = vehicle.speed
    for _ in drive(vehicle, 3600, step_ms=200):
        turned = vehicle.edge != last_edge and vehicle.edge[0] == last_edge[1]
        if turned and angle_between(vehicle.heading, last_heading) > 60:
            corner_speeds.append(min(last_speed, vehicle.speed))
        last_edge, last_heading, last_speed = vehicle.edge, vehicle.heading, vehicle.speed
    assert len(corner_speeds) > 10
    assert max(corner_speeds) < 7.0  # nobody takes a right angle at 40 km/h


def test_heading_follows_movement(city: City) -> None:
    vehicle = SimVehicle(city, random.Random(6), city.node_ids[20], T0)
    checked = 0
    before_pos, before_edge = vehicle.position, vehicle.edge
    for _ in drive(vehicle, 3600, step_ms=1000):
        moved = haversine_m(*before_pos, *vehicle.position)
        if vehicle.edge == before_edge and moved > 2.0:
            assert angle_between(bearing_deg(*before_pos, *vehicle.position), vehicle.heading) < 1.0
            # distance covered matches the speed (within one step of acceleration)
            assert moved <= city.edge(*vehicle.edge).speed_mps * 1.0 + 1e-6
            checked += 1
        before_pos, before_edge = vehicle.position, vehicle.edge
    assert checked > 500


def test_same_seed_same_drive(city: City) -> None:
    a = SimVehicle(city, random.Random(9), 30, T0)
    b = SimVehicle(city, random.Random(9), 30, T0)
    trace_a = [(a.position, a.speed) for _ in drive(a, 1800)]
    trace_b = [(b.position, b.speed) for _ in drive(b, 1800)]
    assert trace_a == trace_b


def test_time_in_the_past_is_ignored(city: City) -> None:
    vehicle = SimVehicle(city, random.Random(10), 30, T0)
    for _ in drive(vehicle, 120):
        pass
    where = vehicle.position
    vehicle.advance(T0)
    assert vehicle.position == where


@pytest.mark.parametrize("seed", range(6))
def test_drive_to_reaches_the_target_and_stays(city: City, seed: int) -> None:
    rng = random.Random(seed)
    vehicle = SimVehicle(city, random.Random(seed), rng.choice(city.node_ids), T0)
    now = run_until(vehicle, rng.uniform(0, 600))  # somewhere mid-patrol
    target = rng.choice(city.node_ids)
    vehicle.drive_to(target)
    assert vehicle.destination == target
    budget = 3 * city.path_time_s(city.shortest_path(vehicle.edge[1], target)) + 600
    now = run_until(vehicle, budget, start=now, stop=lambda: vehicle.state == "on_scene")
    assert vehicle.state == "on_scene"
    assert haversine_m(*vehicle.position, *city.nodes[target]) < 0.01
    assert vehicle.speed == 0.0
    now = run_until(vehicle, 1800, start=now)
    assert vehicle.state == "on_scene"  # no wandering off the scene
    assert haversine_m(*vehicle.position, *city.nodes[target]) < 0.01
    vehicle.resume_patrol()
    run_until(vehicle, 300, start=now)
    assert vehicle.odometer_m > 0 and vehicle.state in ("driving", "parked")


def test_a_standing_car_leaves_from_where_it_stands(city: City) -> None:
    vehicle = SimVehicle(city, random.Random(1), 24, T0)
    neighbour, road = city.neighbours(24)[0]
    vehicle.drive_to(neighbour)
    now = run_until(vehicle, 600, stop=lambda: vehicle.state == "on_scene")
    assert vehicle.odometer_m == pytest.approx(road.length_m, abs=0.5)  # straight there, no detour
    # ... and back again: a U-turn at the node, the same road once more
    vehicle.drive_to(24)
    run_until(vehicle, 600, start=now, stop=lambda: vehicle.state == "on_scene")
    assert vehicle.odometer_m == pytest.approx(2 * road.length_m, abs=0.5)
    assert haversine_m(*vehicle.position, *city.nodes[24]) < 0.01


@pytest.mark.parametrize("seed", range(8))
def test_drive_to_point_stops_at_the_nearest_road_point(city: City, seed: int) -> None:
    rng = random.Random(100 + seed)
    vehicle = SimVehicle(city, random.Random(seed), rng.choice(city.node_ids), T0)
    now = run_until(vehicle, rng.uniform(0, 900))
    lat, lon = offset(*CENTRE, rng.uniform(-1500, 1500), rng.uniform(-1500, 1500))
    vehicle.drive_to_point(lat, lon)
    run_until(vehicle, 1800, start=now, stop=lambda: vehicle.state == "on_scene")
    assert vehicle.state == "on_scene"
    road = city.nearest_road_point(lat, lon)
    assert haversine_m(*vehicle.position, lat, lon) == pytest.approx(road.distance_m, abs=1.0)
    assert road.distance_m < 160.0  # every address in the grid is within half a block of a road


def test_drive_to_point_on_the_current_road(city: City) -> None:
    vehicle = SimVehicle(city, random.Random(11), 50, T0, red_light_probability=0.0)

    def early_on_a_road() -> bool:
        a, b = vehicle.edge
        if vehicle.state != "driving" or a == b:
            return False
        return haversine_m(*city.nodes[a], *vehicle.position) < city.edge(a, b).length_m / 3

    now = run_until(vehicle, 3600, step_ms=500, stop=early_on_a_road)
    assert early_on_a_road()
    a, b = vehicle.edge
    (lat_a, lon_a), (lat_b, lon_b) = city.nodes[a], city.nodes[b]
    ahead = (lat_a + (lat_b - lat_a) * 0.8, lon_a + (lon_b - lon_a) * 0.8)
    vehicle.drive_to_point(*ahead)
    for _ in drive(vehicle, 120, start=now, step_ms=500):
        assert vehicle.edge == (a, b)  # straight on: no detour round the block
        if vehicle.state == "on_scene":
            break
    assert vehicle.state == "on_scene"
    assert haversine_m(*vehicle.position, *ahead) < 1.0


def test_drive_to_point_behind_on_the_current_road(city: City) -> None:
    vehicle = SimVehicle(city, random.Random(12), 80, T0)

    def late_on_a_road() -> bool:
        a, b = vehicle.edge
        if vehicle.state != "driving" or a == b:
            return False
        return haversine_m(*city.nodes[a], *vehicle.position) > city.edge(a, b).length_m * 2 / 3

    now = run_until(vehicle, 3600, step_ms=500, stop=late_on_a_road)
    assert late_on_a_road()
    a, b = vehicle.edge
    (lat_a, lon_a), (lat_b, lon_b) = city.nodes[a], city.nodes[b]
    behind = (lat_a + (lat_b - lat_a) * 0.2, lon_a + (lon_b - lon_a) * 0.2)
    vehicle.drive_to_point(*behind)
    run_until(vehicle, 900, start=now, stop=lambda: vehicle.state == "on_scene")
    assert vehicle.state == "on_scene"
    assert haversine_m(*vehicle.position, *behind) < 1.0


# --------------------------------------------------------------------- GPS
def test_gps_noise_statistics() -> None:
    gps = GpsModel(random.Random(42), outlier_probability=0.005)
    errors, within_acc, outliers, lying = [], 0, 0, 0
    n = 20_000
    for k in range(n):
        fix = gps.fix(T0 + k * 1000, *CENTRE, speed=0.0)
        error = haversine_m(fix.lat, fix.lon, *CENTRE)
        assert fix.acc is not None
        if gps.last_outlier:
            outliers += 1
            assert 150.0 - 1 <= error <= 800.0 + 1
            lying += fix.acc < 20.0
            continue
        assert 3.0 <= fix.acc <= 10.0
        assert error < 60.0
        errors.append(error)
        within_acc += error <= fix.acc
    assert gps.outliers == outliers and gps.fixes == n
    assert 2.0 < statistics.mean(errors) < 12.0
    # acc is the 68 % radius, as receivers report it
    assert within_acc / len(errors) == pytest.approx(0.68, abs=0.02)
    assert 0.003 < outliers / n < 0.007
    assert 0.25 < lying / outliers < 0.75  # about half of the outliers lie about their accuracy


def test_gps_without_outliers_and_with_drift() -> None:
    clean = GpsModel(random.Random(1), outlier_probability=0.0)
    drifting = GpsModel(random.Random(1), outlier_probability=0.0, drift_m=20.0)
    clean_errors: list[float] = []
    drift_errors: list[float] = []
    for k in range(5000):
        for gps, errors in ((clean, clean_errors), (drifting, drift_errors)):
            fix = gps.fix(T0 + k * 1000, *CENTRE)
            errors.append(haversine_m(fix.lat, fix.lon, *CENTRE))
    assert clean.outliers == 0 and max(clean_errors) < 60.0
    assert statistics.mean(drift_errors) > statistics.mean(clean_errors) + 5.0


def test_fixes_are_valid_payloads(city: City) -> None:
    vehicle = SimVehicle(city, random.Random(12), 70, T0)
    gps = GpsModel(random.Random(13), outlier_probability=0.05)
    battery = Battery(random.Random(14), T0)
    seen_heading = seen_no_heading = 0
    for seq, now in enumerate(drive(vehicle, 3600, step_ms=2000), start=1):
        fix = gps.fix(
            now, *vehicle.position, speed=vehicle.speed, heading=vehicle.heading, battery=battery.advance(now), seq=seq
        )
        assert fix_from_obj(fix_to_obj(fix), now_ms=now) == fix
        assert fix.ts == now and fix.seq == seq
        assert fix.speed is not None and abs(fix.speed - vehicle.speed) < 2.0
        if fix.heading is None:
            seen_no_heading += 1
            assert vehicle.speed < 1.0  # course over ground is only reported when moving
        else:
            seen_heading += 1
            assert angle_between(fix.heading, vehicle.heading) < 20.0
    assert seen_heading > 100 and seen_no_heading > 10


# ----------------------------------------------------------------- battery
def test_battery_drains_and_gets_swapped() -> None:
    battery = Battery(random.Random(3), T0, drain_per_hour=10.0, swap_below=10.0)
    start = battery.level
    rate = battery.drain_per_hour
    assert 8.0 <= rate <= 12.0
    assert battery.advance(T0 + 3_600_000) == pytest.approx(start - rate)
    assert battery.advance(T0) == pytest.approx(start - rate)  # time does not run backwards
    levels = [battery.advance(T0 + h * 600_000) for h in range(6, 200)]
    assert all(10.0 <= lv <= 100.0 for lv in levels)
    assert any(b > a for a, b in itertools.pairwise(levels))  # a fresh battery went in
    flat = Battery(random.Random(3), T0, drain_per_hour=10.0, swap_below=None)
    assert flat.advance(T0 + 20 * 3_600_000) == 0.0
    assert math.isfinite(flat.level)
