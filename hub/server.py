"""The hub's lifecycle: compose the adapters, run, shut down in order.

Start-up: embedded services (when no URL is configured) -> database (migrations,
partitions) -> live picture loaded from the database -> writer -> pipeline ->
live feed -> MQTT session. Shutdown runs the same list backwards: stop taking
MQTT messages, drain the pipeline, flush the writer, close the database, stop
the embedded services.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from prometheus_client import CollectorRegistry

from devices.clock import now_ms
from devices.tasks import cancel_and_wait
from hub import auth
from hub.bridge import MqttBridge
from hub.config import Settings
from hub.domain.dispatch import Recommender
from hub.domain.ratelimit import Limit
from hub.drone_fleet import load_fleet
from hub.drones import DroneService
from hub.embedded import AmqttBroker, EmbeddedPostgres, MosquittoBroker
from hub.errors import HubStartError, StorageUnavailable, one_line
from hub.feed import LiveFeed
from hub.hotline import HotlineHandOver
from hub.incident_config import load_incident_config
from hub.incidents import IncidentService
from hub.live import LiveState
from hub.metrics import HubCollector
from hub.overlays import city_overlays, load_overlays
from hub.pipeline import Pipeline
from hub.storage import Database
from hub.storage.drones import DroneAudit
from hub.storage.incidents import IncidentStore
from hub.storage.video import VideoStore
from hub.video import VideoDesk
from hub.writer import BatchWriter
from sim.city import City, build_city

log = logging.getLogger(__name__)

TOKEN_CACHE_S = 30.0



class Hub:
    """One running hub. Use as ``async with Hub(settings) as hub: await hub.serve()``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.live = LiveState(stale_after_ms=int(self.settings.stale_after_s * 1000),
                              max_future_ms=int(self.settings.max_future_skew_s * 1000))
        self.feed = LiveFeed(self.live, now_ms, interval_s=self.settings.live_frame_interval_s,
                             client_queue=self.settings.live_client_queue)
        self.bridge: MqttBridge | None = None
        self.mqtt_url = self.settings.mqtt_url
        self.database_url = self.settings.database_url
        self.mqtt_protocol = self.settings.mqtt_protocol
        self.registry = CollectorRegistry()
        self._stack = AsyncExitStack()
        self._tokens: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._base_map: dict[str, Any] | None = None
        self._city: City | None = None
        self._overlays: dict[str, Any] | None = None
        self.bootstrap_secret: str | None = None
        self.incidents: IncidentService | None = None
        self.drones: DroneService | None = None
        self.video: VideoDesk | None = None
        self._phase = "configuration"  # what _start is doing: names the part that failed in HubStartError

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
        self._phase = "embedded database"
        if self.database_url is None:
            pg = EmbeddedPostgres(s.data_dir / "pg")
            self.database_url = await asyncio.to_thread(pg.start)
            stack.callback(pg.close)
        self._phase = "embedded broker"
        if self.mqtt_url is None:
            if MosquittoBroker.available():
                broker = MosquittoBroker(s.data_dir / "mosquitto")
                self.mqtt_url = await asyncio.to_thread(broker.start)
                stack.callback(broker.stop)
            else:
                fallback = AmqttBroker()
                self.mqtt_url = await fallback.start()
                self.mqtt_protocol = 4
                stack.push_async_callback(fallback.stop)
        self._phase = "storage"
        self.db = await stack.enter_async_context(Database(
            self.database_url, partition_days=s.partition_days, partitions_ahead=s.partitions_ahead,
            retention_days=s.retention_days, compress_after_days=s.compress_after_days,
            log_retention_days=s.log_retention_days))
        for row in await self.db.load_units():
            home = {"lat": row["home_lat"], "lon": row["home_lon"]} if row["home_lat"] is not None else None
            self.live.register_unit(row["unit_id"], row["name"], row["kind"], list(row["devices"]), home,
                                    list(row["capabilities"]))
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
        self.bridge = await stack.enter_async_context(MqttBridge(
            self.mqtt_url, self.pipeline, client_id=s.mqtt_client_id, session_expiry_s=s.mqtt_session_expiry_s,
            receive_maximum=s.mqtt_receive_maximum, protocol=self.mqtt_protocol,
            connect_timeout_s=s.mqtt_connect_timeout_s))
        bridge = self.bridge
        self._phase = "services"
        # Without a URL the hand-overs of diverted incidents wait, visible as `not_configured`.
        hotline = await stack.enter_async_context(HotlineHandOver(
            s.hotline_url, token=s.hotline_token, on_accepted=self._handed_over, clock=now_ms))
        self.incidents = IncidentService(IncidentStore(self.db), self.live, self.feed,
                                         lambda topic, payload: bridge.publish(topic, payload, qos=1), now_ms,
                                         policies=config.policies, rules=config.rules, categories=config.categories,
                                         recommender=Recommender(self.city() if s.road_graph == "city" else None),
                                         ack_timeout_s=s.ack_timeout_s, ack_resends=s.ack_resends,
                                         auto_dispatch_priority=s.auto_dispatch_priority,
                                         public_base_url=s.base_url(), video_token_ttl_s=s.video_token_ttl_s,
                                         sos_incident=s.sos_incident, hotline=hotline,
                                         milestone_max_shift_s=s.milestone_max_shift_s,
                                         sos_max_distance_m=s.sos_max_distance_m)
        await self.incidents.start()
        self.pipeline.listeners.append(self.incidents.tracker.on_message)
        # Live video. Its exit (before the incidents stop) refuses new publishes and viewers, closes every peer
        # connection (the streams' ends still reach the database and the log), then closes the recorders.
        self.video = await stack.enter_async_context(VideoDesk(
            s, VideoStore(self.db), self.live, self.feed, self.incidents, now_ms, self.lookup_token))
        self.pipeline.listeners.append(self.video.on_message)
        if s.mavlink_url:
            self.drones = await stack.enter_async_context(DroneService(
                s, fleet, self.incidents, self.feed, DroneAudit(self.db), self.pipeline.submit, now_ms, self.put_unit))
        self.registry.register(HubCollector(self))
        self._tasks.append(asyncio.create_task(self._maintain(), name="partition-maintenance"))
        stack.push_async_callback(self._cancel_tasks)
        if s.bootstrap_token:
            self.bootstrap_secret = s.bootstrap_token
            if await self.lookup_token(s.bootstrap_token) is None:
                await self.db.insert_token("bootstrap", "dispatcher", auth.digest(s.bootstrap_token, s.token_pepper))
                self._tokens.clear()
        # Long-lived start-up objects leave the collector's view; young ones are collected less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(s.gc_threshold, 50, 100)
        log.info("hub up: mqtt %s, database %s (storage %s: %s)", self.mqtt_url, _redact(self.database_url),
                 self.db.mode, self.db.mode_reason)

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _handed_over(self, incident_id: str, accepted_at: int, ref: str) -> None:
        if self.incidents is None:
            raise RuntimeError("the incident service is not running yet")
        await self.incidents.handed_over(incident_id, accepted_at, ref)

    async def _stop_incidents(self) -> None:
        if self.incidents is not None:
            await self.incidents.stop()

    async def _cancel_tasks(self) -> None:
        await cancel_and_wait(*self._tasks)

    async def _maintain(self) -> None:
        """Partitions and retention, hourly. The fixes were maintained when the database opened; the start's run
        here deletes only the device logs' backlog (in batches) while the hub already serves, so a large backlog
        does not delay the start."""
        run: Callable[[], Awaitable[object]] = self.db.prune_logs
        while True:
            try:
                await run()
            except StorageUnavailable as exc:
                log.warning("storage maintenance failed (%s); next try in an hour", one_line(exc))
            except Exception:
                log.exception("storage maintenance failed; next try in an hour")
            await asyncio.sleep(3600)
            run = self.db.maintain

    async def serve(self, host: str | None = None, port: int | None = None,
                    started: asyncio.Event | None = None) -> None:
        """Serve HTTP until cancelled or interrupted."""
        import uvicorn

        from hub.api.app import create_app

        config = uvicorn.Config(create_app(self), host=host or self.settings.host, port=port or self.settings.port,
                                log_level="warning", lifespan="off", ws_max_size=1 << 20)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if started is not None:
            started.set()
        try:
            await task
        finally:
            server.should_exit = True

    # ------------------------------------------------------------ operations
    async def put_unit(self, unit_id: str, body: dict[str, Any]) -> None:
        unit = dict(body, unit_id=unit_id)
        await self.db.upsert_unit(unit)
        self.live.register_unit(unit_id, body["name"], body["kind"], body["devices"], body.get("home"),
                                body.get("capabilities"))

    async def create_token(self, role: str, name: str) -> str:
        if role not in auth.ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(auth.ROLES)}")
        secret = auth.new_secret()
        await self.db.insert_token(name, role, auth.digest(secret, self.settings.token_pepper))
        return secret

    async def lookup_token(self, secret: str) -> dict[str, Any] | None:
        digest = auth.digest(secret, self.settings.token_pepper)
        cached = self._tokens.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[0] < TOKEN_CACHE_S:
            return cached[1]
        try:
            row = await self.db.find_token(digest)
        except StorageUnavailable:
            if cached is not None:  # database away: a known token keeps working
                return cached[1]
            raise
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[digest] = (now, row)
        return row

    def city(self) -> City:
        """The simulated city of `city_seed`: the base map and the road graph for dispatch ETAs."""
        if self._city is None:
            self._city = build_city(seed=self.settings.city_seed)
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


def _redact(url: str | None) -> str:
    if not url or "@" not in url:
        return url or ""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
