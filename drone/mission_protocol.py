"""The MAVLink mission upload protocol, driven from the hub (GCS) side.

    GCS  MISSION_COUNT(n)           ->
         <- MISSION_REQUEST_INT(seq)   (or legacy MISSION_REQUEST)
    GCS  MISSION_ITEM_INT(seq)      ->  (MISSION_ITEM for a legacy request)
         ... until
         <- MISSION_ACK(type)

The vehicle drives the transfer; we only answer. When it goes quiet we re-send
what we sent last (COUNT before the first request, else the last item), at most
``retries`` times in a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from drone.codec import mavlink
from drone.errors import MissionError, MissionTimeout
from drone.listeners import Target, next_message
from drone.mission import MissionItem, wire_fields

__all__ = ["upload"]

MAV_MISSION_ACCEPTED: Final = 0
MAV_MISSION_TYPE_MISSION: Final = 0
_ANSWERS: Final = frozenset({"MISSION_REQUEST_INT", "MISSION_REQUEST", "MISSION_ACK"})


def _item_message(vehicle: Target, item: MissionItem, seq: int, legacy: bool) -> Any:
    f = wire_fields(item, seq)
    common = (vehicle.system_id, vehicle.component_id, seq, f["frame"], f["command"], f["current"],
              f["autocontinue"], f["param1"], f["param2"], f["param3"], f["param4"])
    if legacy:
        # MISSION_ITEM carries degrees as floats, with the same (relative) frame.
        return mavlink.MAVLink_mission_item_message(*common, item.lat, item.lon, f["z"], MAV_MISSION_TYPE_MISSION)
    return mavlink.MAVLink_mission_item_int_message(*common, f["x"], f["y"], f["z"], MAV_MISSION_TYPE_MISSION)


async def upload(vehicle: Target, items: Sequence[MissionItem], *, timeout_s: float, retries: int) -> None:
    """Upload ``items`` (replacing the vehicle's mission); MissionError/MissionTimeout on failure."""
    ours = vehicle.gcs_system_id

    def answer(msg: Any) -> bool:
        return bool(msg.get_type() in _ANSWERS and msg.target_system in (0, ours)
                    and getattr(msg, "mission_type", 0) == MAV_MISSION_TYPE_MISSION)

    count = mavlink.MAVLink_mission_count_message(vehicle.system_id, vehicle.component_id, len(items),
                                                  MAV_MISSION_TYPE_MISSION)
    with vehicle.listen(answer) as answers:
        last_sent = count
        vehicle.send(count)
        silent = 0
        while True:
            msg = await next_message(answers, timeout_s)
            if msg is None:
                silent += 1
                if silent > retries:
                    raise MissionTimeout(f"vehicle {vehicle.system_id}: no answer during mission upload "
                                         f"after {retries} re-sends")
                vehicle.send(last_sent)
                continue
            silent = 0
            if msg.get_type() == "MISSION_ACK":
                if msg.type != MAV_MISSION_ACCEPTED:
                    raise MissionError(msg.type)
                return
            if not 0 <= msg.seq < len(items):
                continue  # a request for an item we never announced: ignore, the vehicle will time out or ACK
            last_sent = _item_message(vehicle, items[msg.seq], msg.seq, msg.get_type() == "MISSION_REQUEST")
            vehicle.send(last_sent)
