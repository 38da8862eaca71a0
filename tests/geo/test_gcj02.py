"""GCJ-02 <-> WGS-84 against published reference points, round trips across China, and hostile input.

Reference points (facts published by other projects' test suites, read through the search tool on 2026-12-06):
- googollee/eviltransform, go/transform_test.go and python/test.py: three WGS-84 / GCJ-02 pairs
  (Shanghai, Shenzhen, Beijing), the same table in every language port of that project.
- wandergis/coordtransform, test/app.js: wgs84togcj02(116.404, 39.915) = [116.41024449916938, 39.91640428150164]
  (lon, lat) and gcj02towgs84(116.404, 39.915) = [116.39775550083061, 39.91359571849836]; the latter is that
  library's one-step approximate inverse, a few centimetres from the exact one.
- hujiulong/gcoord, test/unit/crs/GCJ02.spec.js: GCJ02 -> WGS84 of [123, 45] (lon, lat) is
  [122.99395597, 44.99804071], asserted there to 5 decimals.
All are outputs of the published formula. AMap's live service is not bit-identical to it (reported differences
are of the order of half a metre), so these tests pin the formula, which is what the apps compute on the device.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.gcj02 import from_wgs84, gcj02_to_wgs84, in_china, to_wgs84, wgs84_to_gcj02
from geo.geodesy import haversine_m

TOLERANCE_M = 0.5

# (place, WGS-84 lat, lon, GCJ-02 lat, lon), as published by the sources in the module docstring.
FORWARD_PAIRS = [
    ("Shanghai (eviltransform)", 31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),
    ("Shenzhen (eviltransform)", 22.543847, 113.912316, 22.540796131694766, 113.9171764808363),
    ("Beijing (eviltransform)", 39.911954, 116.377817, 39.91334545536069, 116.38404722455657),
    ("Beijing (coordtransform)", 39.915, 116.404, 39.91640428150164, 116.41024449916938),
]
# (place, GCJ-02 lat, lon, WGS-84 lat, lon) published for the inverse direction.
INVERSE_PAIRS = [
    ("Beijing (coordtransform)", 39.915, 116.404, 39.91359571849836, 116.39775550083061),
    ("Jilin (gcoord)", 45.0, 123.0, 44.99804071, 122.99395597),
]

# Well inside the rectangle, so no offset carries a point across its edge (see geo.gcj02's docstring).
CHINA_LAT = st.floats(min_value=18.0, max_value=53.5)
CHINA_LON = st.floats(min_value=73.5, max_value=135.0)


@pytest.mark.parametrize(("place", "wlat", "wlon", "glat", "glon"), FORWARD_PAIRS)
def test_forward_matches_published_points(place: str, wlat: float, wlon: float, glat: float, glon: float) -> None:
    lat, lon = wgs84_to_gcj02(wlat, wlon)
    assert haversine_m(lat, lon, glat, glon) < TOLERANCE_M, place
    # The sources print full doubles; the same closed form agrees to far better than a millimetre.
    assert haversine_m(lat, lon, glat, glon) < 0.001, place


@pytest.mark.parametrize(("place", "wlat", "wlon", "glat", "glon"), FORWARD_PAIRS)
def test_inverse_recovers_published_wgs84(place: str, wlat: float, wlon: float, glat: float, glon: float) -> None:
    lat, lon = gcj02_to_wgs84(glat, glon)
    assert haversine_m(lat, lon, wlat, wlon) < TOLERANCE_M, place


@pytest.mark.parametrize(("place", "glat", "glon", "wlat", "wlon"), INVERSE_PAIRS)
def test_inverse_matches_published_points(place: str, glat: float, glon: float, wlat: float, wlon: float) -> None:
    lat, lon = gcj02_to_wgs84(glat, glon)
    assert haversine_m(lat, lon, wlat, wlon) < TOLERANCE_M, place


def test_offset_is_hundreds_of_metres_in_china() -> None:
    """A guard against a formula that silently does nothing: the shift in Beijing is several hundred metres."""
    lat, lon = wgs84_to_gcj02(39.911954, 116.377817)
    assert 300.0 < haversine_m(39.911954, 116.377817, lat, lon) < 1000.0


@settings(max_examples=400, deadline=None)
@given(lat=CHINA_LAT, lon=CHINA_LON)
def test_round_trip_wgs_gcj_wgs_across_china(lat: float, lon: float) -> None:
    glat, glon = wgs84_to_gcj02(lat, lon)
    back_lat, back_lon = gcj02_to_wgs84(glat, glon)
    assert haversine_m(lat, lon, back_lat, back_lon) < TOLERANCE_M
    # What the inverse actually promises: the forward image matches to 1e-9 degrees (about 0.1 mm).
    assert haversine_m(lat, lon, back_lat, back_lon) < 0.001


@settings(max_examples=400, deadline=None)
@given(lat=CHINA_LAT, lon=CHINA_LON)
def test_round_trip_gcj_wgs_gcj_across_china(lat: float, lon: float) -> None:
    wlat, wlon = gcj02_to_wgs84(lat, lon)
    again_lat, again_lon = wgs84_to_gcj02(wlat, wlon)
    assert abs(again_lat - lat) <= 1e-9 and abs(again_lon - lon) <= 1e-9


def test_round_trip_at_the_sqrt_cusp_of_105_east() -> None:
    """sqrt(|lon - 105|) has an infinite slope at 105 E: the iteration must still settle there."""
    for lon in (105.0, 105.0 + 1e-12, 105.0 - 1e-9, 104.99999):
        glat, glon = wgs84_to_gcj02(35.0, lon)
        back = gcj02_to_wgs84(glat, glon)
        assert haversine_m(35.0, lon, *back) < 0.001


OUTSIDE = st.one_of(
    st.tuples(st.floats(-90.0, 90.0), st.floats(-180.0, 72.0)),
    st.tuples(st.floats(-90.0, 90.0), st.floats(137.9, 180.0)),
    st.tuples(st.floats(-90.0, 0.8), st.floats(-180.0, 180.0)),
    st.tuples(st.floats(55.9, 90.0), st.floats(-180.0, 180.0)),
)


@settings(max_examples=300, deadline=None)
@given(point=OUTSIDE)
def test_outside_china_is_identity(point: tuple[float, float]) -> None:
    lat, lon = point
    assert not in_china(lat, lon)
    assert wgs84_to_gcj02(lat, lon) == (lat, lon)
    assert gcj02_to_wgs84(lat, lon) == (lat, lon)
    assert to_wgs84(lat, lon, "gcj02") == (lat, lon)


@pytest.mark.parametrize(
    ("lat", "lon", "inside"),
    [
        (39.9, 116.4, True),  # Beijing
        (22.3, 114.2, True),  # Hong Kong: inside the rectangle, as every implementation of this test has it
        (51.5, -0.1, False),  # London
        (0.8293, 100.0, True),  # the rectangle's edges count as inside
        (55.8271, 137.8347, True),
        (0.8292, 100.0, False),
        (30.0, 72.0039, False),
        (-33.9, 151.2, False),  # Sydney
    ],
)
def test_in_china_rectangle(lat: float, lon: float, inside: bool) -> None:
    assert in_china(lat, lon) is inside


def test_datum_dispatch() -> None:
    assert to_wgs84(39.911954, 116.377817, "wgs84") == (39.911954, 116.377817)
    assert from_wgs84(39.911954, 116.377817, "wgs84") == (39.911954, 116.377817)
    gcj = from_wgs84(39.911954, 116.377817, "gcj02")
    assert haversine_m(*gcj, 39.91334545536069, 116.38404722455657) < TOLERANCE_M
    assert haversine_m(*to_wgs84(*gcj, "gcj02"), 39.911954, 116.377817) < TOLERANCE_M


@pytest.mark.parametrize("datum", ["WGS84", "bd09", "", "gcj-02"])
def test_unknown_datum_refused(datum: Any) -> None:
    with pytest.raises(ValueError, match="unknown datum"):
        to_wgs84(39.9, 116.4, datum)
    with pytest.raises(ValueError, match="unknown datum"):
        from_wgs84(39.9, 116.4, datum)


FUNCTIONS = [wgs84_to_gcj02, gcj02_to_wgs84, in_china, lambda a, b: to_wgs84(a, b, "gcj02"),
             lambda a, b: to_wgs84(a, b, "wgs84"), lambda a, b: from_wgs84(a, b, "gcj02")]
BAD_PAIRS: list[tuple[Any, Any]] = [
    (math.nan, 116.4), (39.9, math.nan), (math.inf, 116.4), (39.9, -math.inf), (90.0001, 116.4),
    (-90.5, 116.4), (39.9, 180.0001), (39.9, -181.0), (1e308, 1e308), (-1e308, 0.0),
    ("39.9", 116.4), (39.9, None), (True, 116.4), (39.9, [116.4]),
]


@pytest.mark.parametrize("func", FUNCTIONS)
@pytest.mark.parametrize(("lat", "lon"), BAD_PAIRS)
def test_hostile_coordinates_raise_value_error(func: Any, lat: Any, lon: Any) -> None:
    with pytest.raises(ValueError):
        func(lat, lon)


@settings(max_examples=500, deadline=None)
@given(lat=st.floats(), lon=st.floats())
def test_any_float_is_refused_with_a_reason_or_converted_finitely(lat: float, lon: float) -> None:
    """Garbage in is a ValueError (the gateway counts it as a drop); the next good point still converts."""
    for func in (wgs84_to_gcj02, gcj02_to_wgs84):
        try:
            out = func(lat, lon)
        except ValueError as exc:
            assert str(exc)
        else:
            assert all(math.isfinite(v) for v in out)
            assert -90.5 < out[0] < 90.5 and -180.5 < out[1] < 180.5
    assert haversine_m(*wgs84_to_gcj02(39.911954, 116.377817), 39.91334545536069, 116.38404722455657) < 0.001
