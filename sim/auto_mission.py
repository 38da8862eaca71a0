"""AUTO mode's hold on the simulated copter's stored mission: the items, and which one it flies.

Pure bookkeeping; :class:`~sim.copter.Copter` turns an item into the stages it flies
(:meth:`~sim.manoeuvre.Flight.item_stages`) and tells the ground station.
"""

from __future__ import annotations

from sim.arducopter import MissionItem

__all__ = ["AutoMission"]


class AutoMission:
    """The stored mission (item 0 is home, as in ArduPilot, and is never flown) and AUTO's place in it."""

    def __init__(self) -> None:
        self.items: list[MissionItem] = []
        self.current = 0
        self.running = False  # AUTO is flying the items: from their start to the end of the last one

    def store(self, items: list[MissionItem]) -> None:
        self.items = list(items)
        self.current = 0

    def stop(self) -> None:
        self.running = False

    def start(self) -> int:
        """Fly from the current item (the first after home on a fresh mission): its number."""
        self.running = True
        return max(1, self.current)

    def advance(self) -> int | None:
        """The item after the current one, or None after the last: AUTO then hovers there, as ArduCopter does."""
        if self.current + 1 < len(self.items):
            return self.current + 1
        self.running = False
        return None

    def select(self, seq: int) -> bool:
        """MISSION_SET_CURRENT: False for no such item (home is not one)."""
        if not 0 < seq < len(self.items):
            return False
        self.current = seq
        return True
