"""Arrival detection against the generator's ground truth: the true time the unit entered the zone."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from devices.payloads import Fix
from hub.domain.arrival import ArrivalDetector, ArrivalParams, ArrivalResult, detect_arrival
from tests.hub.domain.test_track import BASE, T0, Route, fix_at, jump, ms, observe, seconds

RADIUS = 100.0
SEEDS = range(12)


def detect(fixes: Sequence[Fix], **kwargs: Any) -> ArrivalResult | None:
    detector = ArrivalDetector(*BASE, **kwargs)
    detector.add(fixes)
    return detector.result


def entry(route: Route) -> float:
    """Ground truth: the last time the unit crossed into the zone (the one that starts the stay)."""
    return route.entries(RADIUS)[-1]


# ---------------------------------------------------------------- true arrivals
# (name, route, observe() options, |error| allowed in seconds)
ARRIVALS: list[tuple[str, Callable[[], Route], dict[str, Any], float]] = [
    ("street speed, stops near the centre", lambda: Route(-1500, 0).drive(10, 0, 11.1).hold(200), {}, 2.0),
    ("arterial speed, stops off centre", lambda: Route(-1200, 900).drive(30, -20, 16.7).hold(200), {}, 2.0),
    ("brakes across the edge, stops 60 m in", lambda: Route(0, -1500).drive(0, -60, 11.1).hold(200), {}, 2.0),
    (
        "turns off the road towards the scene",
        lambda: Route(-1500, 150).drive(-50, 150, 13.0, stop=False).drive(0, 20, 6.0).hold(200),
        {},
        2.0,
    ),
    ("no reported speed", lambda: Route(-1500, 0).drive(10, 0, 11.1).hold(200), {"report_speed": False}, 2.0),
    ("no acc reported", lambda: Route(-1500, 0).drive(10, 0, 11.1).hold(200), {"report_acc": False}, 2.0),
    ("0.2 Hz reporting", lambda: Route(-1500, 0).drive(10, 0, 11.1).hold(300), {"interval_s": 5.0}, 5.5),
    ("officer on foot, 1.4 m/s", lambda: Route(-400, 0).drive(5, 0, 1.4).hold(200), {}, 6.0),
    ("officer on foot, good sky", lambda: Route(-400, 0).drive(5, 0, 1.4).hold(200), {"acc_m": (3.0, 5.0)}, 3.0),
]


@pytest.mark.parametrize(("name", "make", "options", "tolerance"), ARRIVALS, ids=[a[0] for a in ARRIVALS])
def test_arrival_time_is_the_true_entry(
    name: str, make: Callable[[], Route], options: dict[str, Any], tolerance: float
) -> None:
    route = make()
    errors = []
    for seed in SEEDS:
        fixes = observe(route, seed, **options)
        result = detect(fixes)
        assert result is not None, f"seed {seed}: no arrival"
        assert result.ts in {f.ts for f in fixes} and (result.lat, result.lon) in {(f.lat, f.lon) for f in fixes}
        assert result.ts < result.confirmed_at_ts
        errors.append(seconds(result.ts) - entry(route))
    assert max(abs(e) for e in errors) <= tolerance, errors


@pytest.mark.parametrize("report_heading", [False, True])
def test_accuracy_over_many_random_approaches(report_heading: bool) -> None:
    """The benchmark's target: at 1 Hz with acc 3-10 m, every arrival within 2 s of the true entry."""
    rng = random.Random(2024)
    errors = []
    for seed in range(150):
        bearing = rng.uniform(0, 2 * math.pi)
        stop_r, stop_b = rng.uniform(0, 70), rng.uniform(0, 2 * math.pi)
        start = (1500 * math.cos(bearing), 1500 * math.sin(bearing))
        route = Route(*start).drive(stop_r * math.cos(stop_b), stop_r * math.sin(stop_b), rng.uniform(8, 17))
        route.hold(rng.uniform(90, 300))
        result = detect(observe(route, seed, report_speed=rng.random() < 0.8, report_heading=report_heading))
        assert result is not None, f"seed {seed}: no arrival"
        errors.append(seconds(result.ts) - entry(route))
    assert max(abs(e) for e in errors) <= 2.0, sorted(errors)[:3] + sorted(errors)[-3:]


@pytest.mark.parametrize("report_heading", [False, True])
def test_a_wait_at_a_light_just_outside_does_not_start_the_stay(report_heading: bool) -> None:
    # Held 40 s at a red light 2 m short of the edge (fixes on both sides), then in to the scene.
    route = Route(-1200, 0).drive(-102, 0, 11.1).hold(40).drive(0, 0, 11.1).hold(200)
    for seed in SEEDS:
        result = detect(observe(route, seed, report_heading=report_heading))
        assert result is not None
        assert abs(seconds(result.ts) - entry(route)) <= 2.0, seed


def test_a_clear_exit_before_the_final_entry_splits_the_visits() -> None:
    # In across a chord, 40 m out beyond the edge for a few seconds, then back in to stop.
    route = (
        Route(-1200, 60)
        .drive(0, 60, 11.1, stop=False)
        .drive(50, 130, 11.1)
        .drive(30, 40, 8.0, stop=False)
        .drive(0, 0, 8.0)
        .hold(200)
    )
    for seed in SEEDS:
        result = detect(observe(route, seed, report_heading=True))
        assert result is not None
        assert abs(seconds(result.ts) - entry(route)) <= 2.0, seed


def test_dwell_without_a_stop_arrives_at_the_entry() -> None:
    # An officer pacing about the scene never stands still for a minute; 90 s inside make the stay.
    route = Route(-300, 0).drive(-40, 0, 1.4, stop=False)
    for _ in range(4):
        route.drive(40, 0, 1.4, stop=False).drive(-40, 0, 1.4, stop=False)
    for seed in SEEDS:
        result = detect(observe(route, seed, acc_m=(3.0, 6.0)))
        assert result is not None
        assert abs(seconds(result.ts) - entry(route)) <= 6.0
        assert seconds(result.confirmed_at_ts) - seconds(result.ts) == pytest.approx(90.0, abs=8.0)


def test_a_unit_already_on_scene_at_dispatch_arrives_with_its_first_fix() -> None:
    route = Route(-1000, 0).drive(0, 0, 11.1).hold(600)
    fixes = observe(route, 3)
    result = detect(fixes, since_ms=ms(400))
    assert result is not None
    assert result.ts == min(f.ts for f in fixes if f.ts >= ms(400))


def test_a_drive_by_then_a_return_arrives_on_the_return() -> None:
    route = Route(-1000, 0).drive(1000, 0, 11.1).hold(30).drive(300, 0, 11.1, stop=False).drive(0, 0, 8.0).hold(200)
    for seed in SEEDS:
        result = detect(observe(route, seed))
        assert result is not None
        assert abs(seconds(result.ts) - entry(route)) <= 2.0


# ---------------------------------------------------------------- no arrival
def _drive_by(speed: float, offset_m: float = 0.0) -> Route:
    return Route(-1200, offset_m).drive(1200, offset_m, speed)


def _parked_at(distance_m: float, hold_s: float = 600.0) -> Route:
    return Route(-1000, 0).drive(-distance_m, 0, 11.1).hold(hold_s)


def _red_light(at: tuple[float, float], hold_s: float, then: tuple[float, float]) -> Route:
    return Route(-1200, at[1]).drive(*at, 11.1).hold(hold_s).drive(*then, 11.1)


# (name, route, observe() options, extra fixes to inject: (route time, north, east))
NO_ARRIVALS: list[tuple[str, Callable[[], Route], dict[str, Any], list[tuple[float, float, float]]]] = [
    ("drive-by through the centre", lambda: _drive_by(11.1), {}, []),
    ("slow drive-by, 5 m/s", lambda: _drive_by(5.0), {}, []),
    ("drive-by on a chord", lambda: _drive_by(11.1, 70.0), {}, []),
    ("drive-by at 0.2 Hz", lambda: _drive_by(8.0), {"interval_s": 5.0}, []),
    ("red light of 45 s at the centre", lambda: _red_light((0, 0), 45, (1200, 0)), {}, []),
    ("red light, no reported speed", lambda: _red_light((0, 0), 45, (1200, 0)), {"report_speed": False}, []),
    ("red light, then a turn", lambda: _red_light((0, 0), 45, (0, 1200)), {}, []),
    ("traffic crawl at 2.5 m/s on a chord", lambda: _drive_by(2.5, 70.0), {}, []),
    ("parked 5 m outside the edge", lambda: _parked_at(105), {}, []),
    ("parked 1 m outside, leaves through the zone", lambda: _parked_at(101, 300).drive(1200, 0, 11.1), {}, []),
    (
        "parked 1 m outside, leaves through the zone, heading reported",
        lambda: _parked_at(101, 300).drive(1200, 0, 11.1),
        {"report_heading": True},
        [],
    ),
    ("drive-by with heading reported", lambda: _drive_by(11.1), {"report_heading": True}, []),
    ("parked 10 m outside, no speed", lambda: _parked_at(110), {"report_speed": False}, []),
    ("parked on the edge itself", lambda: _parked_at(100), {}, []),
    ("parked 5 m outside at 0.2 Hz", lambda: _parked_at(105, 1800), {"interval_s": 5.0}, []),
    ("outlier into the zone while driving elsewhere", lambda: _drive_by(11.1, 900.0), {}, [(150, 0, 0)]),
    (
        "burst of three outliers while parked 300 m away",
        lambda: Route(-300, 0).hold(300),
        {},
        [(100, 0, 0), (101, 5, 5), (102, -5, 0)],
    ),
    ("plausible jump into the zone at 0.2 Hz", lambda: Route(-300, 0).hold(600), {"interval_s": 5.0}, [(300, 0, 0)]),
    (
        "two jumps into the zone at 0.2 Hz",
        lambda: Route(-300, 0).hold(600),
        {"interval_s": 5.0},
        [(300, 0, 0), (305, 0, 9)],
    ),
    ("parked at the centre, acc too large to tell", lambda: Route(0, 0).hold(600), {"acc_m": (101.0, 300.0)}, []),
]


@pytest.mark.parametrize(("name", "make", "options", "jumps"), NO_ARRIVALS, ids=[n[0] for n in NO_ARRIVALS])
def test_no_false_arrival(
    name: str, make: Callable[[], Route], options: dict[str, Any], jumps: list[tuple[float, float, float]]
) -> None:
    route = make()
    for seed in SEEDS:
        fixes = observe(route, seed, **options)
        for at_s, north, east in jumps:
            fixes = jump(fixes, at_s, north, east)
        assert detect(fixes) is None, f"seed {seed}"


def test_a_stay_before_dispatch_is_not_an_arrival() -> None:
    route = Route(0, 0).hold(300).drive(1500, 0, 11.1).hold(300)
    assert detect(observe(route, 1)) is not None
    assert detect(observe(route, 1), since_ms=ms(280)) is None


# ---------------------------------------------------------------- outliers, accuracy, edge jitter
def test_outliers_while_parked_neither_arrive_nor_break_the_stay() -> None:
    route = Route(-1500, 0).drive(0, 0, 11.1).hold(300)
    truth = entry(route)
    for seed in SEEDS:
        fixes = observe(route, seed)
        clean = detect(fixes)
        for k in range(6):  # jumps of 400 m out of the zone every 15 s while stopped
            fixes = jump(fixes, truth + 20 + 15 * k, 400, 300)
        result = detect(fixes)
        assert result is not None and clean is not None
        assert abs(seconds(result.ts) - truth) <= 2.0
        assert result.confirmed_at_ts - clean.confirmed_at_ts <= 2000


def test_fixes_with_huge_acc_are_ignored() -> None:
    route = Route(-1500, 0).drive(10, 0, 11.1).hold(200)
    for seed in SEEDS:
        rng = random.Random(seed)
        fixes = observe(route, seed)
        vague = {f.ts: Fix(ts=f.ts, lat=f.lat + 0.003, lon=f.lon, acc=400.0) for f in fixes if rng.random() < 0.2}
        usable = [f for f in fixes if f.ts not in vague]
        result = detect([vague.get(f.ts, f) for f in fixes])
        assert result is not None and result == detect(usable)
        # The first usable fix inside: later than with every fix only when the vague ones hid the entry.
        assert -2.0 <= seconds(result.ts) - entry(route) <= 2.0 + sum(1 for ts in vague if ms(entry(route)) <= ts)


def test_edge_jitter_gives_one_arrival_fed_live() -> None:
    # Parked 15 m inside the edge: fixes wander in and out, one arrival all the same.
    route = Route(-1500, 0).drive(-85, 0, 11.1).hold(900)
    for seed in range(5):
        detector = ArrivalDetector(*BASE)
        reported = [r for f in observe(route, seed) if (r := detector.add([f])) is not None]
        assert len(reported) == 1 and reported[0] == detector.result
        assert abs(seconds(reported[0].ts) - entry(route)) <= 2.0


def test_parked_a_few_metres_inside_the_edge_arrives_at_its_entry_despite_long_runs_outside() -> None:
    # 3 m inside with 3-10 m fixes: runs of outside fixes far longer than exit_ms, and Doppler blips above the
    # stop speed, but the car stands still; its stop's mean decides, and the arrival is the entry, not the end
    # of some run of noise. Braking to a stop 3 m in, the car is within 2 m of the edge for about a second:
    # within the GPS's reach the arrival is that span, +-2 s (the end-to-end benchmark's rule, sim/truth.py).
    route = Route(-1500, 0).drive(-97, 0, 11.1).hold(600)
    span = (route.entries(RADIUS + 2.0)[-1], route.entries(RADIUS - 2.0)[-1])
    for seed in range(12):
        detector = ArrivalDetector(*BASE)
        reported = [r for f in observe(route, seed) if (r := detector.add([f])) is not None]
        assert len(reported) == 1, seed
        assert span[0] - 2.0 <= seconds(reported[0].ts) <= span[1] + 2.0, seed


# A road square to the zone's radius: the car drives along the circle's tangent, so its distance from the
# centre changes slowly, and single fixes (3-10 m) cannot say where it crossed the edge; its Doppler velocity can.
def _along_the_edge(inside_m: float) -> Route:
    """A car driving north on a road ``RADIUS - inside_m`` east of the centre, braking to rest abeam of it."""
    return Route(-1200, RADIUS - inside_m).drive(0, RADIUS - inside_m, 11.1).hold(150)


@pytest.mark.parametrize("inside_m", [2.5, 3.0, 4.0, 6.0])
def test_braking_to_rest_just_inside_along_the_edge_arrives_at_the_crossing(inside_m: float) -> None:
    # Crossing 22-34 m before the stop: the path smoothed with the reported velocities shows where.
    route = _along_the_edge(inside_m)
    for seed in SEEDS:
        result = detect(observe(route, seed, report_heading=True))
        assert result is not None, seed
        assert abs(seconds(result.ts) - entry(route)) <= 2.0, seed


@pytest.mark.parametrize("outside_m", [1.5, 3.0])
def test_braking_to_rest_just_outside_along_the_edge_never_arrives(outside_m: float) -> None:
    route = _along_the_edge(-outside_m)
    for seed in range(24):
        assert detect(observe(route, seed, report_heading=True)) is None, seed


def test_a_red_light_just_inside_on_the_way_in_keeps_the_first_entry() -> None:
    # In along the edge, 20 s at a light 3 m inside (too short to place it inside for sure, so the visit
    # splits there), then on to the scene: the smoothed path shows the car never left, the stay began at
    # the first entry.
    route = Route(-1200, 97).drive(-10, 97, 11.1).hold(20).drive(-5, 97, 5.0, stop=False).drive(0, 40, 6.0).hold(200)
    for seed in SEEDS:
        result = detect(observe(route, seed, report_heading=True))
        assert result is not None
        assert abs(seconds(result.ts) - entry(route)) <= 2.0, seed


def test_correlated_errors_widen_the_margin() -> None:
    # Parked 1.5 m outside with a bias of 2 m wandering over ~20 s (urban canyon): a minute of fixes can lean
    # inside by metres together; the scatter of the stop's 10 s block means and their autocorrelation show it.
    # (A stronger bias, 3-4 m, still gives false arrivals this near the edge: see the module doc.)
    route = _parked_at(101.5, 900)
    for seed in range(24):
        assert detect(observe(route, seed, drift_m=2.0)) is None, seed


def test_acc_sets_the_margin_at_the_edge() -> None:
    # The same stop 8 m inside: it counts with acc 5 m, it is too close to call with acc 100 m.
    fixes = [fix_at(t, -92, 0, acc=5.0, speed=0.0) for t in range(0, 120)]
    assert detect(fixes) is not None
    vague = [fix_at(t, -92, 0, acc=100.0, speed=0.0) for t in range(0, 120)]
    assert detect(vague) is None
    assert detect(vague, params=ArrivalParams(edge_sigmas=0.0)) is not None


# ---------------------------------------------------------------- late and shuffled data
def test_dead_zone_batch_moves_the_arrival_back_to_the_true_entry() -> None:
    route = Route(-1500, 0).drive(0, 0, 11.1).hold(300)
    truth = entry(route)
    for seed in SEEDS:
        fixes = observe(route, seed)
        held = [f for f in fixes if ms(truth - 30) <= f.ts < ms(truth + 100)]  # the mobile dead zone
        live = [f for f in fixes if f not in held]
        detector = ArrivalDetector(*BASE)
        reported = [r for f in live if (r := detector.add([f])) is not None]
        assert len(reported) == 1 and seconds(reported[0].ts) >= truth + 100  # the first fix after the dead zone
        late = detector.add(held)
        assert late is not None and late == detector.result and late.ts < reported[0].ts
        assert abs(seconds(late.ts) - truth) <= 2.0
        assert late == detect(fixes)


def test_dead_zone_after_a_drive_by_does_not_join_the_visits() -> None:
    # Through the zone at 100 s, out of coverage, back and parked: live, the drive-by must not be the start.
    route = Route(-1100, 0).drive(600, 0, 11.1).hold(20).drive(30, 0, 11.1).hold(300)
    truth = entry(route)
    fixes = observe(route, 4)
    live = [f for f in fixes if not ms(110) <= f.ts < ms(truth + 60)]
    result = detect(live)
    assert result is not None and seconds(result.ts) >= truth + 60
    assert abs(seconds(detect(fixes).ts) - truth) <= 2.0  # type: ignore[union-attr]


@pytest.mark.parametrize("report_speed", [True, False])
def test_dead_zone_hiding_that_a_drive_by_left(report_speed: bool) -> None:
    # Through the centre at about 100 s, out of coverage, back to park on the same spot at about 230 s.
    route = Route(-1100, 0).drive(1100, 0, 11.1).hold(10).drive(0, 0, 11.1).hold(300)
    truth = entry(route)
    fixes = observe(route, 8, report_speed=report_speed)
    passing = max(f.ts for f in fixes if abs(f.lat - BASE[0]) < 0.0001 and f.ts < ms(truth))  # at the centre
    held = [f for f in fixes if passing < f.ts < ms(truth + 40)]
    detector = ArrivalDetector(*BASE)
    live = detector.add([f for f in fixes if f not in held])
    late = detector.add(held)
    assert live is not None and late is not None and abs(seconds(late.ts) - truth) <= 2.0
    if report_speed:
        # The last fix before the gap was moving: the visit ends there, and the late batch moves the arrival back.
        assert seconds(live.ts) >= truth + 40
    else:
        # Without speed the unit seemed to stand on the spot all along; the batch shows it left, and the
        # arrival moves to what the fixes show (a caller keeps the earliest time it was told).
        assert seconds(live.ts) < truth - 100


def _deliveries(fixes: list[Fix], seed: int) -> list[list[list[Fix]]]:
    """The same fixes delivered in order, reversed, shuffled one by one, and in random chunks."""
    rng = random.Random(seed)
    orders: list[list[list[Fix]]] = [[fixes], [[f] for f in fixes], [[f] for f in reversed(fixes)]]
    for _ in range(2):
        shuffled = list(fixes)
        rng.shuffle(shuffled)
        orders.append([[f] for f in shuffled])
        cuts = sorted(rng.sample(range(1, len(fixes)), 12))
        chunks = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(fixes)], strict=True)]
        orders.append(chunks)
    return orders


SCENARIOS: list[tuple[str, Callable[[], list[Fix]]]] = [
    ("approach and stop", lambda: observe(Route(-600, 0).drive(0, 0, 11.1).hold(120), 11)),
    (
        "drive-by then return",
        lambda: observe(Route(-400, 0).drive(400, 0, 11.1).hold(10).drive(20, 0, 11.1).hold(120), 12),
    ),
    ("parked at the edge", lambda: observe(Route(-300, 0).drive(-97, 0, 11.1).hold(200), 13)),
    ("outliers and 0.2 Hz", lambda: jump(observe(_parked_at(0, 300), 14, interval_s=5.0), 60, 0, 0)),
    ("with duplicates", lambda: (lambda f: f + f[::7])(observe(Route(-600, 0).drive(30, 0, 11.1).hold(120), 15))),
]


@pytest.mark.parametrize(("name", "make"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_same_answer_in_any_order_and_chunking(name: str, make: Callable[[], list[Fix]]) -> None:
    fixes = make()
    expected = detect(fixes)
    for k, delivery in enumerate(_deliveries(fixes, seed=len(fixes))):
        detector = ArrivalDetector(*BASE)
        for chunk in delivery:
            detector.add(chunk)
        assert detector.result == expected, f"delivery {k}"


def test_detector_matches_the_pure_function() -> None:
    fixes = observe(Route(-600, 0).drive(0, 0, 11.1).hold(120), 5)
    detector = ArrivalDetector(*BASE)
    detector.add(fixes)
    found = detect_arrival(detector._track, RADIUS, ArrivalParams())
    assert found is not None and found[0] == detector.result


# ---------------------------------------------------------------- configuration
def test_radius_and_params_are_configurable() -> None:
    route = Route(-1500, 0).drive(0, 0, 11.1).hold(200)
    fixes = observe(route, 2)
    wide = detect(fixes, radius_m=300.0)
    assert wide is not None and abs(seconds(wide.ts) - route.entries(300.0)[-1]) <= 2.0
    quick = detect(fixes, params=ArrivalParams(stop_ms=10_000))
    slow = detect(fixes)
    assert quick is not None and slow is not None and quick.ts == slow.ts
    assert quick.confirmed_at_ts < slow.confirmed_at_ts


@pytest.mark.parametrize(
    "kwargs",
    [{"stop_ms": 0}, {"dwell_ms": -1}, {"stop_radius_m": -1.0}, {"min_fixes": 0}, {"max_acc_m": 0.0}],
)
def test_params_refuse_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ArrivalParams(**kwargs)


def test_detector_refuses_a_non_positive_radius() -> None:
    with pytest.raises(ValueError):
        ArrivalDetector(*BASE, radius_m=0.0)


def test_nothing_new_reports_nothing() -> None:
    detector = ArrivalDetector(*BASE, since_ms=T0)
    assert detector.add([]) is None and detector.result is None
    fixes = observe(Route(-600, 0).drive(0, 0, 11.1).hold(120), 6)
    assert detector.add(fixes) is not None
    assert detector.add(fixes) is None  # replayed
    assert detector.add([fix_at(10_000, 0, 0)]) is None  # long after: cannot change the arrival
