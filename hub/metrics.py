"""Prometheus metrics, read from the hub's own counters at scrape time.

Counting stays plain integer arithmetic on the hot path; this collector turns
the counters into Prometheus families only when ``/metrics`` is scraped.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drone.signing import REFUSAL_REASONS
from hub.drones.service import DroneService
from hub.gateways.gb28181 import Gb28181Gateway
from hub.gateways.gb28181.video import CameraVideo
from hub.gateways.jt808.gateway import Jt808Gateway
from hub.incidents.service import IncidentService
from hub.ingest.bridge import MqttBridge
from hub.ingest.feed import LiveFeed
from hub.ingest.live import LiveState
from hub.ingest.pipeline import Pipeline
from hub.ingest.writer import BatchWriter
from hub.storage import Database
from hub.video.desk import VideoDesk


class Parts(Protocol):
    """The running hub as the collector reads it (hub.server.Hub fits; the metrics do not import the server)."""

    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def writer(self) -> BatchWriter: ...
    @property
    def db(self) -> Database: ...
    @property
    def bridge(self) -> MqttBridge | None: ...
    @property
    def feed(self) -> LiveFeed: ...
    @property
    def live(self) -> LiveState: ...
    @property
    def incidents(self) -> IncidentService | None: ...
    @property
    def video(self) -> VideoDesk | None: ...
    @property
    def drones(self) -> DroneService | None: ...
    @property
    def gb28181(self) -> Gb28181Gateway | None: ...
    @property
    def camera_video(self) -> CameraVideo | None: ...
    @property
    def jt808(self) -> Jt808Gateway | None: ...


class RateMeter:
    """Events per second over a sliding window of samples of a monotonic counter."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def rate(self, total: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        first_t, first_n = self._samples[0]
        return (total - first_n) / (now - first_t) if now > first_t else 0.0


class HubCollector(Collector):
    def __init__(self, hub: Parts) -> None:
        self.hub = hub
        self.ingest_rate = RateMeter()

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        pipe, writer = hub.pipeline, hub.writer
        messages = CounterMetricFamily("fieldhub_messages", "MQTT messages received", labels=["channel"])
        for channel, count in pipe.messages.items():
            messages.add_metric([channel], count)
        yield messages
        yield CounterMetricFamily("fieldhub_fixes_accepted", "Fixes that passed validation",
                                  value=pipe.fixes_accepted)
        yield CounterMetricFamily("fieldhub_fixes_stored", "Fixes committed to the database",
                                  value=writer.fixes_written)
        duplicates = CounterMetricFamily("fieldhub_duplicates", "Duplicate fixes dropped", labels=["where"])
        duplicates.add_metric(["memory"], pipe.duplicates_dropped)
        duplicates.add_metric(["database"], writer.fixes_duplicate)
        yield duplicates
        rejects = CounterMetricFamily("fieldhub_rejects", "Rejected payloads by reason", labels=["reason"])
        for reason, count in sorted(pipe.rejects.items()):
            rejects.add_metric([reason], count)
        yield rejects
        yield GaugeMetricFamily("fieldhub_ingest_rate", "Fixes stored per second (10 s window)",
                                value=self.ingest_rate.rate(writer.fixes_written))
        yield GaugeMetricFamily("fieldhub_write_lag_seconds",
                                "Age of the oldest row of the last committed batch at commit",
                                value=writer.last_lag_s)
        depth = GaugeMetricFamily("fieldhub_queue_depth", "Items waiting", labels=["queue"])
        depth.add_metric(["inbox"], pipe.inbox_depth)
        depth.add_metric(["writer"], writer.pending_rows)
        yield depth
        yield GaugeMetricFamily("fieldhub_database_up", "1 when the last write succeeded",
                                value=1 if writer.available else 0)
        refused = CounterMetricFamily("fieldhub_writer_refused", "Rows the database refused for what they held "
                                      "(stored as rejects; lost: their reject was refused too), and batch splits "
                                      "to find them", labels=["counter"])
        for name, count in (("rows_refused", writer.rows_refused), ("rows_lost", writer.rows_lost),
                            ("splits", writer.splits)):
            refused.add_metric([name], count)
        yield refused
        yield CounterMetricFamily("fieldhub_qos1_refused", "QoS 1 messages refused unacknowledged at the inbox's "
                                  "hard cap (the broker sends them again)", value=pipe.qos1_refused)
        mode = GaugeMetricFamily("fieldhub_storage_mode", "Storage mode of the fixes table, and why (always 1)",
                                 labels=["mode", "reason"])
        mode.add_metric([hub.db.mode, hub.db.mode_reason], 1)
        yield mode
        yield GaugeMetricFamily("fieldhub_mqtt_connected", "1 when the MQTT session is up",
                                value=1 if hub.bridge is not None and hub.bridge.connected.is_set() else 0)
        yield GaugeMetricFamily("fieldhub_live_clients", "Connected live (WebSocket) clients",
                                value=hub.feed.client_count)
        yield GaugeMetricFamily("fieldhub_devices_tracked", "Devices in the live picture",
                                value=len(hub.live.devices))
        yield GaugeMetricFamily("fieldhub_units_tracked", "Units in the live picture", value=len(hub.live.units))
        stages = CounterMetricFamily("fieldhub_stage_seconds", "CPU time spent per pipeline stage",
                                     labels=["stage"])
        for stage, seconds in pipe.stage_seconds.items():
            stages.add_metric([stage], seconds)
        yield stages
        if hub.incidents is not None:
            yield from _incident_metrics(hub)
        if hub.video is not None:
            yield from _video_metrics(hub)
        if hub.drones is not None:
            yield from _drone_metrics(hub)
        if hub.gb28181 is not None:
            yield from _gb28181_metrics(hub.gb28181)
        if hub.jt808 is not None:
            yield from _jt808_metrics(hub.jt808)
        if hub.camera_video is not None:
            video = hub.camera_video
            yield GaugeMetricFamily("fieldhub_gb28181_streams", "GB/T 28181 camera streams live now",
                                    value=video.live)
            yield _labelled("fieldhub_gb28181_video", "GB/T 28181 video sessions: INVITEs, streams, ends by reason",
                            "event", dict(video.counters))
            yield _labelled("fieldhub_gb28181_media", "RTP/PS of the live camera streams: packets, frames, drops by "
                            "reason", "event", dict(video.media_counters()))


def _incident_metrics(hub: Parts) -> Iterator[Metric]:
    svc = hub.incidents
    assert svc is not None
    yield GaugeMetricFamily("fieldhub_incidents_open", "Open incidents held by the service",
                            value=sum(1 for _ in svc.open_incidents()))
    yield CounterMetricFamily("fieldhub_incident_events_refused",
                              "Device/detector events the incident state machine refused", value=svc.refused)
    yield GaugeMetricFamily("fieldhub_response_queue_depth", "Dispatch-related messages waiting",
                            value=svc.tracker.backlog)
    yield CounterMetricFamily("fieldhub_response_queue_dropped", "Dispatch-related messages lost to a full queue",
                              value=svc.tracker.dropped)
    ignored = CounterMetricFamily("fieldhub_device_events_ignored",
                                  "Device claims (ack, contact, SOS, detected milestones) the incident rules ignored "
                                  "or corrected, by reason", labels=["reason"])
    for reason, count in sorted(svc.ignored.items()):
        ignored.add_metric([reason], count)
    yield ignored
    yield GaugeMetricFamily("fieldhub_incident_writes_waiting", "Incident writes waiting for the database",
                            value=len(svc.outbox))
    yield CounterMetricFamily("fieldhub_incident_writes_deferred", "Incident writes that had to wait for the database",
                              value=svc.outbox.deferred)
    yield CounterMetricFamily("fieldhub_incident_writes_dropped",
                              "Incident writes lost (the outbox full, or failed for another reason than an outage)",
                              value=svc.outbox.dropped)
    yield CounterMetricFamily("fieldhub_live_extras_dropped",
                              "Live-feed messages dropped within one frame (the clients got a snapshot instead)",
                              value=hub.feed.extras_dropped)
    alerts = CounterMetricFamily("fieldhub_alerts", "Alerts raised", labels=["kind"])
    for kind, count in sorted(svc.alerts.counts.items()):
        alerts.add_metric([kind], count)
    yield alerts
    if svc.hotline is not None:
        hl = svc.hotline
        yield CounterMetricFamily("fieldhub_hotline_accepted", "Hand-overs the 12345 hotline accepted",
                                  value=hl.accepted)
        yield CounterMetricFamily("fieldhub_hotline_attempts", "Hand-over POSTs made", value=hl.attempts)
        failures = CounterMetricFamily("fieldhub_hotline_failures", "Failed hand-over attempts", labels=["reason"])
        for reason, count in sorted(hl.failures.items()):
            failures.add_metric([reason], count)
        yield failures
        yield GaugeMetricFamily("fieldhub_hotline_pending", "Diverted incidents not handed over yet",
                                value=len(hl.pending))


_GAUGES = ("streams", "viewers", "transcoders")


def _video_metrics(hub: Parts) -> Iterator[Metric]:
    assert hub.video is not None
    stats = hub.video.service.stats()
    for name in _GAUGES:
        yield GaugeMetricFamily(f"fieldhub_video_{name}", f"Live video {name}", value=stats.get(name, 0))
    relay = CounterMetricFamily("fieldhub_video_relay", "Relay counters (frames in/out, key frame requests, "
                                "frames gated or dropped for slow viewers)", labels=["counter"])
    for name, value in sorted(stats.items()):
        if name not in _GAUGES:
            relay.add_metric([name], value)
    yield relay
    recorded = CounterMetricFamily("fieldhub_video_recorder", "Recorder counters of ended streams (frames "
                                   "written, drops by reason)", labels=["counter"])
    for name, value in sorted(hub.video.recorded.items()):
        recorded.add_metric([name], value)
    yield recorded


def _drone_metrics(hub: Parts) -> Iterator[Metric]:
    assert hub.drones is not None
    stats = hub.drones.link.stats
    ignored = CounterMetricFamily("fieldhub_mavlink_ignored", "MAVLink frames ignored at the link, by reason "
                                  "(a system outside the fleet, a fleet drone without key or opt-in, a bad "
                                  "or missing signature)", labels=["reason"])
    for reason in REFUSAL_REASONS:
        ignored.add_metric([reason], stats.get(reason, 0))
    yield ignored
    yield CounterMetricFamily("fieldhub_mavlink_received", "MAVLink messages accepted", value=stats.get("received", 0))


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def _labelled(name: str, doc: str, label: str, counts: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, count in sorted(counts.items()):
        family.add_metric([key], count)
    return family


def _jt808_metrics(gw: Jt808Gateway) -> Iterator[Metric]:
    yield GaugeMetricFamily("fieldhub_jt808_connections", "JT/T 808 TCP connections open now", value=gw.connected)
    yield GaugeMetricFamily("fieldhub_jt808_authenticated", "JT/T 808 terminals authenticated now",
                            value=gw.authenticated)
    yield _labelled("fieldhub_jt808_events", "JT/T 808 gateway events (registrations, fixes, sos, acks, commands, "
                    "...)", "event", dict(gw.counters))
    yield _labelled("fieldhub_jt808_rejected", "JT/T 808 messages and location items refused, by reason", "reason",
                    dict(gw.rejects))
    yield _labelled("fieldhub_jt808_dropped", "JT/T 808 frames and connections refused by the server, by reason",
                    "reason", dict(gw.drops))


def _gb28181_metrics(gw: Gb28181Gateway) -> Iterator[Metric]:
    yield GaugeMetricFamily("fieldhub_gb28181_registered", "GB/T 28181 devices registered now",
                            value=gw.registered_devices)
    yield _labelled("fieldhub_gb28181_events", "GB/T 28181 gateway events (fixes, alarms, keepalives, ...)", "event",
                    dict(gw.counters))
    yield _labelled("fieldhub_gb28181_sip", "GB/T 28181 SIP registrar events (registered, challenged, "
                    "auth_failed, offline, ...)", "event", dict(gw.registrar.counters))
    yield _labelled("fieldhub_gb28181_rejected", "GB/T 28181 message bodies refused, by reason", "reason",
                    dict(gw.rejects))
    yield _labelled("fieldhub_gb28181_dropped", "SIP datagrams and connections refused by the transports, by reason",
                    "reason", dict(gw.drops))
    yield _labelled("fieldhub_gb28181_queries", "What the hub asked of devices: subscriptions, catalogs, device "
                    "info, and their failures", "event", dict(gw.queries.counters))
