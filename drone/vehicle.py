"""One vehicle seen on a link: its state, change callbacks, commands, parameters and mission upload.

A Vehicle never reads the socket: the link's single reader hands it each message
(``receive``), which it folds into ``state`` and passes to its listeners (bounded
queues with a predicate, :mod:`drone.listeners`). Commands register a listener
*before* sending, so an ACK can never arrive in between and be lost. The vehicle
alone writes its state; it sees its link only as a :class:`VehicleLink` (send,
count), and the link owns the codec, its sequence numbers and signing state.

ArduPilot explains a refusal only in STATUSTEXT, sent around the COMMAND_ACK: every
command also listens to the vehicle's texts, and a refusal carries those sent from
the first send until the ACK plus a short grace (:class:`~drone.errors.CommandRejected`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Protocol

from drone import mission_protocol
from drone import params as param_protocol
from drone.codec import mavlink
from drone.errors import CommandRejected, CommandTimeout, DroneError, SigningError, WaitTimeout
from drone.listeners import Listeners, Predicate, is_statustext, next_message, texts_after_grace
from drone.mission import MissionItem
from drone.modes import MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, mode_number
from drone.state import KINDS, VehicleState, apply_message
from drone.state import check_link as mark_link_lost
from geo.geodesy import haversine_m

__all__ = ["Vehicle", "VehicleLink", "VehicleState"]

log = logging.getLogger(__name__)

MAV_RESULT_ACCEPTED: Final = 0
MAV_RESULT_UNSUPPORTED: Final = 3
MAV_RESULT_IN_PROGRESS: Final = 5
MAV_RESULT_COMMAND_LONG_ONLY: Final = 7
# After IN_PROGRESS the command runs on the vehicle: we stop re-sending (that could
# restart it) and wait this long after each progress report for the final result.
IN_PROGRESS_WAIT_S: Final = 30.0
# How long a state change a command asked for (mode, armed) may take to show in a heartbeat.
STATE_CONFIRM_S: Final = 3.0
# How long set_home waits for HOME_POSITION to read back the new home.
HOME_READBACK_S: Final = 3.0
SIGNED_NO_KEY: Final = "drone signs its MAVLink but the hub has no key for it: it would ignore this command"
_FORCE_MAGIC: Final = 21196  # param2 of COMPONENT_ARM_DISARM that skips pre-arm checks

ChangeCallback = Callable[["Vehicle", str], None]


class VehicleLink(Protocol):
    """What a vehicle needs of the link it is heard on (:class:`~drone.link.MavlinkLink` is one)."""

    @property
    def system_id(self) -> int:
        """Ours, the ground station's: ACKs addressed to it (or to 0) are for us."""
        ...

    def send_to(self, vehicle: Vehicle, message: Any) -> None:
        """Encode (and sign, with this vehicle's key) and send ``message`` where ``vehicle`` was last heard."""
        ...

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the link's counter ``key``."""
        ...


class Vehicle:
    """A MAVLink system (by system id) and the autopilot component commands go to."""

    def __init__(self, link: VehicleLink, system_id: int) -> None:
        self.system_id = system_id
        self.component_id = 1  # until its autopilot's heartbeat says otherwise
        self.state = VehicleState()
        self._link = link
        self.peer: Any = None  # where it was last heard from; replies go there (set by the link)
        self._callbacks: list[ChangeCallback] = []
        self._listeners = Listeners(lambda: link.count("listener_dropped"))
        self._command_locks: dict[int, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"<Vehicle {self.system_id}/{self.component_id} mode={self.state.mode} link_ok={self.state.link_ok}>"

    @property
    def gcs_system_id(self) -> int:
        """Our own system id on this vehicle's link."""
        return self._link.system_id

    # ------------------------------------------------------------------ incoming (called by the link)
    def receive(self, msg: Any, now: float) -> None:
        """One accepted message from this vehicle: fold it into ``state``, tell the callbacks, then the listeners."""
        if msg.get_type() == "HEARTBEAT" and msg.autopilot != mavlink.MAV_AUTOPILOT_INVALID:
            self.component_id = msg.get_srcComponent()
        for kind in apply_message(self.state, msg, now, time.time_ns() // 1_000_000):
            self._changed(kind)
        self._listeners.offer(msg)

    def check_link(self, now: float, timeout_s: float) -> bool:
        """Mark the link lost when no heartbeat came for ``timeout_s``; True (and a ``link`` change) if it just was."""
        if not mark_link_lost(self.state, now, timeout_s):
            return False
        self._changed("link")
        return True

    def mark_signed_unkeyed(self) -> bool:
        """It signs with a key we lack: its commands fail at once from now on. True if that is news."""
        if self.state.signed_unkeyed:
            return False
        self.state.signed_unkeyed = True
        self._changed("signing")
        return True

    def link_closed(self) -> None:
        """The link closed: every waiting command or exchange gets LinkLost."""
        self._listeners.close()

    def _changed(self, kind: str) -> None:
        for callback in list(self._callbacks):
            try:
                callback(self, kind)
            except Exception:  # a faulty callback must not stop the reader
                log.exception("vehicle %s: on_change callback failed", self.system_id)

    # ------------------------------------------------------------------ observing
    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(vehicle, kind)`` on every change; kinds are in :data:`drone.state.KINDS`."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    async def wait_for(self, kind: str, predicate: Callable[[VehicleState], bool], timeout_s: float) -> VehicleState:
        """The state once ``predicate`` holds (checked now and on each change of ``kind``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown change kind {kind!r}; one of {', '.join(KINDS)}")
        if predicate(self.state):
            return self.state
        done: asyncio.Future[VehicleState] = asyncio.get_running_loop().create_future()

        def check(vehicle: Vehicle, changed: str) -> None:
            if changed == kind and not done.done() and predicate(vehicle.state):
                done.set_result(vehicle.state)

        unsubscribe = self.on_change(check)
        try:
            return await asyncio.wait_for(done, timeout_s)
        except TimeoutError:
            raise WaitTimeout(f"vehicle {self.system_id}: no {kind} change matching within {timeout_s} s") from None
        finally:
            unsubscribe()

    @property
    def subscriptions(self) -> int:
        """Listeners and change callbacks registered now: whoever stops watching must leave none behind."""
        return len(self._listeners) + len(self._callbacks)

    @contextlib.contextmanager
    def listen(self, predicate: Predicate) -> Iterator[asyncio.Queue[Any]]:
        """A bounded queue of this vehicle's messages matching ``predicate`` while inside the block."""
        with self._listeners.listen(predicate) as queue:
            yield queue

    @contextlib.contextmanager
    def listen_texts(self) -> Iterator[asyncio.Queue[Any]]:
        """A queue of the vehicle's STATUSTEXTs inside the block (for :func:`~drone.listeners.texts_after_grace`)."""
        with self.listen(is_statustext) as texts:
            yield texts

    # ------------------------------------------------------------------ sending
    def send(self, message: Any) -> None:
        """Encode (and sign, if this vehicle has a key) and send one message to it.

        SigningError at once for a vehicle that signs with a key we lack: it would drop the message.
        """
        if self.state.signed_unkeyed:
            raise SigningError(SIGNED_NO_KEY)
        self._link.send_to(self, message)

    def _is_ack(self, command: int) -> Callable[[Any], bool]:
        ours = self._link.system_id

        def match(msg: Any) -> bool:
            return bool(msg.get_type() == "COMMAND_ACK" and msg.command == command
                        and msg.target_system in (0, ours))
        return match

    async def _await_result(self, acks: asyncio.Queue[Any], command: int, timeout_s: float) -> int | None:
        """Final MAV_RESULT, or None if nothing came within ``timeout_s`` (and no IN_PROGRESS)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        in_progress = False
        while True:
            ack = await next_message(acks, deadline - asyncio.get_running_loop().time())
            if ack is None:
                if in_progress:
                    raise CommandTimeout(f"command {command}: no final result after IN_PROGRESS")
                return None
            if ack.result == MAV_RESULT_IN_PROGRESS:
                in_progress = True
                deadline = asyncio.get_running_loop().time() + IN_PROGRESS_WAIT_S
                continue
            return int(ack.result)

    async def _command(self, command: int, build: Callable[[int], Any], timeout_s: float, retries: int) -> int:
        lock = self._command_locks.setdefault(command, asyncio.Lock())
        async with lock:
            with self.listen(self._is_ack(command)) as acks, self.listen_texts() as texts:
                for attempt in range(max(retries, 0) + 1):
                    self.send(build(attempt))
                    result = await self._await_result(acks, command, timeout_s)
                    if result is None:
                        continue
                    if result != MAV_RESULT_ACCEPTED:
                        raise CommandRejected(result, command, await texts_after_grace(texts))
                    return result
        raise CommandTimeout(f"vehicle {self.system_id}: no COMMAND_ACK for command {command} "
                             f"after {max(retries, 0) + 1} attempts of {timeout_s} s")

    async def command_long(self, command: int, params: Sequence[float] = (), *,
                           timeout_s: float = 1.0, retries: int = 3) -> int:
        """COMMAND_LONG with ACK; each re-send (``retries`` of them) bumps ``confirmation``."""
        p = _seven(params)
        return await self._command(command, lambda attempt: mavlink.MAVLink_command_long_message(
            self.system_id, self.component_id, command, min(attempt, 255), *p), timeout_s, retries)

    async def command_int(self, command: int, *, frame: int, params: Sequence[float] = (), x: int = 0, y: int = 0,
                          z: float = 0.0, timeout_s: float = 1.0, retries: int = 3) -> int:
        """COMMAND_INT with ACK; it has no confirmation field, so retries re-send the same."""
        if len(params) > 4:
            raise ValueError("COMMAND_INT has 4 float params; position goes in x, y, z")
        p = _seven(params)[:4]
        return await self._command(command, lambda _attempt: mavlink.MAVLink_command_int_message(
            self.system_id, self.component_id, frame, command, 0, 0, *p, x, y, z), timeout_s, retries)

    # ------------------------------------------------------------------ actions
    async def set_mode(self, mode: str) -> None:
        number = mode_number(mode)
        await self.command_long(mavlink.MAV_CMD_DO_SET_MODE, (MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, number))
        await self._confirm("heartbeat", lambda s: s.custom_mode == number, f"mode {mode}")

    async def arm(self, force: bool = False) -> None:
        await self.command_long(mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (1, _FORCE_MAGIC if force else 0))
        await self._confirm("heartbeat", lambda s: s.armed, "armed")

    async def disarm(self, force: bool = False) -> None:
        await self.command_long(mavlink.MAV_CMD_COMPONENT_ARM_DISARM, (0, _FORCE_MAGIC if force else 0))
        await self._confirm("heartbeat", lambda s: not s.armed, "disarmed")

    async def _confirm(self, kind: str, predicate: Callable[[VehicleState], bool], what: str) -> None:
        # ACCEPTED is not the end: the heartbeat is what the vehicle actually does.
        try:
            await self.wait_for(kind, predicate, STATE_CONFIRM_S)
        except WaitTimeout:
            raise CommandTimeout(f"vehicle {self.system_id}: accepted but heartbeat does not show {what}") from None

    async def takeoff(self, alt_m: float) -> None:
        """NAV_TAKEOFF to ``alt_m`` above home (ArduCopter: GUIDED and armed)."""
        await self.command_long(mavlink.MAV_CMD_NAV_TAKEOFF, (0, 0, 0, 0, 0, 0, alt_m))

    async def goto(self, lat: float, lon: float, alt_m: float) -> None:
        """Fly to a point (altitude relative to home): DO_REPOSITION, else a position target."""
        x, y = round(lat * 1e7), round(lon * 1e7)
        try:
            await self.command_int(mavlink.MAV_CMD_DO_REPOSITION, frame=mavlink.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
                                   params=(-1, mavlink.MAV_DO_REPOSITION_FLAGS_CHANGE_MODE, 0, math.nan),
                                   x=x, y=y, z=alt_m)
        except CommandRejected as exc:
            if exc.result not in (MAV_RESULT_UNSUPPORTED, MAV_RESULT_COMMAND_LONG_ONLY):
                raise
            # Older ArduCopter: a GUIDED position target (no ACK exists for it).
            position_only = 0b0000_1101_1111_1000  # ignore velocity, acceleration, yaw, yaw rate
            self.send(mavlink.MAVLink_set_position_target_global_int_message(
                0, self.system_id, self.component_id, mavlink.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT,
                position_only, x, y, alt_m, 0, 0, 0, 0, 0, 0, 0, 0))

    async def rtl(self) -> None:
        await self.command_long(mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH)

    async def land(self) -> None:
        await self.command_long(mavlink.MAV_CMD_NAV_LAND)

    async def set_message_interval(self, message: str | int, hz: float, *, timeout_s: float = 1.0,
                                   retries: int = 3) -> None:
        """Ask for ``message`` at ``hz``; 0 Hz disables it."""
        message_id = _message_id(message)
        if not math.isfinite(hz) or hz < 0:
            raise ValueError(f"rate must be >= 0 Hz, got {hz}")
        interval_us = -1 if hz == 0 else round(1e6 / hz)
        await self.command_long(mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, (message_id, interval_us),
                                timeout_s=timeout_s, retries=retries)

    async def request_message(self, message: str | int) -> None:
        """Ask for one ``message`` now (MAV_CMD_REQUEST_MESSAGE); it arrives like any other."""
        await self.command_long(mavlink.MAV_CMD_REQUEST_MESSAGE, (_message_id(message),))

    async def reboot(self) -> None:
        """Reboot the autopilot (ArduPilot refuses while armed); its stream rates are forgotten."""
        await self.command_long(mavlink.MAV_CMD_PREFLIGHT_REBOOT_SHUTDOWN, (1,), retries=1)

    # ------------------------------------------------------------------ parameters and home
    async def read_param(self, name: str, *, timeout_s: float = 1.0, retries: int = 2) -> float:
        """One parameter by name (PARAM_REQUEST_READ); ParamError naming it when nothing comes back."""
        return await param_protocol.read(self, name, timeout_s=timeout_s, retries=retries)

    async def set_param(self, name: str, value: float, *, param_type: int | None = None, timeout_s: float = 1.0,
                        retries: int = 2) -> float:
        """PARAM_SET and the echoed value; ParamError when the autopilot keeps another value.

        ``param_type`` defaults to the type last seen for ``name`` in a PARAM_VALUE, else REAL32.
        """
        return await param_protocol.write(self, name, value, param_type=param_type, timeout_s=timeout_s,
                                          retries=retries)

    async def set_home(self, lat: float, lon: float, amsl_m: float, *, tolerance_m: float = 1.0,
                       timeout_s: float = HOME_READBACK_S) -> None:
        """DO_SET_HOME to this point (metres above sea level), then read HOME_POSITION back.

        DroneError when the home read back is more than ``tolerance_m`` away (or none comes).
        """
        await self.command_int(mavlink.MAV_CMD_DO_SET_HOME, frame=mavlink.MAV_FRAME_GLOBAL, params=(0,),
                               x=round(lat * 1e7), y=round(lon * 1e7), z=amsl_m)
        with self.listen(lambda msg: bool(msg.get_type() == "HOME_POSITION")) as homes:
            with contextlib.suppress(CommandRejected):  # no REQUEST_MESSAGE: the HOME_POSITION stream still tells
                await self.request_message("HOME_POSITION")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            off_m: float | None = None
            # A HOME_POSITION queued before the command was applied may still carry the old home: wait for more.
            while (msg := await next_message(homes, deadline - loop.time())) is not None:
                off_m = math.hypot(haversine_m(lat, lon, msg.latitude / 1e7, msg.longitude / 1e7),
                                   msg.altitude / 1000.0 - amsl_m)
                if off_m <= tolerance_m:
                    return
        if off_m is None:
            raise DroneError(f"vehicle {self.system_id}: no HOME_POSITION within {timeout_s} s after DO_SET_HOME")
        raise DroneError(f"vehicle {self.system_id}: home reads back {off_m:.1f} m from where it was set")

    async def upload_mission(self, items: Sequence[MissionItem], *, timeout_s: float = 2.0, retries: int = 3) -> None:
        await mission_protocol.upload(self, items, timeout_s=timeout_s, retries=retries)

    async def start_mission(self) -> None:
        """MISSION_START; autopilots that do not know it get mode AUTO instead."""
        try:
            await self.command_long(mavlink.MAV_CMD_MISSION_START, (0, 0))
        except CommandRejected as exc:
            if exc.result != MAV_RESULT_UNSUPPORTED:
                raise
            await self.set_mode("AUTO")


def _message_id(message: str | int) -> int:
    if isinstance(message, int):
        return message
    message_id = getattr(mavlink, f"MAVLINK_MSG_ID_{message.upper()}", None)
    if message_id is None:
        raise ValueError(f"unknown MAVLink message {message!r}")
    return int(message_id)


def _seven(params: Sequence[float]) -> list[float]:
    if len(params) > 7:
        raise ValueError(f"a command has at most 7 params, got {len(params)}")
    return [float(p) for p in params] + [0.0] * (7 - len(params))
