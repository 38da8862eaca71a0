"""The MANSCDP bodies the hub sends: Catalog and DeviceInfo queries, the MobilePosition subscription, the alarm
acknowledgment.

Serialised as devices expect them: declared ``GB2312`` and encoded with GB18030 (its superset, identical for the
ASCII these bodies hold), or declared and encoded UTF-8 on request. The arguments come from the hub, not from a
device: a bad one is the caller's defect and raises ``ValueError``.
"""

from __future__ import annotations

from typing import Final
from xml.sax.saxutils import escape

from gb28181.manscdp_fields import ManscdpError, check_device_id

__all__ = ["QUERY_TYPES", "build_alarm_ack", "build_mobile_position_subscription", "build_query"]

QUERY_TYPES: Final = frozenset({"Catalog", "DeviceInfo"})
_MAX_SN: Final = 2**63 - 1


def build_query(cmd_type: str, sn: int, device_id: str, *, utf8: bool = False) -> bytes:
    """``<Query>`` of ``cmd_type`` (Catalog or DeviceInfo) for ``device_id``."""
    if cmd_type not in QUERY_TYPES:
        raise ValueError(f"no query of CmdType {cmd_type!r}")
    return _serialise("Query", [("CmdType", cmd_type), ("SN", _sn(sn)), ("DeviceID", _device_id(device_id))], utf8)


def build_mobile_position_subscription(sn: int, device_id: str, interval_s: int = 5, *, utf8: bool = False) -> bytes:
    """The body of the SUBSCRIBE that asks ``device_id`` for its position every ``interval_s`` seconds."""
    if not 1 <= interval_s <= 86_400:
        raise ValueError(f"interval {interval_s} s is outside 1..86400")
    fields = [("CmdType", "MobilePosition"), ("SN", _sn(sn)), ("DeviceID", _device_id(device_id)),
              ("Interval", str(interval_s))]
    return _serialise("Query", fields, utf8)


def build_alarm_ack(sn: int, device_id: str, *, utf8: bool = False) -> bytes:
    """The ``<Response>`` the standard asks for after the SIP 200 of an alarm Notify (the same SN and DeviceID)."""
    fields = [("CmdType", "Alarm"), ("SN", _sn(sn)), ("DeviceID", _device_id(device_id)), ("Result", "OK")]
    return _serialise("Response", fields, utf8)


def _sn(sn: int) -> str:
    if not 0 <= sn <= _MAX_SN:
        raise ValueError(f"SN {sn} is outside 0..2**63-1")
    return str(sn)


def _device_id(device_id: str) -> str:
    try:
        return check_device_id(device_id)
    except ManscdpError as exc:
        raise ValueError(exc.detail) from None


def _serialise(root: str, fields: list[tuple[str, str]], utf8: bool) -> bytes:
    label, codec = ("UTF-8", "utf-8") if utf8 else ("GB2312", "gb18030")
    lines = [f'<?xml version="1.0" encoding="{label}"?>', f"<{root}>"]
    lines += [f"<{tag}>{escape(value)}</{tag}>" for tag, value in fields]
    lines.append(f"</{root}>")
    return ("\r\n".join(lines) + "\r\n").encode(codec)
