"""GCJ-02 ("Mars coordinates") <-> WGS-84, so positions from Chinese apps and terminals reach the hub in WGS-84.

GCJ-02 is WGS-84 shifted by a deliberately obscure, smooth offset of a few hundred metres, defined only inside
China. The forward direction is the widely published closed form: two trigonometric polynomials of the offset
from (105 E, 35 N), scaled to degrees with the radii of curvature of the Krasovsky 1940 ellipsoid. There is no
closed-form inverse, so :func:`gcj02_to_wgs84` solves the forward equation numerically.

"In China" is the usual bounding rectangle, not the border: outside it GCJ-02 equals WGS-84, which is what the
apps themselves do. A point near the rectangle's edge whose offset carries it across the edge does not round
trip; those places are outside mainland China (sea or neighbouring countries), so this does not matter here.
"""

from __future__ import annotations

import math
from typing import Final, Literal, get_args

__all__ = ["DATUMS", "Datum", "from_wgs84", "gcj02_to_wgs84", "in_china", "to_wgs84", "wgs84_to_gcj02"]

Datum = Literal["wgs84", "gcj02"]
DATUMS: Final[frozenset[str]] = frozenset(get_args(Datum))

# Krasovsky 1940 ellipsoid, as the published GCJ-02 formula uses it: semi-major axis (m), first eccentricity squared.
_A: Final = 6378245.0
_EE: Final = 0.00669342162296594323

# The rectangle outside which GCJ-02 is taken to be WGS-84 (degrees).
_LON_MIN: Final = 72.004
_LON_MAX: Final = 137.8347
_LAT_MIN: Final = 0.8293
_LAT_MAX: Final = 55.8271

# The inverse stops once the forward image of its estimate is this close to the input, in degrees
# (1e-9 degrees is about 0.1 mm). The offset's slope is about 1/250, so each step gains some two orders of
# magnitude and four or five steps suffice; the cap only guards against a pathological input.
_TOLERANCE_DEG: Final = 1e-9
_MAX_ITERATIONS: Final = 30


def _checked(lat: float, lon: float) -> tuple[float, float]:
    """The coordinates as floats, or ValueError saying which one is unusable and why."""
    for value in (lat, lon):
        # bool is an int to Python, but never a coordinate; a string or None is a decoding bug upstream.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"coordinates must be numbers, got {type(value).__name__}")
    lat_f, lon_f = float(lat), float(lon)
    if not math.isfinite(lat_f) or not math.isfinite(lon_f):
        raise ValueError(f"coordinates must be finite, got lat={lat_f!r} lon={lon_f!r}")
    if not -90.0 <= lat_f <= 90.0:
        raise ValueError(f"latitude {lat_f!r} is outside [-90, 90]")
    if not -180.0 <= lon_f <= 180.0:
        raise ValueError(f"longitude {lon_f!r} is outside [-180, 180]")
    return lat_f, lon_f


def _in_rectangle(lat: float, lon: float) -> bool:
    return _LAT_MIN <= lat <= _LAT_MAX and _LON_MIN <= lon <= _LON_MAX


def in_china(lat: float, lon: float) -> bool:
    """Whether GCJ-02 shifts this point: the usual rectangle around China, borders included.

    Raises ValueError for non-finite or out-of-range coordinates.
    """
    return _in_rectangle(*_checked(lat, lon))


def _periodic(u: float) -> float:
    """The short-period wiggle both polynomials share (periods of 1 and 1/3 degree)."""
    return (20.0 * math.sin(6.0 * math.pi * u) + 20.0 * math.sin(2.0 * math.pi * u)) * 2.0 / 3.0


def _lat_term(x: float, y: float) -> float:
    """The northward offset before scaling; x and y are degrees east of 105 E and north of 35 N."""
    value = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    value += _periodic(x)
    value += (20.0 * math.sin(math.pi * y) + 40.0 * math.sin(math.pi * y / 3.0)) * 2.0 / 3.0
    value += (160.0 * math.sin(math.pi * y / 12.0) + 320.0 * math.sin(math.pi * y / 30.0)) * 2.0 / 3.0
    return value


def _lon_term(x: float, y: float) -> float:
    """The eastward offset before scaling; same arguments as :func:`_lat_term`."""
    value = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    value += _periodic(x)
    value += (20.0 * math.sin(math.pi * x) + 40.0 * math.sin(math.pi * x / 3.0)) * 2.0 / 3.0
    value += (150.0 * math.sin(math.pi * x / 12.0) + 300.0 * math.sin(math.pi * x / 30.0)) * 2.0 / 3.0
    return value


def _shift(lat: float, lon: float) -> tuple[float, float]:
    """The GCJ-02 offset (degrees north, degrees east) at a WGS-84 point, regardless of the rectangle.

    The terms are read as metres and turned into degrees with the ellipsoid's meridional and prime-vertical
    radii of curvature at that latitude.
    """
    x, y = lon - 105.0, lat - 35.0
    phi = math.radians(lat)
    w2 = 1.0 - _EE * math.sin(phi) ** 2
    meridional = _A * (1.0 - _EE) / (w2 * math.sqrt(w2))
    prime_vertical = _A / math.sqrt(w2)
    dlat = math.degrees(_lat_term(x, y) / meridional)
    dlon = math.degrees(_lon_term(x, y) / (prime_vertical * math.cos(phi)))
    return dlat, dlon


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """The GCJ-02 coordinates of a WGS-84 point (the point itself outside China).

    Raises ValueError for non-finite or out-of-range coordinates.
    """
    lat, lon = _checked(lat, lon)
    if not _in_rectangle(lat, lon):
        return lat, lon
    dlat, dlon = _shift(lat, lon)
    return lat + dlat, lon + dlon


def gcj02_to_wgs84(lat: float, lon: float) -> tuple[float, float]:
    """The WGS-84 point whose GCJ-02 image is ``(lat, lon)`` (the point itself outside China).

    Fixed-point iteration on the forward formula: move the estimate by the miss of its forward image. The
    offset changes slowly with position, so this contracts fast; it stops when the image matches to
    1e-9 degrees, or after a bounded number of steps with the best estimate so far.
    Raises ValueError for non-finite or out-of-range coordinates.
    """
    lat, lon = _checked(lat, lon)
    if not _in_rectangle(lat, lon):
        return lat, lon
    est_lat, est_lon = lat, lon
    best = (math.inf, est_lat, est_lon)
    for _ in range(_MAX_ITERATIONS):
        dlat, dlon = _shift(est_lat, est_lon)
        miss_lat, miss_lon = est_lat + dlat - lat, est_lon + dlon - lon
        miss = max(abs(miss_lat), abs(miss_lon))
        if miss < best[0]:
            best = (miss, est_lat, est_lon)
        if miss <= _TOLERANCE_DEG:
            break
        est_lat, est_lon = est_lat - miss_lat, est_lon - miss_lon
    return best[1], best[2]


def to_wgs84(lat: float, lon: float, datum: Datum) -> tuple[float, float]:
    """A position stated in ``datum`` as WGS-84, the datum the hub stores (for gateways, at the edge).

    Raises ValueError for an unknown datum or unusable coordinates.
    """
    if datum == "wgs84":
        return _checked(lat, lon)
    if datum == "gcj02":
        return gcj02_to_wgs84(lat, lon)
    raise ValueError(f"unknown datum {datum!r}, expected one of {sorted(DATUMS)}")


def from_wgs84(lat: float, lon: float, datum: Datum) -> tuple[float, float]:
    """A stored WGS-84 position in ``datum`` (for drawing on a map whose tiles use that datum).

    Raises ValueError for an unknown datum or unusable coordinates.
    """
    if datum == "wgs84":
        return _checked(lat, lon)
    if datum == "gcj02":
        return wgs84_to_gcj02(lat, lon)
    raise ValueError(f"unknown datum {datum!r}, expected one of {sorted(DATUMS)}")
