"""The hub's lifecycle: compose the adapters, run, shut down in order.

Start-up: embedded services (when no URL is configured) -> database (migrations, partitions) -> live picture
loaded from the database -> writer -> pipeline -> live feed -> MQTT session -> services (incidents, video, drones,
gateways). Shutdown runs the same list backwards: stop taking MQTT messages, drain the pipeline, flush the writer,
close the database, stop the embedded services.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from prometheus_client import CollectorRegistry

from devices.broker import BrokerAddress
from devices.clock import now_ms
from devices.tasks import cancel_and_wait
from geo.roads import RoadGraph
from hub.access import auth
from hub.access.device_sync import DeviceSync
from hub.access.provisioning import Provisioner, gateway_endpoints, sip_server
from hub.access.tokens import TokenRefused, TokenRegistry
from hub.config import Settings
from hub.domain.dispatch import Recommender
from hub.domain.ratelimit import Limit
from hub.drones.fleet import load_fleet
from hub.drones.service import DroneService
from hub.errors import HubStartError, one_line
from hub.gateways.commands import CommandRouter
from hub.gateways.compose import Gateways
from hub.gateways.gb28181 import Gb28181Gateway
from hub.gateways.gb28181.compose import Revocations, start_gb28181
from hub.gateways.gb28181.video import CameraVideo
from hub.gateways.jt808.gateway import Jt808Gateway
from hub.gateways.osmand.gateway import OsmAndGateway
from hub.gateways.owntracks.gateway import OwnTracksGateway
from hub.gateways.tak.compose import TakLink
from hub.incidents.config import ResponseOptions, load_incident_config
from hub.incidents.hotline import HotlineHandOver
from hub.incidents.service import IncidentService
from hub.infra.broker import BrokerLinks, external_links, start_embedded_broker
from hub.infra.embedded import EmbeddedPostgres, MosquittoBroker
from hub.infra.tls import https_context
from hub.ingest.bridge import MqttBridge
from hub.ingest.feed import LiveFeed
from hub.ingest.live import LiveState
from hub.ingest.pipeline import Pipeline
from hub.ingest.writer import BatchWriter
from hub.logsafe import redact_url
from hub.metrics import HubCollector
from hub.storage import Database
from hub.storage.audit import AuditLog
from hub.storage.device_logins import DeviceLoginStore
from hub.storage.drones import DroneAudit
from hub.storage.gateway_logins import GatewayLoginStore
from hub.storage.incidents import IncidentStore
from hub.storage.sip_logins import SipLoginStore
from hub.storage.tokens import TokenStore
from hub.storage.video import VideoStore
from hub.video.desk import VideoDesk
from hub.web.overlays import city_overlays, load_overlays

log = logging.getLogger(__name__)

# Builds the hub's road network (base map, default overlays, dispatch ETAs) when first needed. The process's
# composition root chooses it (`fieldhub serve`: the simulated city of `city_seed`); the hub never builds one.
CityProvider = Callable[[], RoadGraph]


def _broker_logins(settings: Settings) -> frozenset[str]:
    """The broker logins that are the hub's own (never a device's name)."""
    names = {settings.mqtt_client_id}
    if settings.mqtt_url:
        names.add(BrokerAddress.parse(settings.mqtt_url).username or settings.mqtt_client_id)
    return frozenset(names)


class Hub:
    """One running hub. Use as ``async with Hub(settings, city=provider) as hub: await serve(hub)`` (serve: in
    :mod:`hub.api.app`).

    ``city`` gives the road network of the base map, of the default overlays and (``road_graph == "city"``) of
    dispatch ETAs. Without it the hub starts only if it needs none at start-up (a `map_overlays` file and
    ``road_graph == "none"``), and then answers the base map and map settings with an error.
    """

    def __init__(self, settings: Settings | None = None, *, city: CityProvider | None = None) -> None:
        self.settings = settings or Settings()
        self._city_provider = city
        self.live = LiveState(stale_after_ms=int(self.settings.stale_after_s * 1000),
                              max_future_ms=int(self.settings.max_future_skew_s * 1000))
        self.feed = LiveFeed(self.live, now_ms, interval_s=self.settings.live_frame_interval_s,
                             client_queue=self.settings.live_client_queue)
        self.bridge: MqttBridge | None = None
        self.broker_links: BrokerLinks | None = None
        self.provisioner: Provisioner | None = None
        self.mqtt_url = self.settings.mqtt_url
        self.database_url = self.settings.database_url
        self.mqtt_protocol = self.settings.mqtt_protocol
        self.registry = CollectorRegistry()
        self._stack = AsyncExitStack()
        self.auth_failures = auth.FailedAuthLimiter(self.settings.auth_failures_per_min,
                                                    self.settings.auth_failures_burst)
        self._tasks: list[asyncio.Task[None]] = []
        self._base_map: dict[str, Any] | None = None
        self._city: RoadGraph | None = None
        self._overlays: dict[str, Any] | None = None
        self.bootstrap_secret: str | None = None
        self.incidents: IncidentService | None = None
        self.drones: DroneService | None = None
        self.video: VideoDesk | None = None
        self.gb28181: Gb28181Gateway | None = None
        self._sip_revocations: Revocations | None = None
        self.camera_video: CameraVideo | None = None
        # Gateways of devices that speak their own protocol (issue 17): JT/T 808 terminals, ...
        self.gateways = Gateways()
        self.jt808: Jt808Gateway | None = None
        self.owntracks: OwnTracksGateway | None = None
        self.osmand: OsmAndGateway | None = None
        # Device commands: to the broker, or to the gateway that owns the device (a GB/T 28181 camera).
        self.commands = CommandRouter(self._publish_mqtt)
        self._phase = "configuration"  # what _start is doing: names the part that failed in HubStartError
        self.https: ssl.SSLContext | None = None  # HTTPS when the settings name a certificate and key

    # ------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Hub:
        try:
            await self._start()
        except BaseException as exc:
            # Stop what did start (embedded services included) before saying why, so nothing is left running.
            try:
                await self._stack.aclose()
            except Exception:
                log.exception("stopping the parts that had started failed")
            if isinstance(exc, Exception) and not isinstance(exc, HubStartError):
                raise HubStartError(f"{self._phase}: {one_line(exc)}") from exc
            raise
        return self

    async def _start(self) -> None:
        s = self.settings
        stack = self._stack
        config = load_incident_config(s.incident_config)  # a bad file stops the start-up here, before anything runs
        self.overlays()  # likewise a bad overlays file
        fleet = load_fleet(s.drones) if s.drones else []  # and a bad drone fleet file
        self.https = https_context(s.tls_cert, s.tls_key)  # and a bad certificate or key
        self._phase = "embedded database"
        if self.database_url is None:
            pg = EmbeddedPostgres(s.data_dir / "pg")
            self.database_url = await asyncio.to_thread(pg.start)
            stack.callback(pg.close)
        self._phase = "storage"
        self.db = await stack.enter_async_context(Database(
            self.database_url, partition_days=s.partition_days, partitions_ahead=s.partitions_ahead,
            retention_days=s.retention_days, compress_after_days=s.compress_after_days,
            log_retention_days=s.log_retention_days))
        self.audit = AuditLog(self.db)
        # Every bearer check is answered from memory by the registry, which follows the table by LISTEN/NOTIFY.
        self.tokens = await stack.enter_async_context(TokenRegistry(TokenStore(self.db), self.database_url,
                                                                    s.token_pepper, now_ms))
        # The broker after the database: the embedded one takes its device logins from the table.
        self._phase = "embedded broker"
        logins = DeviceLoginStore(self.db)
        if self.mqtt_url is None:
            if not MosquittoBroker.available():
                raise HubStartError("embedded broker: mosquitto is not installed (apt-get install mosquitto); "
                                    "there is no insecure fallback")
            self.broker_links = await start_embedded_broker(s, logins, stack)
        else:
            self.broker_links = external_links(s)
        self.mqtt_url = self.broker_links.hub_url
        self.provisioner = Provisioner(logins, admin_url=self.broker_links.admin_url,
                                       device_url=self.broker_links.device_url, audit=self.audit,
                                       on_added=self._device_added, pki=self.broker_links.pki,
                                       mtls_url=self.broker_links.mtls_url, reserved=_broker_logins(s),
                                       sip_store=SipLoginStore(self.db), sip_server=sip_server(s))
        if s.mqtt_url is not None:
            self._phase = "broker logins"
            await self.provisioner.reconcile()
        await stack.enter_async_context(DeviceSync(self.database_url, self._device_notified, self._reload_units))
        await self._reload_units()
        self.writer = await stack.enter_async_context(BatchWriter(
            self.db.write, batch_rows=s.write_batch_rows, interval_s=s.write_interval_s, retry_s=s.write_retry_s,
            max_pending_rows=s.write_max_pending_rows, raw_limit=s.rejects_raw_bytes))
        # Stopped after the pipeline has drained (the stack unwinds backwards), before the writer and database.
        stack.push_async_callback(self._stop_incidents)
        self.pipeline = await stack.enter_async_context(Pipeline(
            self.live, self.writer, retention_days=s.retention_days, raw_limit=s.rejects_raw_bytes,
            max_future_ms=int(s.max_future_skew_s * 1000), rate_limits={
                "telemetry": Limit(s.device_telemetry_per_s, s.device_telemetry_burst),
                "fixes": Limit(s.device_fixes_per_s, s.device_fixes_burst),
                "status": Limit(s.device_status_per_s, s.device_status_burst),
                "event": Limit(s.device_events_per_s, s.device_events_burst)},
            catch_up_ms=int(s.device_limits_catch_up_s * 1000)))
        await stack.enter_async_context(self.feed)
        self._phase = "mqtt"
        bridge = MqttBridge(
            self.mqtt_url, self.pipeline, client_id=s.mqtt_client_id, session_expiry_s=s.mqtt_session_expiry_s,
            receive_maximum=s.mqtt_receive_maximum, protocol=self.mqtt_protocol,
            connect_timeout_s=s.mqtt_connect_timeout_s)
        if s.owntracks:  # OwnTracks phones publish on the same broker; their gateway starts with the others
            bridge.routes["owntracks/#"] = self.gateways.owntracks_message
        self.bridge = await stack.enter_async_context(bridge)
        self._phase = "services"
        # Without a URL the hand-overs of diverted incidents wait, visible as `not_configured`.
        hotline = await stack.enter_async_context(HotlineHandOver(
            s.hotline_url, token=s.hotline_token, on_accepted=self._handed_over, clock=now_ms))
        options = ResponseOptions(
            ack_timeout_s=s.ack_timeout_s, ack_resends=s.ack_resends, auto_dispatch_priority=s.auto_dispatch_priority,
            public_base_url=s.base_url(), video_token_ttl_s=s.video_token_ttl_s, sos_incident=s.sos_incident,
            milestone_max_shift_s=s.milestone_max_shift_s, sos_max_distance_m=s.sos_max_distance_m,
            # A drone has arrived over a scene only at its working altitude (hub.domain.hover).
            aerial_min_alt_m=0.7 * s.drone_cruise_alt_m)
        incidents = self.incidents = IncidentService(
            IncidentStore(self.db), self.live, self.feed, self.commands.publish,
            now_ms, config=config, options=options, hotline=hotline,
            recommender=Recommender(self.city() if s.road_graph == "city" else None))
        # Audit rows that meet a database outage wait in the incident outbox, in order with the incident writes.
        self.audit.defer_to(incidents.outbox)
        incidents.audit = self.audit
        await incidents.start()
        # Live video. Its exit (before the incidents stop) refuses new publishes and viewers, closes every peer
        # connection (the streams' ends still reach the database and the log), then closes the recorders.
        video = self.video = await stack.enter_async_context(VideoDesk(
            s, VideoStore(self.db), self.live, self.feed, incidents, now_ms, self.lookup_token))
        if s.mavlink_url:
            self.drones = await stack.enter_async_context(DroneService(
                s, fleet, incidents, self.feed, DroneAudit(self.db), self.pipeline.submit, now_ms, self.put_unit))
        if s.gb28181:
            self._phase = "gb28181"
            await self._start_gb28181(video)
        await self._start_gateways(incidents)
        self._wire(incidents, video, self.drones)
        self.registry.register(HubCollector(self))
        self._tasks.append(asyncio.create_task(self.db.maintain_hourly(), name="partition-maintenance"))
        stack.push_async_callback(self._cancel_tasks)
        if s.bootstrap_token:
            self.bootstrap_secret = s.bootstrap_token
        await self.tokens.bootstrap(s.bootstrap_token, "bootstrap", "dispatcher", "BOOTSTRAP_TOKEN")
        await self.tokens.bootstrap(s.bootstrap_admin_token, "bootstrap-admin", "admin", "BOOTSTRAP_ADMIN_TOKEN")
        # Long-lived start-up objects leave the collector's view; young ones are collected less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(s.gc_threshold, 50, 100)
        log.info("hub up: mqtt %s, database %s (storage %s: %s)", redact_url(self.mqtt_url),
                 redact_url(self.database_url), self.db.mode, self.db.mode_reason)

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _wire(self, incidents: IncidentService, video: VideoDesk, drones: DroneService | None) -> None:
        """The wiring: who hears what. Every subscription of the hub is made here, once its parts have started
        (none subscribes itself), and in the order subscribers are called: a live snapshot merges incidents,
        alerts, video, then drones; a released unit's cameras are stopped before its drone turns home."""
        pipeline, feed = self.pipeline, self.feed
        # Every accepted device message: detectors and acks, then the cameras' own video events.
        pipeline.accepted.connect(incidents.tracker.on_message)
        pipeline.accepted.connect(video.on_message)
        # What a live client gets first.
        feed.snapshot_parts.append(incidents.snapshot_part)
        feed.snapshot_parts.append(incidents.alerts.snapshot_part)
        feed.snapshot_parts.append(video.snapshot_part)
        # An assignment ended (cancel, reassign, divert, close): the unit's cameras stop; a drone turns home.
        incidents.unit_released.connect(video.on_release)
        # An incident closes: its video is stopped first, while the log still takes the entries.
        incidents.closing.connect(video.stop_incident_video)
        # An SOS: the unit's cameras start.
        incidents.alerts.sos_raised.connect(video.on_sos)
        # Not a notification: a video_start goes out only after the desk stored its token (a refusal skips it).
        incidents.follow_up.video_tokens = video.register_token
        # Not a notification: whether a unit's devices can sign for a dispatch (a GB/T 28181 camera cannot).
        incidents.follow_up.can_sign = self.commands.can_sign
        if self.gateways.tak is not None:  # SOS beacons to TAK: raised with the alert, cancelled at its close
            incidents.alerts.sos_raised.connect(self.tak_link.sos_raised)
            incidents.closing.connect(self.tak_link.incident_closing)
        if drones is not None:
            feed.snapshot_parts.append(drones.snapshot_part)
            incidents.unit_released.connect(drones.unit_released)

    async def _start_gb28181(self, desk: VideoDesk) -> None:
        """The SIP server for GB/T 28181 devices and their cameras' video (see hub.gateways.gb28181.compose)."""
        parts = await start_gb28181(self._stack, self.settings, self.db, self.pipeline.submit, desk, now_ms)
        self.gb28181, self.camera_video, self._sip_revocations = parts.gateway, parts.video, parts.revocations
        self.commands.gateways.append(parts.video)
        if self.provisioner is not None:
            self.provisioner.sip_server = sip_server(self.settings, parts.gateway.udp_port)

    async def _start_gateways(self, incidents: IncidentService) -> None:
        """JT/T 808 terminals and phone apps (see hub.gateways.compose); each off unless enabled."""
        self._phase = "gateways"
        g = self.gateways
        tak = self.tak_link = TakLink(self.live, incidents, self.put_unit)
        self.commands.gateways.extend(await g.start(self._stack, self.settings, GatewayLoginStore(self.db),
                                                    self.pipeline.submit, self._publish_mqtt, self.auth_failures, tak))
        self.jt808, self.owntracks, self.osmand = g.jt808, g.owntracks, g.osmand
        if self.provisioner is not None:
            self.provisioner.on_revoked = self.provisioner.on_rotated = self._login_revoked
            self.provisioner.gateways = gateway_endpoints(self.settings, g.jt808.port if g.jt808 else None)

    async def _login_revoked(self, device_id: str) -> None:
        """A device's login was revoked or rotated through this hub: its gateway drops what it held at once."""
        if self._sip_revocations is not None and device_id in self._sip_revocations.devices:
            await self._sip_revocations.revoked(device_id)
        await self.gateways.changed(device_id)

    def _publish_mqtt(self, topic: str, payload: bytes) -> None:
        if self.bridge is None:
            raise HubStartError("a device command before the MQTT session started")
        self.bridge.publish(topic, payload, qos=1)

    async def _handed_over(self, incident_id: str, accepted_at: int, ref: str) -> None:
        if self.incidents is None:
            raise RuntimeError("the incident service is not running yet")
        await self.incidents.handed_over(incident_id, accepted_at, ref)

    async def _stop_incidents(self) -> None:
        if self.incidents is not None:
            await self.incidents.stop()

    async def _cancel_tasks(self) -> None:
        await cancel_and_wait(*self._tasks)

    # ------------------------------------------------------------ operations
    async def _device_added(self, device_id: str, unit_id: str) -> None:
        """A device provisioned onto a unit joins that unit's live picture (its fixes are no longer unknown)."""
        await self._reload_units(unit_id)
        if self._sip_revocations is not None:
            await self._sip_revocations.devices.refresh(device_id)
        await self.gateways.changed(device_id)

    async def _reload_units(self, unit_id: str | None = None) -> None:
        """Re-read ``unit_id`` (every unit: None, after notifications may have been missed) into the live picture."""
        for row in await self.db.load_units(unit_id):
            home = {"lat": row["home_lat"], "lon": row["home_lon"]} if row["home_lat"] is not None else None
            self.live.register_unit(row["unit_id"], row["name"], row["kind"], list(row["devices"]), home,
                                    list(row["capabilities"]))
            for device_id, kind in row["device_kinds"].items():
                self.live.registered_kind(device_id, kind)

    async def _device_notified(self, device_id: str) -> None:
        if self._sip_revocations is not None:
            await self._sip_revocations.changed(device_id)
        await self.gateways.changed(device_id)
        unit = await self.db.scalar("SELECT unit_id FROM devices WHERE device_id = %s", (device_id,))
        known = self.live.devices.get(device_id)
        if unit is not None and (known is None or known.unit_id != unit):
            await self._reload_units(str(unit))

    async def put_unit(self, unit_id: str, body: dict[str, Any]) -> None:
        unit = dict(body, unit_id=unit_id)
        await self.db.upsert_unit(unit)
        self.live.register_unit(unit_id, body["name"], body["kind"], body["devices"], body.get("home"),
                                body.get("capabilities"))

    async def create_token(self, role: str, name: str, expires_in_s: float | None = None) -> str:
        """A new token's secret (ValueError for a bad role, name or lifetime)."""
        secret, _ = await self.tokens.create(name, role, expires_in_s=expires_in_s)
        return secret

    async def lookup_token(self, secret: str) -> dict[str, Any] | None:
        """The token of ``secret`` if it authenticates now (unknown, revoked, expired: None). Answered from
        memory (see :mod:`hub.access.tokens`): at once, and also while the database is away."""
        try:
            row = self.tokens.check(secret)
        except TokenRefused:
            return None
        return {"token_id": row.token_id, "name": row.name, "role": row.role, "device_id": row.device_id}

    def city(self) -> RoadGraph:
        """The road network given at construction: the base map and the road graph for dispatch ETAs."""
        if self._city is None:
            if self._city_provider is None:
                raise HubStartError("configuration: the hub was given no road network (Hub(settings, city=...))")
            self._city = self._city_provider()
        return self._city

    def overlays(self) -> dict[str, Any]:
        if self._overlays is None:
            path = self.settings.map_overlays
            self._overlays = load_overlays(path) if path is not None else city_overlays(self.city())
        return self._overlays

    def base_map(self) -> dict[str, Any]:
        if self._base_map is None:
            self._base_map = self.city().to_geojson()
        return self._base_map

