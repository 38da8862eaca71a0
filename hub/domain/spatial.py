"""A grid-bucket index of moving points with exact nearest-neighbour search by great-circle distance.

Points live in cells of a fixed lat/lon grid (square, ``cell_m`` on a side, at the
reference latitude), so inserting, moving and removing a point is O(1): a unit
reporting at 1 Hz costs two dictionary operations, and only when it crosses a cell.

A search is incremental (best-first over cells and points, Hjaltason and Samet):
one heap holds points by their exact distance and cells by a lower bound of the
distance to anything inside them, and the grid is opened ring by ring around the
query, each ring entering the heap under a lower bound of the distance to anything
outside the rings already opened. A point leaves the heap only when nothing still
unopened can be closer, so the answer is exact, not approximate; the caller pulls
as many neighbours as it needs and no cell beyond that is ever read.

Bounds use the haversine formula itself (latitude gap, longitude gap scaled by the
smallest cosine a cell can have), so they hold at any latitude and across the
antimeridian, where the search stays exact but walks more cells.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Final, NamedTuple

from geo.geodesy import EARTH_RADIUS_M, grid_ring, haversine_m

__all__ = ["DEFAULT_CELL_M", "Neighbour", "SpatialIndex"]

DEFAULT_CELL_M: Final = 500.0
# Bounds are lowered by this much so that floating-point rounding in the bound
# (or a point lying exactly on a cell edge) can never hide a point behind it.
_SLACK_M: Final = 1e-3
# Heap entry ranks: at an equal distance, rings and cells open before a point is
# yielded, so equal-distance points come out in key order, as a brute force gives.
_RING: Final = 0
_CELL: Final = 1
_POINT: Final = 2

Cell = tuple[int, int]  # (longitude index, latitude index)
_Entry = tuple[float, int, int, int, str]  # (distance or bound, rank, i or ring, j, key)


class Neighbour(NamedTuple):
    key: str
    distance_m: float


def _sin2_half(deg: float) -> float:
    return math.sin(math.radians(deg) / 2) ** 2


def _arc_m(h: float) -> float:
    """Great-circle distance of a haversine value ``h``."""
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, max(0.0, h))))


class SpatialIndex:
    """Points keyed by a string id, with O(1) updates and exact k-nearest queries.

    ``ref_lat`` fixes the longitude width of a cell (cells are square there); by
    default it is the latitude of the first point inserted. Any latitude works;
    the reference only decides how many points share a cell.
    Do not change the index while iterating over :meth:`iter_nearest`.
    """

    def __init__(self, cell_m: float = DEFAULT_CELL_M, ref_lat: float | None = None) -> None:
        if not (math.isfinite(cell_m) and cell_m > 0):
            raise ValueError(f"cell_m must be positive, got {cell_m}")
        self.cell_m = cell_m
        self._dlat = math.degrees(cell_m / EARTH_RADIUS_M)
        self._dlon = self._dlat
        self._ref_lat: float | None = None
        if ref_lat is not None:
            self._set_reference(ref_lat)
        self._where: dict[str, tuple[float, float, Cell]] = {}
        self._cells: dict[Cell, set[str]] = {}

    def _set_reference(self, ref_lat: float) -> None:
        if not -90.0 <= ref_lat <= 90.0:
            raise ValueError(f"ref_lat out of range: {ref_lat}")
        self._ref_lat = ref_lat
        # Near a pole cap the width, so a cell never spans most of the globe.
        self._dlon = min(self._dlat / max(math.cos(math.radians(ref_lat)), 0.01), 360.0)

    def _cell(self, lat: float, lon: float) -> Cell:
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):  # also refuses NaN
            raise ValueError(f"coordinates out of range: ({lat}, {lon})")
        return math.floor(lon / self._dlon), math.floor(lat / self._dlat)

    # ------------------------------------------------------------- updates
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def position(self, key: str) -> tuple[float, float]:
        lat, lon, _ = self._where[key]
        return lat, lon

    def insert(self, key: str, lat: float, lon: float) -> None:
        """Add a new point; ValueError if ``key`` is already indexed."""
        if key in self._where:
            raise ValueError(f"{key!r} is already in the index")
        if self._ref_lat is None:
            self._set_reference(lat)
        cell = self._cell(lat, lon)
        self._add_to_cell(key, cell)
        self._where[key] = (lat, lon, cell)

    def move(self, key: str, lat: float, lon: float) -> None:
        """Give ``key`` a new position; KeyError if it is not indexed."""
        old = self._where[key][2]
        cell = self._cell(lat, lon)
        if cell != old:
            self._drop_from_cell(key, old)
            self._add_to_cell(key, cell)
        self._where[key] = (lat, lon, cell)

    def remove(self, key: str) -> None:
        """Forget ``key``; KeyError if it is not indexed."""
        _, _, cell = self._where.pop(key)
        self._drop_from_cell(key, cell)

    def _add_to_cell(self, key: str, cell: Cell) -> None:
        bucket = self._cells.get(cell)
        if bucket is None:
            self._cells[cell] = {key}
        else:
            bucket.add(key)

    def _drop_from_cell(self, key: str, cell: Cell) -> None:
        bucket = self._cells[cell]
        bucket.discard(key)
        if not bucket:  # empty cells go, so a far-away search can scan the occupied ones
            del self._cells[cell]

    # ------------------------------------------------------------- queries
    def nearest(
        self,
        lat: float,
        lon: float,
        k: int,
        max_m: float | None = None,
        predicate: Callable[[str], bool] | None = None,
    ) -> list[Neighbour]:
        """The ``k`` nearest points (that pass ``predicate``, within ``max_m``), closest first, ties by key."""
        if k <= 0:
            return []
        return list(itertools.islice(self.iter_nearest(lat, lon, max_m, predicate), k))

    def iter_nearest(
        self,
        lat: float,
        lon: float,
        max_m: float | None = None,
        predicate: Callable[[str], bool] | None = None,
    ) -> Iterator[Neighbour]:
        """Every point (passing ``predicate``, within ``max_m``) in increasing distance, ties by key.

        Lazy: the work done is proportional to how many neighbours are taken.
        ``predicate`` is called once per point of each cell opened, before its distance.
        """
        ci, cj = self._cell(lat, lon)
        limit = math.inf if max_m is None else max_m
        cos_q = math.cos(math.radians(lat))
        heap: list[_Entry] = []
        if (ci, cj) in self._cells:
            heap.append((0.0, _CELL, ci, cj, ""))
        self._push_ring(heap, lat, lon, cos_q, ci, cj, 1, limit)
        where = self._where
        while heap:
            dist, rank, a, b, key = heapq.heappop(heap)
            if rank == _POINT:
                yield Neighbour(key, dist)
            elif rank == _CELL:
                for member in self._cells.get((a, b), ()):
                    if predicate is not None and not predicate(member):
                        continue
                    plat, plon, _ = where[member]
                    d = haversine_m(lat, lon, plat, plon)
                    if d <= limit:
                        heapq.heappush(heap, (d, _POINT, 0, 0, member))
            elif 8 * a > len(self._cells):
                # The ring has more cells than are occupied: scan the occupied ones instead.
                for i, j in self._cells:
                    if max(abs(i - ci), abs(j - cj)) >= a:
                        self._push_cell(heap, lat, lon, cos_q, i, j, limit)
            else:
                for i, j in grid_ring(ci, cj, a):
                    if (i, j) in self._cells:
                        self._push_cell(heap, lat, lon, cos_q, i, j, limit)
                self._push_ring(heap, lat, lon, cos_q, ci, cj, a + 1, limit)

    def _push_cell(self, heap: list[_Entry], lat: float, lon: float, cos_q: float, i: int, j: int,
                   limit: float) -> None:
        bound = self._rect_bound_m(lat, lon, cos_q, j * self._dlat, (j + 1) * self._dlat,
                                   i * self._dlon, (i + 1) * self._dlon)
        if bound <= limit:
            heapq.heappush(heap, (bound, _CELL, i, j, ""))

    def _push_ring(self, heap: list[_Entry], lat: float, lon: float, cos_q: float, ci: int, cj: int, ring: int,
                   limit: float) -> None:
        """Schedule opening ``ring`` at a lower bound of the distance to anything outside the rings before it."""
        r = ring - 1
        lat_lo, lat_hi = (cj - r) * self._dlat, (cj + r + 1) * self._dlat
        lon_lo, lon_hi = (ci - r) * self._dlon, (ci + r + 1) * self._dlon
        if lat_lo <= -90.0 and lat_hi >= 90.0 and lon_lo <= -180.0 and lon_hi >= 180.0:
            return  # the opened rings cover the globe
        # Outside in latitude: at least the latitude gap, whatever the longitude.
        gap_lat = min(lat - lat_lo if lat_lo > -90.0 else math.inf, lat_hi - lat if lat_hi < 90.0 else math.inf)
        bound = EARTH_RADIUS_M * math.radians(gap_lat) if math.isfinite(gap_lat) else math.inf
        # Inside the latitude band, outside in longitude.
        gap_lon = min(lon - lon_lo if lon_lo > -180.0 else math.inf, lon_hi - lon if lon_hi < 180.0 else math.inf)
        if math.isfinite(gap_lon):
            band_lo, band_hi = max(lat_lo, -90.0), min(lat_hi, 90.0)
            cos_min = max(0.0, min(math.cos(math.radians(band_lo)), math.cos(math.radians(band_hi))))
            bound = min(bound, _arc_m(cos_q * cos_min * self._lon_term(lon, gap_lon)))
        bound = max(0.0, bound - _SLACK_M)
        if bound <= limit:
            heapq.heappush(heap, (bound, _RING, ring, 0, ""))

    def _rect_bound_m(self, lat: float, lon: float, cos_q: float, lat0: float, lat1: float, lon0: float,
                      lon1: float) -> float:
        """A lower bound of the distance from the query to any point of a cell."""
        gap_lat = max(0.0, lat0 - lat, lat - lat1)
        gap_lon = max(0.0, lon0 - lon, lon - lon1)
        if gap_lat == 0.0 and gap_lon == 0.0:
            return 0.0
        lo, hi = max(lat0, -90.0), min(lat1, 90.0)
        cos_min = max(0.0, min(math.cos(math.radians(lo)), math.cos(math.radians(hi))))
        h = _sin2_half(gap_lat) + cos_q * cos_min * self._lon_term(lon, gap_lon)
        return max(0.0, _arc_m(h) - _SLACK_M)

    @staticmethod
    def _lon_term(lon: float, gap: float) -> float:
        """The least ``sin^2(dlon / 2)`` for a longitude gap of at least ``gap`` from ``lon``.

        The grid does not wrap at +-180 degrees, but the distance does: a gap can
        reach ``180 + |lon|`` degrees, where the far side comes back round.
        """
        if gap <= 0.0:
            return 0.0
        return min(_sin2_half(min(gap, 180.0)), _sin2_half(180.0 + abs(lon)))


