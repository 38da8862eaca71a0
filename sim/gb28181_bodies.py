"""The MANSCDP bodies a GB/T 28181-2016 camera sends: keepalive, position, alarm and its answers to queries.

Pure: the time and the values are passed in. Bodies are declared ``GB2312`` and encoded with GB18030 (its
superset, identical for ASCII), as the standard's devices send them; ``utf8=True`` gives what some 2022 devices
send instead. Times are local time without a zone (``YYYY-MM-DDTHH:MM:SS``), as the standard's examples write
them; the zone is the device's configuration (Beijing time by default).

Channel ids: a camera's video channel gets the device id with the type code (digits 11-13) set to ``131``
(camera) and the serial raised by the channel's index, so a body camera registered as an IPC (type 132) reports
one channel ``...131...`` and an INVITE must name that channel, as real devices expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final
from xml.sax.saxutils import escape

__all__ = [
    "CHANNEL_TYPE",
    "Channel",
    "alarm",
    "catalog_pages",
    "channel_ids",
    "device_info",
    "keepalive",
    "local_time",
    "mobile_position",
]

CHANNEL_TYPE: Final = "131"
_SERIALS: Final = 10**6


@dataclass(frozen=True, slots=True)
class Channel:
    """One catalog item: a video channel of the device and where it is."""

    channel_id: str
    name: str
    lat: float
    lon: float


def channel_ids(device_id: str, count: int) -> list[str]:
    """The ids of ``count`` video channels of ``device_id`` (see the module's docstring)."""
    if count < 1:
        raise ValueError("a camera has at least one channel")
    serial = int(device_id[14:])
    return [f"{device_id[:10]}{CHANNEL_TYPE}{device_id[13]}{(serial + k) % _SERIALS:06d}" for k in range(count)]


def local_time(epoch_s: float, utc_offset_min: int) -> str:
    """``epoch_s`` as the device's local time ``YYYY-MM-DDTHH:MM:SS`` at ``utc_offset_min`` east of UTC."""
    zone = timezone(timedelta(minutes=utc_offset_min))
    return datetime.fromtimestamp(epoch_s, zone).strftime("%Y-%m-%dT%H:%M:%S")


def _serialise(root: str, fields: Sequence[tuple[str, str]], utf8: bool, tail: str = "") -> bytes:
    label, codec = ("UTF-8", "utf-8") if utf8 else ("GB2312", "gb18030")
    lines = [f'<?xml version="1.0" encoding="{label}"?>', f"<{root}>"]
    lines += [f"<{tag}>{escape(value)}</{tag}>" for tag, value in fields]
    if tail:
        lines.append(tail)
    lines.append(f"</{root}>")
    return ("\r\n".join(lines) + "\r\n").encode(codec)


def _coordinate(value: float) -> str:
    return f"{value:.6f}"


def keepalive(sn: int, device_id: str, *, utf8: bool = False) -> bytes:
    return _serialise("Notify", [("CmdType", "Keepalive"), ("SN", str(sn)), ("DeviceID", device_id),
                                 ("Status", "OK")], utf8)


def mobile_position(sn: int, device_id: str, *, time: str, lat: float, lon: float, speed_kmh: float,
                    heading_deg: float, utf8: bool = False) -> bytes:
    """A ``MobilePosition`` notification: speed in km/h, direction clockwise from north in [0, 360)."""
    fields = [("CmdType", "MobilePosition"), ("SN", str(sn)), ("DeviceID", device_id), ("Time", time),
              ("Longitude", _coordinate(lon)), ("Latitude", _coordinate(lat)),
              ("Speed", f"{max(speed_kmh, 0.0):.1f}"), ("Direction", f"{heading_deg % 360.0:.1f}"),
              ("Altitude", "0")]
    return _serialise("Notify", fields, utf8)


def alarm(sn: int, device_id: str, *, time: str, priority: int, method: int, description: str,
          lat: float, lon: float, alarm_type: int | None = None, utf8: bool = False) -> bytes:
    """An ``Alarm`` notification (priority 1..4, method 1..7) with the device's position."""
    if not 1 <= priority <= 4 or not 1 <= method <= 7:
        raise ValueError(f"alarm priority {priority} / method {method} outside 1..4 / 1..7")
    fields = [("CmdType", "Alarm"), ("SN", str(sn)), ("DeviceID", device_id), ("AlarmPriority", str(priority)),
              ("AlarmMethod", str(method)), ("AlarmTime", time), ("AlarmDescription", description),
              ("Longitude", _coordinate(lon)), ("Latitude", _coordinate(lat))]
    info = "" if alarm_type is None else f"<Info>\r\n<AlarmType>{alarm_type}</AlarmType>\r\n</Info>"
    return _serialise("Notify", fields, utf8, info)


def _item(channel: Channel, device_id: str, manufacturer: str, model: str) -> str:
    fields = [("DeviceID", channel.channel_id), ("Name", channel.name), ("Manufacturer", manufacturer),
              ("Model", model), ("Owner", "Owner"), ("CivilCode", device_id[:6]), ("Address", "Address"),
              ("Parental", "0"), ("ParentID", device_id), ("SafetyWay", "0"), ("RegisterWay", "1"),
              ("Secrecy", "0"), ("Status", "ON"), ("Longitude", _coordinate(channel.lon)),
              ("Latitude", _coordinate(channel.lat))]
    inner = "\r\n".join(f"<{tag}>{escape(value)}</{tag}>" for tag, value in fields)
    return f"<Item>\r\n{inner}\r\n</Item>"


def catalog_pages(sn: int, device_id: str, channels: Sequence[Channel], *, per_page: int, manufacturer: str,
                  model: str, utf8: bool = False) -> list[bytes]:
    """The ``Catalog`` response split into MESSAGEs of at most ``per_page`` items, each with the full SumNum."""
    if per_page < 1:
        raise ValueError("a catalog page holds at least one item")
    pages: list[bytes] = []
    for start in range(0, max(len(channels), 1), per_page):
        chunk = channels[start : start + per_page]
        items = "\r\n".join(_item(c, device_id, manufacturer, model) for c in chunk)
        listing = f'<DeviceList Num="{len(chunk)}">\r\n{items}\r\n</DeviceList>'
        fields = [("CmdType", "Catalog"), ("SN", str(sn)), ("DeviceID", device_id), ("SumNum", str(len(channels)))]
        pages.append(_serialise("Response", fields, utf8, listing))
    return pages


def device_info(sn: int, device_id: str, *, name: str, manufacturer: str, model: str, firmware: str,
                channels: int, utf8: bool = False) -> bytes:
    fields = [("CmdType", "DeviceInfo"), ("SN", str(sn)), ("DeviceID", device_id), ("DeviceName", name),
              ("Result", "OK"), ("Manufacturer", manufacturer), ("Model", model), ("Firmware", firmware),
              ("Channel", str(channels))]
    return _serialise("Response", fields, utf8)
