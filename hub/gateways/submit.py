"""How every gateway hands a device's message to the hub: the ingest pipeline's ``submit``.

A gateway translates its protocol into the device contract (the device's MQTT topic and the contract's JSON) and
submits it, so every stage a native device's message passes (limits, validation, dedupe, live state, detectors,
storage) applies unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Protocol

from devices import payloads
from devices.payloads import Status
from devices.topics import Channel, device_topic

__all__ = ["Submit", "consume", "post_status", "store"]

log = logging.getLogger(__name__)


class Submit(Protocol):
    """``Pipeline.submit``: hand over one raw message; for QoS 1 the future of its commit, None when refused."""

    def __call__(self, topic: str, payload: bytes, qos: int, retained: bool = False) -> asyncio.Future[None] | None:
        ...


async def store(submit: Submit, device_id: str, channel: Channel, payload: bytes, *, timeout_s: float,
                counters: Counter[str], gateway: str) -> str | None:
    """Submit with QoS 1 and wait (bounded) for the commit: None once committed, else why not, counted in
    ``counters`` (``store_refused``: the pipeline is full; ``store_timeout``; ``store_failed``). The device is then
    told to send the message again, by whatever its protocol says."""
    future = submit(device_topic(device_id, channel), payload, 1)
    if future is None:
        counters["store_refused"] += 1
        log.warning("%s: the pipeline refused a %s message of %s (full)", gateway, channel, device_id)
        return "store_refused"
    try:
        # Shielded: the future is shared by every message of the cut, a time-out here must not cancel it.
        await asyncio.wait_for(asyncio.shield(future), timeout_s)
    except TimeoutError:
        counters["store_timeout"] += 1
        log.warning("%s: a %s message of %s not committed within %.1f s", gateway, channel, device_id, timeout_s)
        future.add_done_callback(consume)
        return "store_timeout"
    except Exception:  # contained: a failed commit is counted, the device's message is still answered
        counters["store_failed"] += 1
        log.exception("%s: storing a %s message of %s failed", gateway, channel, device_id)
        return "store_failed"
    return None


def post_status(submit: Submit, device_id: str, state: str, ts: int, *, counters: Counter[str], gateway: str) -> None:
    """The device's ``online``/``offline`` status, retained and QoS 1 as a native device's status and Last Will
    (the latest state is what the hub keeps); not awaited. Counted ``status``, or ``status_refused`` when full."""
    future = submit(device_topic(device_id, "status"), payloads.encode_status(Status(ts=ts, state=state)), 1, True)
    if future is None:
        counters["status_refused"] += 1
        log.warning("%s: the pipeline refused the %s status of %s (full)", gateway, state, device_id)
        return
    counters["status"] += 1
    future.add_done_callback(consume)


def consume(future: asyncio.Future[None]) -> None:
    """A done-callback for a commit nobody awaits: read its outcome so a failure is not "never retrieved"."""
    if not future.cancelled():
        future.exception()
