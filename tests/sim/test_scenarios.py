"""Hard-case geometry on the road graph and a response's script, on a simulated clock: pure, no network."""

from __future__ import annotations

import random

import pytest

from geo.geodesy import haversine_m
from sim.city import City, build_city
from sim.response import Response, Timing
from sim.scenarios import DeadZone, Plan, Stop, address_near, edge_scene, overshoot_stop, random_address, trace
from sim.traffic import SimVehicle

T0 = 1_795_000_000_000


@pytest.fixture(scope="module")
def city() -> City:
    return build_city(7)


def parked_car(city: City, seed: int) -> SimVehicle:
    rng = random.Random(seed)
    car = SimVehicle(city, rng, rng.choice(city.node_ids), T0)
    car.park()
    return car


def test_clone_tries_a_route_without_moving_the_car(city: City) -> None:
    car = parked_car(city, 1)
    before = car.position, car.state, car.rng.getstate()
    target = address_near(city, random.Random(2), car.position, 800.0, 1200.0)
    drive = trace(car, T0, target)
    assert (car.position, car.state, car.rng.getstate()) == before
    assert haversine_m(*drive.rest, *city.nodes[drive.edge[1]]) <= city.edge(*drive.edge).length_m
    assert haversine_m(*drive.rest, *target) <= 30.0 + 1.0  # the address is up to 30 m off the road
    # The clone drives exactly as the car will: same route, same red lights.
    car.drive_to_point(*target)
    t = T0
    while car.state == "driving":
        t += 500
        car.advance(t)
    assert car.position == pytest.approx(drive.rest)
    assert (t - T0) / 1000 == pytest.approx(drive.duration_s)
    with pytest.raises(ValueError):
        car.resume_patrol()
        car.park()  # a driving car cannot park on the spot


def test_addresses_lie_where_asked(city: City) -> None:
    rng = random.Random(3)
    min_lat, min_lon, max_lat, max_lon = city.bounds()
    for _ in range(50):
        lat, lon = random_address(city, rng)
        assert min_lat - 0.002 <= lat <= max_lat + 0.002 and min_lon - 0.002 <= lon <= max_lon + 0.002
        assert city.nearest_road_point(lat, lon).distance_m <= 30.0 + 0.5
        near = address_near(city, rng, (lat, lon), 500.0, 900.0)
        assert 500.0 <= haversine_m(lat, lon, *near) <= 900.0


def test_an_overshoot_stop_lies_beyond_the_zone_on_a_route_through_it(city: City) -> None:
    rng = random.Random(4)
    found = 0
    for seed in range(8):
        car = parked_car(city, 100 + seed)
        incident = address_near(city, rng, car.position, 800.0, 2000.0)
        stop = overshoot_stop(car, T0, incident, 100.0, rng)
        if stop is None:
            continue
        found += 1
        assert 150.0 <= haversine_m(*incident, stop.lat, stop.lon) <= 250.0
        assert 30.0 <= stop.hold_s <= 90.0
        drive = trace(car, T0, (stop.lat, stop.lon))
        assert min(haversine_m(*incident, *p) for p in drive.points) <= 50.0  # through the zone, not past it
    assert found >= 6


@pytest.mark.parametrize(("gap", "inside"), [((-5.0, 10.0), None), ((10.0, 30.0), False)])
def test_an_edge_scene_rests_at_the_given_distance_and_comes_no_nearer(
        city: City, gap: tuple[float, float], inside: bool | None) -> None:
    rng = random.Random(5)
    for seed in range(5):
        car = parked_car(city, 200 + seed)
        found = edge_scene(car, T0, rng, 100.0, gap, (500.0, 2000.0))
        assert found is not None
        incident, rest = found
        distance = haversine_m(*incident, *rest)
        assert 100.0 + gap[0] - 0.01 <= distance <= 100.0 + gap[1] + 0.01
        drive = trace(car, T0, rest)
        assert drive.rest == pytest.approx(rest, abs=1e-7)
        assert min(haversine_m(*incident, *p) for p in drive.points) >= distance - 2.0
        if inside is False:
            assert all(haversine_m(*incident, *p) > 100.0 for p in drive.points)


def run(response: Response, until_ms: int, step_ms: int = 250) -> list[tuple[str, int, float]]:
    """Step the clock; record (action, ts, speed at that step) and feed the truth as a 4 Hz device would."""
    seen = []
    t = response.truth.dispatched_ms
    while t < until_ms and response.active:
        t += step_ms
        for action in response.advance(t):
            seen.append((action.kind, action.ts, response.vehicle.speed))
        response.truth.add(t, *response.vehicle.position, response.vehicle.speed)
    return seen


def test_a_parked_unit_leaves_after_its_turnout_drives_rests_makes_contact_and_clears(city: City) -> None:
    car = parked_car(city, 7)
    incident = address_near(city, random.Random(8), car.position, 600.0, 900.0)
    plan = Plan("parked", turnout_s=30.0, contact_after_s=25.0, on_scene_s=90.0, after_clear="stay")
    response = Response(car, plan, "I1", incident, 100.0, T0, T0 + 40, random.Random(9), Timing(), "P001")
    assert response.phase == "turnout" and response.depart_at == T0 + 30_040
    actions = run(response, T0 + 3_600_000)
    assert [a for a, _, _ in actions] == ["contact", "clear"]
    truth = response.truth.result()
    assert truth.departed == T0 + 30_250  # the first sample after the turnout ends, exactly
    assert truth.stop is not None and truth.arrived is not None and truth.departed < truth.arrived <= truth.stop
    assert actions[0][1] == truth.contacted == truth.stop + 25_000
    assert actions[1][1] == truth.cleared == truth.stop + 90_000
    assert response.phase == "cleared" and car.state == "parked"  # after_clear "stay": it waits for the next job


def test_a_driving_unit_goes_at_once_and_a_drive_by_rests_beyond_then_returns(city: City) -> None:
    rng = random.Random(10)
    car = SimVehicle(city, random.Random(11), city.node_ids[40], T0, park_probability=0.0)
    car.resume_patrol()
    car.advance(T0 + 60_000)
    assert car.state == "driving"
    incident = address_near(city, rng, car.position, 800.0, 2000.0)
    stop = None
    while stop is None:
        incident = address_near(city, rng, car.position, 800.0, 2000.0)
        stop = overshoot_stop(car, T0 + 60_000, incident, 100.0, rng)
    plan = Plan("drive_by", via=(Stop(stop.lat, stop.lon, 45.0),), on_scene_s=100.0)
    response = Response(car, plan, "I2", incident, 100.0, T0 + 60_000, T0 + 60_000, rng, Timing(), "P002")
    assert response.phase == "driving" and response.depart_at is None
    phases = set()
    t = T0 + 60_000
    while response.active:
        t += 500
        response.advance(t)
        response.truth.add(t, *car.position, car.speed)
        phases.add(response.phase)
    assert phases >= {"driving", "via", "on_scene", "cleared"}
    truth = response.truth.result()
    assert truth.departed == T0 + 60_500
    assert truth.arrived is not None and "earlier_visit" in truth.notes  # it drove through before the final stay
    assert car.state == "driving"  # after_clear "patrol"


def test_a_dead_zone_holds_the_uplink_around_the_arrival_and_releases_before_clearing(city: City) -> None:
    car = parked_car(city, 12)
    incident = address_near(city, random.Random(13), car.position, 900.0, 1200.0)
    plan = Plan("dead_zone", turnout_s=5.0, dead_zone=DeadZone(300.0, 60.0, 30.0), on_scene_s=40.0,
                contact_after_s=20.0)
    response = Response(car, plan, "I3", incident, 100.0, T0, T0, random.Random(14), Timing(), "P003")
    actions = run(response, T0 + 3_600_000)
    kinds = [a for a, _, _ in actions]
    assert kinds == ["hold", "contact", "release", "clear"]
    held, release, clear = actions[0][1], actions[2][1], actions[3][1]
    truth = response.truth.result()
    assert truth.arrived is not None and truth.stop is not None
    assert held < truth.arrived < truth.stop < release  # the arrival happened in the dead zone
    assert release == max(held + 60_000, truth.stop + 30_000)
    assert clear >= release + 30_000  # the batch lands well before the unit clears
    assert "dead_zone" in truth.notes


def test_a_cancelled_response_hands_back_a_held_uplink(city: City) -> None:
    car = parked_car(city, 15)
    incident = address_near(city, random.Random(16), car.position, 900.0, 1200.0)
    response = Response(car, Plan("dead_zone", turnout_s=1.0, dead_zone=DeadZone(5000.0, 600.0, 60.0)), "I4",
                        incident, 100.0, T0, T0, random.Random(17), Timing(), "P004")
    assert [a.kind for a in response.advance(T0 + 5_000)] == ["hold"] and response.held
    assert [a.kind for a in response.cancel(T0 + 6_000)] == ["release"]
    assert not response.held and response.phase == "cancelled" and "cancelled" in response.truth.result().notes
