"""Location report 0x0200 and batch upload 0x0704, and a location as the hub's :class:`~devices.payloads.Fix`.

A location body: alarm flags DWORD, status flags DWORD, latitude and longitude DWORD (1e-6 degree; the status
bits 2 and 3 say south and west), altitude WORD (m), speed WORD (1/10 km/h), direction WORD (0-359, clockwise
from north), time BCD[6] YYMMDDhhmmss in UTC+8, then additional items (id BYTE, length BYTE, value).

A location is never refused for its clock: an impossible time is ``ts_ms = None`` so that an emergency alarm
still gets through; :func:`to_fix` refuses it then ("bad_time"), the alarm bits are read all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final

from devices.payloads import Fix
from jt808.errors import Jt808Error
from jt808.fields import Reader, bcd_encode

__all__ = [
    "ALARM_EMERGENCY", "STATUS_ACC", "STATUS_POSITIONED", "STATUS_SOUTH", "STATUS_WEST", "BatchLocation",
    "Location", "decode_batch", "decode_location", "encode_batch", "encode_location", "to_fix",
]

ALARM_EMERGENCY: Final = 1 << 0  # the terminal's emergency (SOS) button
STATUS_ACC: Final = 1 << 0
STATUS_POSITIONED: Final = 1 << 1
STATUS_SOUTH: Final = 1 << 2
STATUS_WEST: Final = 1 << 3
CHINA_TZ: Final = timezone(timedelta(hours=8))

# Additional items decoded into fields: id -> (field, value size in bytes).
_ITEMS: Final = {0x01: ("mileage", 4), 0x02: ("fuel", 2), 0x03: ("recorder_speed", 2), 0x25: ("vehicle_signal", 4),
                 0x30: ("signal", 1), 0x31: ("satellites", 1)}
_BASE_SIZE: Final = 28


@dataclass(frozen=True, slots=True)
class Location:
    alarm: int
    status: int
    lat_e6: int  # as on the wire: unsigned, the hemisphere is in the status bits
    lon_e6: int
    altitude_m: int
    speed_dkmh: int  # 1/10 km/h
    direction: int
    ts_ms: int | None  # epoch ms; None when the terminal's time is no calendar time (all zeros, month 13, ...)
    mileage: int | None = None  # item 0x01, 1/10 km
    fuel: int | None = None  # item 0x02, 1/10 L
    recorder_speed: int | None = None  # item 0x03, 1/10 km/h from the driving recorder
    vehicle_signal: int | None = None  # item 0x25, extended vehicle signal bits
    signal: int | None = None  # item 0x30, network signal strength
    satellites: int | None = None  # item 0x31, GNSS satellites in use
    extra: tuple[tuple[int, bytes], ...] = ()  # every other item, or a known one of a wrong size, as sent

    @property
    def emergency(self) -> bool:
        return bool(self.alarm & ALARM_EMERGENCY)

    @property
    def positioned(self) -> bool:
        return bool(self.status & STATUS_POSITIONED)

    @property
    def lat(self) -> float:
        return (-1 if self.status & STATUS_SOUTH else 1) * self.lat_e6 / 1e6

    @property
    def lon(self) -> float:
        return (-1 if self.status & STATUS_WEST else 1) * self.lon_e6 / 1e6

    @property
    def speed_kmh(self) -> float:
        return self.speed_dkmh / 10


@dataclass(frozen=True, slots=True)
class BatchLocation:
    """0x0704. A bad item costs only itself: its position and reason are in ``rejected``."""

    kind: int  # 0 regular batch, 1 reports the terminal held while out of coverage (blind area)
    locations: tuple[Location, ...]
    rejected: tuple[tuple[int, str], ...] = ()


def _time_ms(digits: str) -> int | None:
    try:
        moment = datetime(2000 + int(digits[0:2]), int(digits[2:4]), int(digits[4:6]), int(digits[6:8]),
                          int(digits[8:10]), int(digits[10:12]), tzinfo=CHINA_TZ)
    except ValueError:
        return None
    return int(moment.timestamp()) * 1000


def _time_bcd(ts_ms: int | None) -> bytes:
    if ts_ms is None:
        return bytes(6)
    moment = datetime.fromtimestamp(ts_ms // 1000, CHINA_TZ)
    if not 2000 <= moment.year <= 2099:
        raise ValueError(f"{moment} cannot be written as YYMMDDhhmmss")
    return bcd_encode(moment.strftime("%y%m%d%H%M%S"), 6)


def decode_location(body: bytes) -> Location:
    reader = Reader(body)
    alarm, status, lat, lon = reader.u32(), reader.u32(), reader.u32(), reader.u32()
    altitude, speed, direction = reader.u16(), reader.u16(), reader.u16()
    ts_ms = _time_ms(reader.bcd(6))
    known: dict[str, int] = {}
    extra: list[tuple[int, bytes]] = []
    while reader.left:
        item_id, size = reader.u8(), reader.u8()
        value = reader.take(size)
        field = _ITEMS.get(item_id)
        if field is not None and field[1] == size and field[0] not in known:
            known[field[0]] = int.from_bytes(value, "big")
        else:
            extra.append((item_id, value))
    return Location(alarm, status, lat, lon, altitude, speed, direction, ts_ms, extra=tuple(extra),
                    **known)


def encode_location(location: Location) -> bytes:
    """The body; known items in id order, then ``extra`` as given."""
    out = bytearray()
    for value in (location.alarm, location.status, location.lat_e6, location.lon_e6):
        out += value.to_bytes(4, "big")
    for value in (location.altitude_m, location.speed_dkmh, location.direction):
        out += value.to_bytes(2, "big")
    out += _time_bcd(location.ts_ms)
    for item_id, (field, size) in sorted(_ITEMS.items()):
        value = getattr(location, field)
        if value is not None:
            out += bytes([item_id, size]) + int(value).to_bytes(size, "big")
    for item_id, raw in location.extra:
        out += bytes([item_id, len(raw)]) + raw
    return bytes(out)


def decode_batch(body: bytes) -> BatchLocation:
    reader = Reader(body)
    count, kind = reader.u16(), reader.u8()
    locations: list[Location] = []
    rejected: list[tuple[int, str]] = []
    index = 0
    while reader.left:
        item = reader.take(reader.u16())
        try:
            locations.append(decode_location(item))
        except Jt808Error as exc:
            rejected.append((index, exc.reason))
        index += 1
    if index != count:
        raise Jt808Error("bad_count", f"{count} items announced, {index} present")
    return BatchLocation(kind, tuple(locations), tuple(rejected))


def encode_batch(batch: BatchLocation) -> bytes:
    out = bytearray(len(batch.locations).to_bytes(2, "big") + bytes([batch.kind]))
    for location in batch.locations:
        item = encode_location(location)
        out += len(item).to_bytes(2, "big") + item
    return bytes(out)


def to_fix(location: Location) -> Fix:
    """The hub's fix: speed in m/s, heading in degrees, the items worth keeping as attributes.

    Refused: a report the terminal marks as not positioned, or a position off the globe ("no_fix"); a report
    without a calendar time ("bad_time"). The caller reads ``location.emergency`` before asking for a fix.
    """
    if not location.positioned:
        raise Jt808Error("no_fix", "status bit 1: not positioned")
    if location.lat_e6 > 90_000_000 or location.lon_e6 > 180_000_000:
        raise Jt808Error("no_fix", f"{location.lat_e6}, {location.lon_e6} is off the globe")
    if location.ts_ms is None:
        raise Jt808Error("bad_time", "the report's time is no calendar time")
    attrs: dict[str, int] = {"alarm": location.alarm, "status": location.status}
    for name in ("mileage", "fuel", "signal"):
        value = getattr(location, name)
        if value is not None:
            attrs[name] = value
    # Values the Fix contract does not allow are left out rather than costing the position.
    heading = float(location.direction) if location.direction < 360 else None
    speed = location.speed_dkmh / 36 if location.speed_dkmh <= 36_000 else None
    return Fix(ts=location.ts_ms, lat=location.lat, lon=location.lon, alt=float(location.altitude_m),
               speed=speed, heading=heading, sats=location.satellites, attrs=attrs)
