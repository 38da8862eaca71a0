"""Link set-up like a ground station: ask the autopilot for the messages the hub needs, and check they come.

A stock ArduCopter streams nothing on a fresh port (its ``SRn_*`` rates are 0) and forgets every
rate a ground station set when it reboots. The :class:`StreamKeeper` of a vehicle therefore sends
SET_MESSAGE_INTERVAL for every wanted message

- when the link comes up (first heartbeat, or back after a loss),
- after every reboot (the state's change kind ``reboot``: its boot clock went back),
- after a heartbeat gap (a radio loss or a reboot too short for the link watchdog),
- whenever a wanted message is overdue: nothing for ``max(verify_s, 5 intervals)`` since it last
  arrived or was last asked for, while heartbeats are fresh,

never more than once per ``verify_s`` per message (and backing off on repeated failures), and
tells per message what became of it (:meth:`StreamKeeper.status`) and, in one sentence, the most
important thing missing (:meth:`StreamKeeper.problem`, position first).

STATUSTEXT is not requested: ArduPilot pushes it to every ground station as it happens and has
no interval for it (SET_MESSAGE_INTERVAL for it is refused); the vehicle collects it unasked.

The decisions are pure functions of (request record, last arrival, now) and tested without
sockets; the class only runs them on a timer and sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from drone.codec import mavlink
from drone.errors import CommandRejected, CommandTimeout, DroneError, result_name
from drone.state import HEARTBEAT_GAP_S, VehicleState

if TYPE_CHECKING:
    from drone.vehicle import Vehicle

__all__ = ["LABELS", "WANTED", "Request", "StreamKeeper", "heartbeat_fresh", "message_status", "overdue_after_s",
           "problem_of", "problem_sentence", "request_due", "verify_window_s"]

log = logging.getLogger(__name__)

# What the hub needs, in Hz, in order of importance (a position first: without it no dispatch).
WANTED: Final[Mapping[str, float]] = MappingProxyType({
    "GLOBAL_POSITION_INT": 4.0,
    "SYS_STATUS": 1.0,
    "BATTERY_STATUS": 1.0,
    "EXTENDED_SYS_STATE": 1.0,
    "SYSTEM_TIME": 1.0,
    "MISSION_CURRENT": 1.0,
    "HOME_POSITION": 0.2,
})
# What the hub lacks without each message, for the one-sentence problem.
LABELS: Final[Mapping[str, str]] = MappingProxyType({
    "GLOBAL_POSITION_INT": "no position",
    "SYS_STATUS": "no health report",
    "BATTERY_STATUS": "no battery report",
    "EXTENDED_SYS_STATE": "no landed state",
    "SYSTEM_TIME": "no clock",
    "MISSION_CURRENT": "no mission progress",
    "HOME_POSITION": "no home",
})
_OVERDUE_INTERVALS: Final = 5
_VERIFY_INTERVALS: Final = 2
_MAX_BACKOFF_DOUBLINGS: Final = 4
_TICK_S: Final = 0.25
# One SET_MESSAGE_INTERVAL: a short wait and one re-send; the keeper itself retries later.
_REQUEST_TIMEOUT_S: Final = 1.0
_REQUEST_RETRIES: Final = 1
ACCEPTED: Final = "accepted"


@dataclass
class Request:
    """What the keeper knows of one wanted message."""

    hz: float
    pending: bool = True  # link-up, reboot or heartbeat gap asked for a (re-)request
    requested_at: float | None = None  # monotonic, the last SET_MESSAGE_INTERVAL sent
    answered_at: float | None = None
    answer: str | None = None  # None while in flight; ACCEPTED, "refused: ...", "no answer", "not sent: ..."
    failures: int = 0  # requests in a row that did not bring the message


# ---------------------------------------------------------------------------- pure decisions
def overdue_after_s(hz: float, verify_s: float) -> float:
    """Silence after which a message at ``hz`` is overdue."""
    return max(verify_s, _OVERDUE_INTERVALS / hz)


def verify_window_s(hz: float, verify_s: float) -> float:
    """How long after an accepted request the first message may take (a slow stream needs two intervals)."""
    return max(verify_s, _VERIFY_INTERVALS / hz)


def heartbeat_fresh(state: VehicleState, now: float) -> bool:
    return state.link_ok and state.last_heartbeat is not None and now - state.last_heartbeat <= HEARTBEAT_GAP_S


def _arriving(req: Request, last_seen: float | None, now: float, verify_s: float) -> bool:
    return last_seen is not None and now - last_seen <= overdue_after_s(req.hz, verify_s)


def request_due(req: Request, last_seen: float | None, now: float, verify_s: float, fresh: bool) -> bool:
    """Whether to send SET_MESSAGE_INTERVAL for this message now (``fresh``: heartbeats are fresh)."""
    if not fresh:
        return False  # no link: nothing would arrive, and the watchdog reports it
    since_request = None if req.requested_at is None else now - req.requested_at
    if req.pending:
        return since_request is None or since_request >= verify_s
    quiet_since = max(t for t in (last_seen, req.requested_at, float("-inf")) if t is not None)
    if now - quiet_since <= overdue_after_s(req.hz, verify_s):
        return False
    backoff = verify_s * 2 ** min(req.failures, _MAX_BACKOFF_DOUBLINGS)
    return since_request is None or since_request >= backoff


def message_status(req: Request, last_seen: float | None, now: float, verify_s: float) -> str:
    """``ok``, ``not requested``, ``requested``, ``refused: ...``, ``no answer``,
    ``missing (accepted, none arrived)`` or ``not sent: ...``."""
    if _arriving(req, last_seen, now, verify_s):
        return "ok"
    if req.requested_at is None:
        return "not requested"
    if req.answer is None:
        return "requested"
    if req.answer != ACCEPTED:
        return req.answer
    if req.answered_at is None or now - req.answered_at <= verify_window_s(req.hz, verify_s):
        return "requested"
    return "missing (accepted, none arrived)"


def problem_sentence(name: str, hz: float, status: str, verify_s: float) -> str:
    """One human sentence for a wanted message that does not arrive."""
    label = LABELS.get(name, f"no {name}")
    rate = f"{hz:g} Hz"
    if status == "not requested":
        return f"{label}: {name} not requested yet (no heartbeat from the autopilot)"
    if status == "requested":
        return f"{label}: {name} requested at {rate}, waiting for it"
    if status == "no answer":
        return f"{label}: {name} requested at {rate}, the autopilot did not answer"
    if status.startswith("refused: "):
        return f"{label}: {name} at {rate} refused by the autopilot ({status.removeprefix('refused: ')})"
    if status.startswith("not sent: "):
        return f"{label}: {name} could not be requested: {status.removeprefix('not sent: ')}"
    return f"{label}: {name} requested at {rate}, accepted, none arrived in {verify_window_s(hz, verify_s):g} s"


def problem_of(wanted: Mapping[str, float], statuses: Mapping[str, str], verify_s: float) -> str | None:
    """The sentence for the most important wanted message that is not ``ok`` (position first), else None."""
    order = sorted(wanted, key=lambda name: name != "GLOBAL_POSITION_INT")  # stable: the rest keep their order
    for name in order:
        status = statuses.get(name, "not requested")
        if status != "ok":
            return problem_sentence(name, wanted[name], status, verify_s)
    return None


# ---------------------------------------------------------------------------- the keeper
class StreamKeeper:
    """Keeps one vehicle's wanted messages streaming; see the module docstring."""

    def __init__(self, vehicle: Vehicle, wanted: Mapping[str, float] = WANTED, *, verify_s: float = 3.0,
                 now: Callable[[], float] = time.monotonic) -> None:
        for name, hz in wanted.items():
            if getattr(mavlink, f"MAVLINK_MSG_ID_{name}", None) is None:
                raise ValueError(f"unknown MAVLink message {name!r}")
            if not hz > 0:
                raise ValueError(f"{name}: rate must be > 0 Hz, got {hz}")
        if not verify_s > 0:
            raise ValueError(f"verify_s must be > 0, got {verify_s}")
        self.vehicle = vehicle
        self.wanted = dict(wanted)
        self.verify_s = verify_s
        self.requests: dict[str, int] = dict.fromkeys(self.wanted, 0)  # SET_MESSAGE_INTERVAL sent, per message
        self.started = asyncio.Event()
        self.exited = asyncio.Event()
        self._now = now
        self._records = {name: Request(hz) for name, hz in self.wanted.items()}
        self._epoch: tuple[float | None, int, float | None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<StreamKeeper vehicle={self.vehicle.system_id} problem={self.problem()!r}>"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Run the keeper as a task of the running loop (idempotent)."""
        if self._task is not None:
            return
        self._stopping = False
        self.started.clear()
        self.exited.clear()
        self._unsubscribe = self.vehicle.on_change(self._on_change)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"stream-keeper {self.vehicle.system_id}")

    async def stop(self) -> None:
        """Stop the task and wait until it has exited (idempotent; a request in flight is abandoned)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        task, self._task = self._task, None
        if task is not None:
            # The flag as well as the cancel: on Python 3.11 a wait_for whose inner wait completes just as the
            # cancel arrives swallows it, and the loop would go on.
            self._stopping = True
            self._wake.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.exited.set()  # also when it was cancelled before its first step

    def _on_change(self, _vehicle: Vehicle, kind: str) -> None:
        if kind in ("link", "reboot", "heartbeat"):
            self._wake.set()

    async def _run(self) -> None:
        self.started.set()
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    await self.tick()
                except Exception:  # a bug in one round must not end the keeping: logged, next round
                    log.exception("vehicle %s: stream keeper round failed", self.vehicle.system_id)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_TICK_S):
                        await self._wake.wait()
        finally:
            self.exited.set()

    # ------------------------------------------------------------------ work
    def _retrigger(self) -> None:
        """Link-up, reboot or heartbeat gap: every wanted message is asked for again."""
        state = self.vehicle.state
        epoch = (state.restored_at, state.reboots, state.heartbeat_gap_at)
        if epoch == self._epoch:
            return
        self._epoch = epoch
        for req in self._records.values():
            req.pending = True
            req.failures = 0

    async def tick(self) -> None:
        """One round: notice triggers, then request what is due (in order of importance)."""
        self._retrigger()
        state = self.vehicle.state
        for name, req in self._records.items():
            if self._stopping:
                return
            now = self._now()
            last_seen = state.last_seen.get(name)
            if _arriving(req, last_seen, now, self.verify_s):
                req.failures = 0
            if request_due(req, last_seen, now, self.verify_s, heartbeat_fresh(state, now)):
                await self._request(name, req, last_seen)

    async def _request(self, name: str, req: Request, last_seen: float | None) -> None:
        if not req.pending and req.requested_at is not None and (last_seen is None or last_seen < req.requested_at):
            req.failures += 1  # the previous request brought nothing
        req.pending = False
        req.requested_at, req.answer, req.answered_at = self._now(), None, None
        try:
            self.requests[name] += 1
            await self.vehicle.set_message_interval(name, req.hz, timeout_s=_REQUEST_TIMEOUT_S,
                                                    retries=_REQUEST_RETRIES)
            answer = ACCEPTED
        except CommandRejected as exc:
            answer = f"refused: {result_name(exc.result)}" + (f": {exc.reason}" if exc.reason else "")
        except CommandTimeout:
            answer = "no answer"
        except DroneError as exc:  # signed with a key we lack, no route, link closed
            self.requests[name] -= 1
            answer = f"not sent: {exc}"
        req.answer, req.answered_at = answer, self._now()
        if answer != ACCEPTED:
            log.info("vehicle %s: %s at %g Hz: %s", self.vehicle.system_id, name, req.hz, answer)

    # ------------------------------------------------------------------ reports
    def status(self) -> dict[str, str]:
        """Per wanted message: ``ok`` | ``requested`` | ``refused: <MAV_RESULT name>[: text]`` | ``no answer``
        | ``missing (accepted, none arrived)`` | ``not requested`` (no link yet) | ``not sent: <why>``."""
        now, seen = self._now(), self.vehicle.state.last_seen
        return {name: message_status(req, seen.get(name), now, self.verify_s) for name, req in self._records.items()}

    def problem(self) -> str | None:
        """One sentence for the most important message that does not arrive; None when all do."""
        return problem_of(self.wanted, self.status(), self.verify_s)
