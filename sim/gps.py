"""The simulated copter's GPS receiver: its fix, and the error of the position it reports.

Pure: randomness from a passed :class:`random.Random`, one draw per axis per tick.
"""

from __future__ import annotations

import math
import random
from typing import Final

__all__ = ["GpsReceiver"]

_KEEP: Final = 0.998  # per 0.1 s tick: a time constant of about 50 s


class GpsReceiver:
    """A 3D fix with 12 satellites whose error wanders (Gauss-Markov) by a metre or two: a real receiver's
    error drifts slowly, it is not white noise, and a ground station's track would show the difference."""

    def __init__(self) -> None:
        self.fix_type = 3
        self.satellites = 12
        self.error_ne = (0.0, 0.0)  # metres north and east of the truth

    @property
    def ok(self) -> bool:
        """Good enough to fly on: a 3D fix from six satellites or more."""
        return self.fix_type >= 3 and self.satellites >= 6

    def wander(self, rng: random.Random, error_m: float) -> None:
        """One tick of the error's drift, ``error_m`` its standard deviation in the long run."""
        sigma = error_m * math.sqrt(1 - _KEEP * _KEEP)
        self.error_ne = (_KEEP * self.error_ne[0] + rng.gauss(0, sigma),
                         _KEEP * self.error_ne[1] + rng.gauss(0, sigma))
