"""Every option of the hub, read from ``FIELDHUB_*`` environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIELDHUB_", extra="ignore")

    # External services; unset means "start the embedded default".
    mqtt_url: str | None = None
    database_url: str | None = None
    data_dir: Path = Path(".fieldhub")

    host: str = "127.0.0.1"
    port: int = 8000
    # HTTPS for the API, the one-map, the live feed (wss) and WHIP/WHEP: a PEM certificate (chain) and its key.
    # Both or neither; unset: plain HTTP (loopback use). `fieldhub serve --tls-self-signed` issues a pair from the
    # hub's own CA (data_dir/tls).
    tls_cert: Path | None = None
    tls_key: Path | None = None

    # MQTT bridge. The client id names the broker-side persistent session.
    mqtt_client_id: str = "fieldhub-hub"
    mqtt_session_expiry_s: int = 7 * 24 * 3600
    # Unacknowledged QoS 1 messages the broker may have in flight to the hub:
    # the hub acknowledges a message only once it is committed.
    # About two seconds of full load: bounds the hub's memory and its garbage collector's work.
    mqtt_receive_maximum: int = 20000
    # 5 or 4 (3.1.1).
    mqtt_protocol: int = 5
    # Device identity (issue 13). The hub's login is `mqtt_client_id` (username = client id) in FIELDHUB_MQTT_URL.
    # With `mqtt_admin_url` (a Mosquitto dynamic-security administrator login) the hub adds, re-keys and removes
    # device logins in the broker at once; without it (EMQX reading the hub's tables) only the tables change.
    # `device_mqtt_url` is what devices are told to connect to (mqtts://host:8883?cafile=...).
    # The embedded broker: TLS for devices on broker_tls_host:broker_tls_port (0: a free port; 8883 taken: a free
    # port, logged), client certificates on broker_mtls_port; plaintext only on loopback, for the hub.
    mqtt_admin_url: str | None = None
    device_mqtt_url: str | None = None
    broker_tls_host: str = "127.0.0.1"
    broker_tls_port: int = 8883
    broker_mtls_port: int = 8884
    # Start-up: a broker not reachable within this fails the start with its reason (connect and CONNACK).
    mqtt_connect_timeout_s: float = 5.0

    # Batched writer: flush when this many rows wait or this much time passed.
    write_batch_rows: int = 5000
    write_interval_s: float = 0.1
    write_retry_s: float = 1.0
    # Rows the writer may hold (database slow or away, ~300 bytes each) before the pipeline stops taking
    # messages: then PUBACKs stop and the broker holds the rest (about 50 s of 10,000 fixes/s).
    write_max_pending_rows: int = 500_000

    # Storage of fixes.
    partition_days: int = 1
    partitions_ahead: int = 3
    retention_days: int = 90
    compress_after_days: int = 7

    # Live picture.
    live_frame_interval_s: float = 0.2
    stale_after_s: float = 120.0
    live_client_queue: int = 32

    # The base map, and the road network for dispatch ETAs, is the simulated city of this seed.
    city_seed: int = 7
    # The one-map: a tile URL template ({z}/{x}/{y}) replaces the vector base layer of the city when set;
    # overlays (duty posts, patrol lines) from a GeoJSON file, else laid out on the simulated city.
    map_tile_url: str | None = None
    map_tile_attribution: str = ""
    # The datum of that tile set: "gcj02" for Chinese tile sets (AMap style), whose streets lie 100-700 m off
    # WGS-84; the one-map then converts every position for display only (positions stay WGS-84 everywhere else).
    map_tile_datum: Literal["wgs84", "gcj02"] = "wgs84"
    map_center: tuple[float, float] | None = None
    map_zoom: int = 14
    map_overlays: Path | None = None
    # "city": recommend units by road-network ETA on that city's graph; "none": straight-line ETA.
    road_graph: Literal["city", "none"] = "city"

    # Incidents: a command not acknowledged within ack_timeout_s is re-sent (same cmd_id) up to
    # ack_resends times, then escalated (a dispatch goes to the next recommended unit).
    ack_timeout_s: float = 15.0
    ack_resends: int = 1
    # An incident created with priority <= this (1 highest) is dispatched at once to the best unit; 0: never.
    auto_dispatch_priority: int = 1
    # Base of the WHIP URL sent in video_start (f"{base}/whip/{device_id}") and its token's lifetime; unset:
    # http(s)://{host}:{port} of this hub (loopback when it listens on all interfaces), see `base_url()`.
    public_base_url: str | None = None
    video_token_ttl_s: float = 300.0
    # Live video (WHIP in, WHEP out, relayed without re-encoding). An `sos` also starts the SOS unit's body
    # cameras; each stream is recorded in segments of video_segment_s under video_recordings_dir (unset:
    # data_dir/recordings), kept video_retention_days (pruned hourly).
    sos_video: bool = True
    video_recording: bool = True
    video_recordings_dir: Path | None = None
    video_segment_s: float = 60.0
    video_retention_days: float = 30.0
    video_max_viewers: int = 32
    video_keyframe_interval_s: float = 2.0
    # Proxy mode (scale-out): "janus:<URL of the Janus HTTP API>", e.g. janus:http://127.0.0.1:8088/janus.
    # The hub then only signals: WHIP/WHEP sessions become Janus VideoRoom publishers and subscribers, and
    # media flows between the clients and Janus (so the hub records nothing). Unset: the built-in relay.
    video_media_server: str | None = None
    video_media_server_secret: str | None = None  # Janus's api_secret, if it is set

    # GB/T 28181 devices (body cameras that speak SIP + MANSCDP instead of MQTT), provisioned with
    # `fieldhub device add ID --protocol gb28181`. Off unless enabled. One port for SIP over UDP and TCP; the
    # server id and domain (default: its first 10 digits) are what each camera is configured with; announce_host
    # is the address cameras reach the hub at (default: host, or 127.0.0.1 for a wildcard host). Device times
    # without a zone are read as UTC+utc_offset_min (China: +480). A device is offline after max_missed
    # keepalives of keepalive_s; its positions are subscribed at position_interval_s; a message is answered
    # (200 = stored) within store_timeout_s or refused 503 so the camera sends it again.
    gb28181: bool = False
    gb28181_server_id: Annotated[str, Field(pattern=r"^[0-9]{20}$")] = "34020000002000000001"
    gb28181_realm: Annotated[str, Field(pattern=r"^([0-9A-Za-z.-]{1,64})?$")] = ""
    gb28181_host: str = "0.0.0.0"
    gb28181_port: Annotated[int, Field(ge=0, le=65535)] = 5060
    gb28181_announce_host: str | None = None
    gb28181_utc_offset_min: Annotated[int, Field(ge=-720, le=840)] = 480
    gb28181_keepalive_s: Annotated[float, Field(gt=0)] = 60.0
    gb28181_max_missed: Annotated[int, Field(ge=1)] = 3
    gb28181_position_interval_s: Annotated[int, Field(ge=1, le=3600)] = 5
    gb28181_store_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # Live video from the cameras: the hub INVITEs them to send MPEG-PS over RTP to a port it opens for each stream
    # (udp, or tcp: the camera connects to the hub, for cameras behind NAT); a stream with no media for
    # gb28181_no_media_s ends; one a viewer opened ends gb28181_idle_s after its last viewer left.
    gb28181_media_transport: Literal["udp", "tcp"] = "udp"
    gb28181_no_media_s: Annotated[float, Field(gt=0)] = 10.0
    gb28181_idle_s: Annotated[float, Field(gt=0)] = 15.0

    # JT/T 808 vehicle terminals (TCP), provisioned with `fieldhub device add ID --protocol jt808 --phone N`.
    # Off unless enabled. A terminal that sends nothing for jt808_idle_s is disconnected (offline); a location is
    # answered success once stored, or failure after jt808_store_timeout_s so the terminal sends it again. The
    # datum is what the fleet's terminals report in (the standard says WGS-84; some Chinese terminals send GCJ-02).
    jt808: bool = False
    jt808_host: str = "0.0.0.0"
    jt808_port: Annotated[int, Field(ge=0, le=65535)] = 6808
    jt808_announce_host: str | None = None  # the address terminals are told (default: host, 127.0.0.1 for 0.0.0.0)
    jt808_datum: Literal["wgs84", "gcj02"] = "wgs84"
    jt808_idle_s: Annotated[float, Field(gt=0)] = 180.0
    jt808_store_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    jt808_max_connections: Annotated[int, Field(ge=1)] = 20000
    # Phones: OwnTracks (MQTT on owntracks/{device_id}/{name}, or HTTP POST /gateway/owntracks) and OsmAnd /
    # Traccar Client (HTTP /gateway/osmand, and Traccar server's forwarding on /gateway/traccar). Off unless
    # enabled; each states the datum its phones report in (an app fed by a Chinese map SDK may send GCJ-02).
    owntracks: bool = False
    owntracks_datum: Literal["wgs84", "gcj02"] = "wgs84"
    osmand: bool = False
    osmand_datum: Literal["wgs84", "gcj02"] = "wgs84"
    phone_store_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # Cursor-on-Target: units, incidents and SOS out to a TAK server (tcp://host:8087, tls://host:8089) or the LAN
    # multicast group (udp+wo://239.2.3.1:6969), TAK users' positions in as units of kind "tak". Off unless enabled.
    tak: bool = False
    tak_url: str = "udp+wo://239.2.3.1:6969"
    tak_interval_s: Annotated[float, Field(gt=0)] = 10.0
    # A tls:// TAK server's client certificate (PEM, or .p12 with its password) and the CA of its own certificate.
    tak_tls_cert: Path | None = None
    tak_tls_key: Path | None = None
    tak_tls_ca: Path | None = None
    tak_tls_password: str | None = None
    tak_tls_server_name: str | None = None

    # SLA policies, policy rules, arrival-zone radii and 12345 diversion categories (JSON file, see
    # hub/incidents/config.py); unset: the built-in ones.
    incident_config: Path | None = None
    # An `sos` event raises an alert and (True) a priority-1 incident at the device's position.
    sos_incident: bool = True
    # The 12345 government hotline's hand-over webhook for diverted (non-police) incidents.
    hotline_url: str | None = None
    hotline_token: str | None = None

    # Drones (MAVLink 2). Without a URL the hub runs no drone link. The fleet file is JSON:
    # [{"drone_id", "system_id", "name"?, "dock": {"lat", "lon", "name"?}, "camera"?: "<its camera's device id>",
    #   "unsigned"?: true}]; the signing keys file ({"<system_id>": "<64 hex>"}, mode 0600) holds each drone's
    # MAVLink 2 key. A fleet drone without a key is refused unless its entry opts in with "unsigned": true;
    # MAVLink from system ids outside the fleet is ignored.
    mavlink_url: str | None = None  # e.g. udpin:0.0.0.0:14550
    # The hub's MAVLink system id. 255 because that is the ground station a stock ArduPilot listens to
    # (MAV_GCS_SYSID, formerly SYSID_MYGCS, defaults to 255): only its heartbeats feed the autopilot's link
    # failsafe, so with 255 a drone's FS_GCS_ENABLE works without changing MAV_GCS_SYSID.
    mavlink_system_id: int = Field(default=255, ge=1, le=255)
    drones: Path | None = None
    drone_keys: Path | None = None
    drone_cruise_alt_m: float = 60.0
    drone_link_timeout_s: float = 3.0
    drone_pct_per_km: float = 4.0
    drone_reserve_pct: float = 20.0
    drone_on_scene_min: float = 5.0

    # ---- The device boundary (hostile input). Every limit is a counted reject with its reason.
    # A fix, status or event more than this far ahead of the hub's clock is refused (`ts_in_future`).
    max_future_skew_s: float = 300.0
    # Per-device token buckets, applied before a payload is decoded: MQTT messages per channel, and fixes
    # (a store-and-forward batch of up to 1000 fixes is one message but many fixes: the fix burst lets a
    # device that was offline upload its buffer; the message burst, a device whose client queued its fixes one
    # message each). Excess is dropped with the reason `rate_limited`.
    device_telemetry_per_s: float = 20.0
    device_telemetry_burst: int = 1000
    device_fixes_per_s: float = 200.0
    device_fixes_burst: int = 10_000
    device_status_per_s: float = 1.0
    device_status_burst: int = 20
    device_events_per_s: float = 5.0
    device_events_burst: int = 100
    # When the hub's MQTT session resumes (session present) the broker delivers what it held at line speed;
    # the limits (which measure the hub's receive time) are 50 times wider for this long, so that backlog is not
    # taken for a flood while a flood meanwhile is still bounded (hub/ingest/pipeline.py CATCH_UP_FACTOR).
    device_limits_catch_up_s: float = 60.0
    # A device-reported milestone (ack, contact) or a detected one may not move an existing milestone by more.
    milestone_max_shift_s: float = 300.0
    # An `sos` whose own position lies farther than this from the device's last fix (fresh within
    # stale_after_s) is placed at that fix instead, and flagged.
    sos_max_distance_m: float = 1000.0
    # rejects, device_status and device_events are kept this long (fixes: retention_days).
    log_retention_days: int = 30
    # HTTP: request bodies larger than this are refused with 413 before anything is parsed.
    http_max_body_bytes: int = 64 * 1024

    rejects_raw_bytes: int = 1024
    # Ingest allocates many short-lived objects; the default first-generation
    # threshold (700) made the collector take half the hub's CPU at 10k fixes/s.
    gc_threshold: int = 50_000
    token_pepper: str = "fieldhub"
    # Failed bearer authentications per client address (HTTP and WebSocket): beyond the burst, at this rate a
    # minute, a bad token is answered 429 `too_many_failures` with Retry-After. Valid tokens are never limited.
    auth_failures_per_min: Annotated[float, Field(gt=0)] = 10.0
    auth_failures_burst: Annotated[int, Field(ge=1)] = 10
    # Demo/test convenience: a dispatcher token created on start-up (printed by the demo).
    bootstrap_token: str | None = None
    # Demo/test convenience: an admin token created on start-up (the demo's simulators provision their devices'
    # logins with it; never printed).
    bootstrap_admin_token: str | None = None

    def base_url(self) -> str:
        """Where devices reach this hub over HTTP(S) (the WHIP URL of `video_start`)."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"


def read_json_file(path: Path, what: str, error: type[Exception]) -> Any:
    """The JSON in a configuration file; `error` (with `what` and the path in its message) when it cannot be
    read or parsed, so a bad file stops the start-up with a reason instead of a traceback."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{what} {path}: cannot read: {exc}") from exc
    except ValueError as exc:
        raise error(f"{what} {path}: not valid JSON: {exc}") from exc
