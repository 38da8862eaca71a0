"""The MAVLink parameter protocol, one parameter at a time, driven from the hub (GCS) side.

    read:  GCS PARAM_REQUEST_READ(name, index -1)  ->  <- PARAM_VALUE(name, value, type)
    write: GCS PARAM_SET(name, value, type)        ->  <- PARAM_VALUE(name, value now in force)

The echo of a write is the value the autopilot now holds: ArduPilot answers a write to a
read-only parameter with the old value (and a STATUSTEXT "Param write denied"), so an echo
that differs from what we sent is a refusal. An unknown name gets no answer at all: a
timeout that names the parameter. Values travel as float32; integer parameters are cast
(ArduPilot's encoding), so a value is compared after rounding both sides to float32.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Final

from drone.codec import mavlink
from drone.errors import ParamError, most_relevant
from drone.listeners import Target, next_message, texts_after_grace
from drone.state import text_of

__all__ = ["MAV_PARAM_TYPE_REAL32", "param_id", "read", "same_value", "write"]

MAV_PARAM_TYPE_REAL32: Final = 9
_PARAM_ID_LEN: Final = 16
_FLOAT32_MAX: Final = 3.4028234663852886e38


def param_id(name: str) -> bytes:
    """The wire form of a parameter name (at most 16 ASCII characters); ValueError otherwise."""
    if not name or len(name) > _PARAM_ID_LEN or not name.isascii() or not name.isprintable():
        raise ValueError(f"a parameter name is 1..16 printable ASCII characters, got {name!r}")
    return name.encode("ascii")


def same_value(a: float, b: float) -> bool:
    """Equal as float32, the only precision a PARAM_VALUE carries."""
    try:
        fa, fb = (struct.unpack("<f", struct.pack("<f", x))[0] for x in (a, b))
    except OverflowError:  # beyond float32: no parameter holds it, compare as given
        fa, fb = a, b
    return bool(fa == fb or math.isclose(fa, fb, rel_tol=1e-6, abs_tol=1e-9))


def _value_of(name: str) -> Any:
    def match(msg: Any) -> bool:
        return bool(msg.get_type() == "PARAM_VALUE" and text_of(msg.param_id) == name)
    return match


async def read(vehicle: Target, name: str, *, timeout_s: float, retries: int) -> float:
    """The parameter's value (also folded into ``vehicle.state.params``); ParamError on silence."""
    wire = param_id(name)
    attempts = max(retries, 0) + 1
    with vehicle.listen(_value_of(name)) as values:
        for _ in range(attempts):
            vehicle.send(mavlink.MAVLink_param_request_read_message(vehicle.system_id, vehicle.component_id,
                                                                     wire, -1))
            msg = await next_message(values, timeout_s)
            if msg is not None:
                return float(msg.param_value)
    raise ParamError(name, f"vehicle {vehicle.system_id}: no value for parameter {name} after {attempts} "
                           f"requests of {timeout_s} s (unknown to the autopilot, or the link drops them)")


async def write(vehicle: Target, name: str, value: float, *, param_type: int | None, timeout_s: float,
                retries: int) -> float:
    """Set the parameter and return the value the autopilot echoed; ParamError if it kept another."""
    wire = param_id(name)
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
        raise ValueError(f"parameter {name}: value must be a finite float32, got {value}")
    kind = param_type if param_type is not None else vehicle.state.param_types.get(name, MAV_PARAM_TYPE_REAL32)
    with vehicle.listen(_value_of(name)) as values, vehicle.listen_texts() as texts:
        for _ in range(max(retries, 0) + 1):
            vehicle.send(mavlink.MAVLink_param_set_message(vehicle.system_id, vehicle.component_id, wire,
                                                           float(value), kind))
            msg = await next_message(values, timeout_s)
            if msg is None:
                continue
            echoed = float(msg.param_value)
            if not same_value(echoed, value):
                reason = most_relevant(await texts_after_grace(texts))
                why = f": {reason}" if reason else ""
                raise ParamError(name, f"vehicle {vehicle.system_id} refused {name} = {value:g}: it still "
                                       f"holds {echoed:g}{why}")
            return echoed
    # No echo to any PARAM_SET (lost both ways?): the value in force decides.
    current = await read(vehicle, name, timeout_s=timeout_s, retries=0)
    if not same_value(current, value):
        raise ParamError(name, f"vehicle {vehicle.system_id}: no answer to setting {name} = {value:g}; "
                               f"it holds {current:g}")
    return current
