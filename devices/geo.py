"""Geodesy for the device contract's WGS-84 coordinates: a re-export of :mod:`geo.geodesy`.

The formulas live in the neutral :mod:`geo` package (the hub, the simulator and the
device contract all use them); this module keeps the older import path working.
"""

from __future__ import annotations

from geo.geodesy import EARTH_RADIUS_M, bearing_deg, grid_ring, haversine_m, offset, segment_distance_m

__all__ = ["EARTH_RADIUS_M", "bearing_deg", "grid_ring", "haversine_m", "offset", "segment_distance_m"]
