"""The composition root connects every signal: no part subscribes itself, so a subscription left out of
`Hub._wire` would go unnoticed until the feature it carries stopped working."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hub.config import Settings
from hub.ingest.feed import LiveFeed
from hub.server import Hub
from hub.signals import AsyncSignal, Signal
from tests.conftest import RunningHub


async def test_a_started_hub_has_every_subscriber_in_order(hub: RunningHub) -> None:
    h = hub.hub
    incidents, video = h.incidents, h.video
    assert incidents is not None and video is not None and h.drones is None
    assert h.pipeline.accepted.subscribers == (incidents.tracker.on_message, video.on_message)
    assert h.feed.snapshot_parts == [incidents.snapshot_part, incidents.alerts.snapshot_part, video.snapshot_part]
    assert incidents.unit_released.subscribers == (video.on_release,)
    assert incidents.closing.subscribers == (video.stop_incident_video,)
    assert incidents.alerts.sos_raised.subscribers == (video.on_sos,)
    assert incidents.follow_up.video_tokens == video.register_token


def _part(name: str) -> Any:
    return SimpleNamespace(**{name: lambda *args: None})


def test_with_drones_their_part_and_release_come_after_the_video() -> None:
    hub = Hub(Settings())
    hub.pipeline = SimpleNamespace(accepted=Signal("accepted"))  # type: ignore[assignment]
    hub.feed = LiveFeed(hub.live, lambda: 0)
    unit_released: Signal[[str, str]] = Signal("unit_released")
    incidents = SimpleNamespace(tracker=_part("on_message"), alerts=SimpleNamespace(
        snapshot_part=lambda now: {}, sos_raised=AsyncSignal("sos_raised")), snapshot_part=lambda now: {},
        unit_released=unit_released, closing=AsyncSignal("closing"), follow_up=SimpleNamespace(video_tokens=None))
    video = SimpleNamespace(on_message=lambda m: None, snapshot_part=lambda now: {}, on_release=lambda i, u: None,
                            stop_incident_video=lambda i: None, on_sos=lambda d, u, i: None,
                            register_token=lambda c, d, u: None)
    drones = SimpleNamespace(snapshot_part=lambda now: {}, unit_released=lambda i, u: None)
    hub._wire(incidents, video, drones)  # type: ignore[arg-type]
    assert hub.feed.snapshot_parts == [incidents.snapshot_part, incidents.alerts.snapshot_part,
                                       video.snapshot_part, drones.snapshot_part]
    assert unit_released.subscribers == (video.on_release, drones.unit_released)
