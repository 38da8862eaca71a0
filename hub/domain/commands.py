"""The commands the hub builds for devices (SPEC 2): dispatch, video_start, video_stop, and their ids."""

from __future__ import annotations

import secrets
import uuid

from devices.payloads import Command
from hub.domain.incident import Incident

__all__ = ["dispatch_command", "new_cmd_id", "video_start_command", "video_stop_command"]


def new_cmd_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def dispatch_command(incident: Incident, cmd_id: str, ts: int) -> Command:
    c = incident.created
    assert c is not None
    return Command(cmd_id, ts, "dispatch", {"incident": {
        "id": incident.id, "category": c.category, "priority": c.priority, "lat": c.lat, "lon": c.lon,
        "address": c.address, "summary": c.summary}})


def video_start_command(device_id: str, incident_id: str | None, base_url: str, now_ms: int,
                        token_ttl_ms: int) -> Command:
    """SPEC `video_start`: where to publish (WHIP) and a short-lived random token. It also asks for a key
    frame every 2 s: a late viewer or a new recording segment starts at one, and publishers (aiortc,
    browsers) otherwise send them only when asked."""
    return Command(new_cmd_id("v"), now_ms, "video_start", {
        "whip_url": f"{base_url.rstrip('/')}/whip/{device_id}", "token": secrets.token_urlsafe(24),
        "token_expires": now_ms + token_ttl_ms, "incident_id": incident_id, "keyframe_interval_ms": 2000})


def video_stop_command(incident_id: str | None, now_ms: int) -> Command:
    """SPEC `video_stop`: the incident's video is no longer wanted (its token stops publishing too)."""
    return Command(new_cmd_id("vs"), now_ms, "video_stop", {"incident_id": incident_id})
