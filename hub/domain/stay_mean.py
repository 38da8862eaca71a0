"""The mean position of a unit's fixes over a stop or a visit, and how well that mean is known.

The arrival detector (:mod:`hub.domain.arrival`) decides whether a unit stood inside the zone
from the mean of its fixes there: inside by ``max(edge_margin_m, edge_sigmas * standard error)``.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from typing import Final, Protocol

from hub.domain.track import Point

__all__ = ["EdgeRule", "MeanPosition"]

# A stop's standard error is measured from the scatter of its block means once it has this many blocks.
_MIN_BLOCKS: Final = 4
# The block means' lag-one autocorrelation is taken at most this high (it widens the error by up to 4.4x).
_MAX_RHO: Final = 0.9


class EdgeRule(Protocol):
    """How sure a mean position must be to count as inside (:class:`~hub.domain.arrival.ArrivalParams`)."""

    @property
    def edge_margin_m(self) -> float: ...

    @property
    def edge_sigmas(self) -> float: ...


class MeanPosition:
    """Running mean position of some points and the standard error of that mean.

    The error is measured, not only assumed: the points fall into blocks of ``block_ms``
    and the scatter of the block means says how well the mean is known (batch means), widened by
    their lag-one autocorrelation (as for a first-order autoregressive error), so errors that stay
    correlated for seconds or longer widen it. It is never taken below what the fixes' ``acc`` allows
    for independent fixes; with fewer than ``_MIN_BLOCKS`` blocks, the fixes of each block count as one.
    """

    __slots__ = (
        "block",
        "block_ms",
        "block_n",
        "block_sx",
        "block_sy",
        "blocks",
        "first",
        "first_ts",
        "last",
        "last_ts",
        "n",
        "products",
        "squares",
        "sums",
        "sx",
        "sy",
        "var",
    )

    def __init__(self, block_ms: int) -> None:
        self.block_ms = block_ms  # errors closer together than this are taken as correlated
        self.n = self.first_ts = self.last_ts = 0
        self.sx = self.sy = self.var = 0.0
        self.block = self.block_n = self.blocks = 0  # the open block's number and size; closed blocks
        self.block_sx = self.block_sy = 0.0
        # Of the closed blocks' means, per axis: sums, sums of squares, sums of products of neighbours,
        # and the first and the last one.
        self.sums = self.squares = self.products = self.first = self.last = (0.0, 0.0)

    def add(self, p: Point) -> None:
        if not self.n:
            self.first_ts = p.ts
        block = (p.ts - self.first_ts) // self.block_ms
        if block != self.block and self.block_n:
            self._close()
        self.block = block
        self.last_ts = p.ts
        self.n += 1
        self.sx += p.x
        self.sy += p.y
        self.var += p.sigma * p.sigma
        self.block_n += 1
        self.block_sx += p.x
        self.block_sy += p.y

    def _close(self) -> None:
        mx, my = self.block_sx / self.block_n, self.block_sy / self.block_n
        if self.blocks:
            self.products = (self.products[0] + mx * self.last[0], self.products[1] + my * self.last[1])
        else:
            self.first = (mx, my)
        self.blocks += 1
        self.last = (mx, my)
        self.sums = (self.sums[0] + mx, self.sums[1] + my)
        self.squares = (self.squares[0] + mx * mx, self.squares[1] + my * my)
        self.block_n = 0
        self.block_sx = self.block_sy = 0.0

    def standard_error(self) -> float:
        """Standard error of each axis of the mean position."""
        independent = math.sqrt(self.var / self.n / self.n)
        k = self.blocks  # the open block is not counted: it may hold a single fix
        if k < _MIN_BLOCKS:
            assumed = min(self.n, 1 + (self.last_ts - self.first_ts) // self.block_ms)
            return math.sqrt(self.var / self.n / assumed)
        spread = lag_one = 0.0
        for axis in (0, 1):
            total, mean = self.sums[axis], self.sums[axis] / k
            spread += self.squares[axis] - total * mean
            inner = (total - self.first[axis]) + (total - self.last[axis])  # block means with a neighbour
            lag_one += self.products[axis] - mean * inner + (k - 1) * mean * mean
        rho = min(max(lag_one / spread, 0.0), _MAX_RHO) if spread > 0 else 0.0
        variance = spread / (2 * (k - 1)) / k * (1 + rho) / (1 - rho)
        return max(independent, math.sqrt(max(variance, 0.0)))

    def distance(self) -> float:
        return math.hypot(self.sx / self.n, self.sy / self.n)

    def inside(self, radius_m: float, params: EdgeRule) -> bool:
        margin = max(params.edge_margin_m, params.edge_sigmas * self.standard_error())
        return self.distance() <= radius_m - margin

    def maybe_outside(self, radius_m: float, params: EdgeRule) -> bool:
        """Whether these points may stand outside: their mean is not inside by ``edge_sigmas`` standard errors."""
        return self.distance() > radius_m - params.edge_sigmas * self.standard_error()
