"""MavlinkLink: one MAVLink endpoint of the hub and the vehicles heard on it.

One reader (the transport's callback) decodes every frame and dispatches it: state
update and change callbacks on the vehicle, the vehicle's waiting listeners, then
link subscribers. Two background tasks: our GCS heartbeat at 1 Hz to every known
vehicle, and the link-loss watchdog.

Codecs: one pymavlink MAVLink object per vehicle (its own seq, and its own signing
state when it has a key). The sender's system id is read from the frame header
first and the link's :class:`~drone.signing.Admission` decides on it: a system
outside the fleet, a fleet system without a key that was not let in unsigned, and
a keyed system's unsigned or forged frame are dropped (counted by reason) before
they can create a vehicle, set its route or earn it our heartbeat.

Signed, no key: a system we have no key for that signs its frames uses a key we do
not have, and ArduPilot then drops every unsigned command of ours without a word.
The link records such systems in ``signed_unkeyed`` (heard or refused); a heard one
gets ``state.signed_unkeyed`` and its commands fail at once instead of timing out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from drone.codec import DecodeError, decode, encode, frame_system_id, mavlink, new_codec
from drone.errors import LinkLost, WaitTimeout
from drone.signing import REFUSAL_REASONS, Admission, SigningKeys, is_signed_frame, signing_timestamp
from drone.transport import Peer, Transport, open_transport
from drone.vehicle import Vehicle

__all__ = ["MavlinkLink"]

log = logging.getLogger(__name__)

HEARTBEAT_PERIOD_S: Final = 1.0
Subscriber = Callable[[Vehicle, Any], None]


class MavlinkLink:
    """Async context manager; see the module docstring. Use from one event loop only."""

    def __init__(self, url: str, *, system_id: int = 250, component_id: int = 190,
                 heartbeat_timeout_s: float = 3.0, keys: SigningKeys | None = None,
                 admission: Admission | None = None,
                 on_vehicle: Callable[[Vehicle], None] | None = None) -> None:
        if not 1 <= system_id <= 255 or not 0 <= component_id <= 255:
            raise ValueError("system_id must be 1..255 and component_id 0..255")
        self.url = url
        self.system_id = system_id
        self.component_id = component_id
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.stats: dict[str, int] = dict.fromkeys(
            ("received", "sent", "bad_crc", "parse_errors", *REFUSAL_REASONS, "unknown_system",
             "unknown_message", "send_errors", "send_dropped", "listener_dropped"), 0)
        # Refused frames per sender and reason; at most 255 senders, so bounded.
        self.refused: dict[int, dict[str, int]] = {}
        self.vehicles: dict[int, Vehicle] = {}
        # Systems seen signing while we have no key for them (heard or refused): at most 255, so bounded.
        self.signed_unkeyed: set[int] = set()
        self._keys = keys if keys is not None else SigningKeys()
        self._admission = admission if admission is not None else Admission()
        self._on_vehicle = on_vehicle
        self._handles: dict[int, Vehicle] = {}  # every Vehicle object, heard or not
        self._codecs: dict[int, Any] = {}  # per vehicle: its own seq, and its signing state when keyed
        self._subscribers: list[Subscriber] = []
        self._gcs_codec = new_codec(system_id, component_id)  # unsigned heartbeats to a bare peer
        self._transport: Transport = open_transport(url, self._on_frame, self.stats)
        self._tasks: list[asyncio.Task[None]] = []
        self.local_address: tuple[str, int] = self._transport.local_address

    def __repr__(self) -> str:
        return f"<MavlinkLink {self.url} vehicles={sorted(self.vehicles)}>"

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> MavlinkLink:
        await self._transport.start()
        self.local_address = self._transport.local_address
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeats(), name=f"mavlink-heartbeat {self.url}"),
                       loop.create_task(self._watchdog(), name=f"mavlink-watchdog {self.url}")]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the tasks, close the transport, wake every waiter with LinkLost. Idempotent."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._transport.close()
        for vehicle in self._handles.values():
            vehicle.link_closed()

    # ------------------------------------------------------------------ vehicles
    def vehicle(self, system_id: int) -> Vehicle:
        """The handle for ``system_id``, even before it was heard (then it is not in ``vehicles``)."""
        if not 1 <= system_id <= 255:
            raise ValueError(f"system id must be 1..255, got {system_id}")
        handle = self._handles.get(system_id)
        if handle is None:
            codec = new_codec(self.system_id, self.component_id)
            key = self._keys.get(system_id)
            if key is not None:
                codec.signing.secret_key = key.secret
                codec.signing.link_id = key.link_id
                codec.signing.sign_outgoing = True
                codec.signing.timestamp = signing_timestamp()
                # Without this callback pymavlink would count unsigned frames nowhere.
                codec.signing.allow_unsigned_callback = lambda _mav, _msg_id: False
            self._codecs[system_id] = codec
            handle = self._handles[system_id] = Vehicle(self, system_id)
        return handle

    async def wait_vehicle(self, system_id: int, timeout_s: float) -> Vehicle:
        """The vehicle once its autopilot's first HEARTBEAT arrived; WaitTimeout otherwise."""
        vehicle = self.vehicle(system_id)
        try:
            await vehicle.wait_for("heartbeat", lambda s: s.last_heartbeat is not None, timeout_s)
        except WaitTimeout:
            raise WaitTimeout(f"no heartbeat from system {system_id} within {timeout_s} s on {self.url}") from None
        return vehicle

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """``callback(vehicle, message)`` for every accepted message; returns the unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    # ------------------------------------------------------------------ receive
    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to ``stats[key]`` (the link's vehicles count their dropped messages here too)."""
        self.stats[key] = self.stats.get(key, 0) + n

    def _on_frame(self, frame: bytes, peer: Peer) -> None:
        system_id = frame_system_id(frame)
        if system_id == 0 or system_id == self.system_id:
            self.count("unknown_system")  # no valid sender, or our own frames echoed back
            return
        key = self._keys.get(system_id)
        refusal = self._admission.refusal(system_id, key, frame)
        if refusal == "signed_no_key":
            self.signed_unkeyed.add(system_id)
        if refusal is not None:
            self._refuse(system_id, refusal, peer)
            return
        vehicle = self.vehicle(system_id)
        codec = self._codecs[system_id]
        signing = codec.signing
        rejected = signing.reject_count
        try:
            msg = decode(codec, frame)
        except DecodeError as exc:
            log.debug("drop frame from system %s: %s", system_id, exc)
            if signing.reject_count != rejected:  # a good signature pymavlink still refuses: a replayed timestamp
                self._refuse(system_id, "bad_signature", peer)
            else:
                self.count("parse_errors")
            return
        if msg.get_type() == "BAD_DATA" or msg.get_type().startswith("UNKNOWN_"):
            self.count("unknown_message")
            return
        self.count("received")
        vehicle.peer = peer
        if system_id not in self.vehicles:
            self.vehicles[system_id] = vehicle
            if self._on_vehicle is not None:
                try:
                    self._on_vehicle(vehicle)
                except Exception:
                    log.exception("on_vehicle callback failed")
        if key is None and is_signed_frame(frame):
            self._signed_unkeyed(vehicle, peer)
        vehicle.receive(msg, time.monotonic())
        for callback in list(self._subscribers):
            try:
                callback(vehicle, msg)
            except Exception:
                log.exception("link subscriber failed")

    def _signed_unkeyed(self, vehicle: Vehicle, peer: Peer) -> None:
        self.signed_unkeyed.add(vehicle.system_id)
        if vehicle.mark_signed_unkeyed():
            log.warning("MAVLink from system %s (%s) is signed but the hub has no key for it: it will ignore our "
                        "commands", vehicle.system_id, peer)

    def _refuse(self, system_id: int, reason: str, peer: Peer) -> None:
        self.count(reason)
        per_system = self.refused.setdefault(system_id, {})
        per_system[reason] = per_system.get(reason, 0) + 1
        if per_system[reason] == 1:  # once per sender and reason: a flood must not flood the log too
            log.warning("MAVLink from system %s (%s) ignored: %s", system_id, peer, reason.replace("_", " "))

    # ------------------------------------------------------------------ send
    def send_to(self, vehicle: Vehicle, message: Any) -> None:
        """Encode with the vehicle's codec (signed when we hold its key) and send where it was last heard."""
        codec = self._codecs[vehicle.system_id]
        signing = codec.signing
        if signing.sign_outgoing:
            # pymavlink only adds 1 per message; keep up with the clock so a receiver's
            # "new stream at most a minute old" rule still holds after a long session.
            signing.timestamp = max(signing.timestamp, signing_timestamp())
        data = encode(codec, message)
        try:
            self._transport.send(data, vehicle.peer)
        except LinkLost:
            self.count("send_errors")
            raise
        self.count("sent")

    def _heartbeat_message(self) -> Any:
        return mavlink.MAVLink_heartbeat_message(mavlink.MAV_TYPE_GCS, mavlink.MAV_AUTOPILOT_INVALID, 0, 0,
                                                 mavlink.MAV_STATE_ACTIVE, 3)

    def send_heartbeats(self) -> None:
        """One GCS heartbeat to each known vehicle (signed for keyed ones) and to bare peers."""
        by_peer: dict[Peer, list[Vehicle]] = {peer: [] for peer in self._transport.default_peers()}
        for vehicle in self.vehicles.values():
            if vehicle.peer is not None:
                by_peer.setdefault(vehicle.peer, []).append(vehicle)
        for peer, vehicles in by_peer.items():
            unsigned_sent = False
            try:
                for vehicle in vehicles:
                    # Keyed vehicles need their own signed copy; unsigned ones share one per peer.
                    signed = self._codecs[vehicle.system_id].signing.sign_outgoing
                    if signed or not unsigned_sent:
                        unsigned_sent = unsigned_sent or not signed
                        self.send_to(vehicle, self._heartbeat_message())
                if not vehicles:
                    self._transport.send(encode(self._gcs_codec, self._heartbeat_message()), peer)
            except LinkLost:
                continue  # counted; the peer may come back

    async def _heartbeats(self) -> None:
        while True:
            self.send_heartbeats()
            await asyncio.sleep(HEARTBEAT_PERIOD_S)

    async def _watchdog(self) -> None:
        # Check often enough that a loss is seen within a quarter of the timeout.
        period = min(0.25, self.heartbeat_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for vehicle in list(self.vehicles.values()):
                if vehicle.check_link(now, self.heartbeat_timeout_s):
                    log.warning("vehicle %s: no heartbeat for %.1f s, link lost", vehicle.system_id,
                                self.heartbeat_timeout_s)
