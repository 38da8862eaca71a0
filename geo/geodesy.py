"""Geodesy of WGS-84 coordinates: distances, offsets and bearings on a spherical Earth.

A sphere is exact enough at city scale (the error against WGS-84 is below 0.5 %),
and it keeps the code free of iterative ellipsoid formulas.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Final

__all__ = ["EARTH_RADIUS_M", "bearing_deg", "grid_ring", "haversine_m", "offset", "segment_distance_m"]

# Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M: Final = 6_371_008.8


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two points in degrees."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point ``north_m`` north and ``east_m`` east of ``(lat, lon)``.

    A local flat approximation: good to centimetres over a few kilometres, which
    is all a city needs, and it inverts cleanly for the tests.
    """
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial bearing from point 1 to point 2, degrees clockwise from north in [0, 360)."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def segment_distance_m(
    lat: float, lon: float, lat_a: float, lon_a: float, lat_b: float, lon_b: float
) -> tuple[float, float]:
    """Distance from a point to the segment A-B, and how far along A-B its foot lies (metres).

    Works in a plane tangent at the point; exact enough for segments of a few kilometres.
    """
    k = math.radians(1.0) * EARTH_RADIUS_M
    cos_lat = math.cos(math.radians(lat))
    ax, ay = (lon_a - lon) * cos_lat * k, (lat_a - lat) * k
    bx, by = (lon_b - lon) * cos_lat * k, (lat_b - lat) * k
    dx, dy = bx - ax, by - ay
    length_sq = dx * dx + dy * dy
    t = 0.0 if length_sq == 0.0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / length_sq))
    fx, fy = ax + t * dx, ay + t * dy
    return math.hypot(fx, fy), t * math.sqrt(length_sq)


def grid_ring(ci: int, cj: int, r: int) -> Iterator[tuple[int, int]]:
    """The cells of a square grid at Chebyshev distance exactly ``r`` from ``(ci, cj)`` (for bucket indexes)."""
    if r == 0:
        yield ci, cj
        return
    for d in range(-r, r + 1):
        yield ci + d, cj - r
        yield ci + d, cj + r
    for d in range(-r + 1, r):
        yield ci - r, cj + d
        yield ci + r, cj + d
