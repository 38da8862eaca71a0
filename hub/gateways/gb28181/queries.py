"""What the hub asks a GB/T 28181 device once it is online: its positions by subscription, its catalog of channels
and its device information, and what it answered, kept in memory.

A device that refuses or ignores a request is counted and left alone: positions still come as unsolicited
Notify, a video call falls back to the device id itself when no catalog names a video channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Final, Protocol

from gb28181.manscdp import CatalogItem, CatalogResponse, DeviceInfoResponse, ManscdpError
from gb28181.manscdp_build import build_mobile_position_subscription, build_query
from gb28181.manscdp_catalog import CatalogAssembler
from gb28181.registrar import MANSCDP, Answer
from gb28181.sip import SipError, SipResponse
from gb28181.transactions import Dialog, dialog_of_response

__all__ = ["DeviceQueries", "DeviceRequests", "video_channel"]

log = logging.getLogger(__name__)

# GB/T 28181 appendix D: digits 11-13 of an id are its type; 131 camera, 132 network camera (IPC).
VIDEO_TYPES: Final = frozenset({"131", "132"})
_RENEW_AT: Final = 0.8  # of the granted expiry: a refresh lost once still has time to be sent again


class DeviceRequests(Protocol):
    """The registrar as far as the queries use it."""

    async def send_request(self, device_id: str, method: str, body: bytes, content_type: str = MANSCDP, *,
                           timeout_s: float | None = None, extra_headers: dict[str, str] | None = None,
                           dialog: Dialog | None = None, cseq: int | None = None) -> SipResponse: ...


def video_channel(device_id: str, items: list[CatalogItem]) -> str:
    """The channel to INVITE for live video: the first camera channel of the catalog, else the device itself."""
    for item in items:
        if len(item.device_id) == 20 and item.device_id[10:13] in VIDEO_TYPES:
            return item.device_id
    return device_id


class DeviceQueries:
    """Per online device: one task that subscribes (and renews) and queries; the answers by device id."""

    def __init__(self, requests: DeviceRequests, *, domain: str, wall_ms: Callable[[], int],
                 position_interval_s: int = 5, subscription_expires_s: int = 3600) -> None:
        self.requests = requests
        self.domain = domain
        self.wall_ms = wall_ms
        self.position_interval_s = position_interval_s
        self.subscription_expires_s = subscription_expires_s
        self.counters: Counter[str] = Counter()
        self.assembler = CatalogAssembler()
        self._channels: dict[str, list[CatalogItem]] = {}
        self._info: dict[str, DeviceInfoResponse] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sn = 0

    def channels(self, device_id: str) -> list[CatalogItem]:
        return list(self._channels.get(device_id, ()))

    def device_info(self, device_id: str) -> DeviceInfoResponse | None:
        return self._info.get(device_id)

    # --- presence ---------------------------------------------------------------------------------------------

    def device_online(self, device_id: str) -> None:
        """(Re)start what the hub asks of a device that came online."""
        self.device_offline(device_id)
        task = asyncio.get_running_loop().create_task(self._bring_up(device_id), name=f"gb28181-queries-{device_id}")
        self._tasks[device_id] = task
        task.add_done_callback(lambda done: self._forget(device_id, done))

    def device_offline(self, device_id: str) -> None:
        task = self._tasks.pop(device_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, device_id: str, done: asyncio.Task[None]) -> None:
        if self._tasks.get(device_id) is done:
            del self._tasks[device_id]

    # --- answers (MESSAGEs from the device) -------------------------------------------------------------------

    def catalog_page(self, device_id: str, page: CatalogResponse) -> Answer:
        """One page of a Catalog answer; 400 with the reason when the assembler refuses it."""
        try:
            catalog = self.assembler.add(page, self.wall_ms())
        except ManscdpError as exc:
            self.counters[f"catalog_{exc.reason}"] += 1
            log.info("gb28181: a catalog page of %s refused: %s", device_id, exc)
            return 400, f"Bad Request ({exc.reason})"
        if catalog is not None:
            # Keyed by the SIP identity: a page's DeviceID is the device's word, the registration is the hub's.
            self._channels[device_id] = list(catalog.items)
            self.counters["catalogs"] += 1
        return None

    def device_info_answer(self, device_id: str, info: DeviceInfoResponse) -> None:
        self._info[device_id] = info
        self.counters["device_infos"] += 1

    # --- requests to the device -------------------------------------------------------------------------------

    async def _bring_up(self, device_id: str) -> None:
        await asyncio.gather(self._subscribe(device_id), self._query(device_id, "Catalog"),
                             self._query(device_id, "DeviceInfo"))

    def _next_sn(self) -> int:
        self._sn += 1
        return self._sn

    async def _query(self, device_id: str, cmd_type: str) -> None:
        name = cmd_type.lower()
        try:
            response = await self.requests.send_request(device_id, "MESSAGE", build_query(cmd_type, self._next_sn(),
                                                                                          device_id))
        except SipError as exc:
            self.counters[f"{name}_query_failed"] += 1
            log.info("gb28181: the %s query to %s failed: %s", cmd_type, device_id, exc)
            return
        self.counters[f"{name}_query_{'sent' if response.status_code < 300 else 'refused'}"] += 1

    async def _subscribe(self, device_id: str) -> None:
        """SUBSCRIBE to MobilePosition, then refresh inside its dialog before it expires, until refused."""
        dialog: Dialog | None = None
        while True:
            body = build_mobile_position_subscription(self._next_sn(), device_id, self.position_interval_s)
            headers = {"Event": "presence", "Expires": str(self.subscription_expires_s)}
            try:
                response = await self.requests.send_request(device_id, "SUBSCRIBE", body, extra_headers=headers,
                                                            dialog=dialog)
            except SipError as exc:
                self.counters["subscribe_failed"] += 1
                log.info("gb28181: the position subscription of %s failed: %s", device_id, exc)
                return
            granted = _granted(response, self.subscription_expires_s)
            if response.status_code >= 300 or granted == 0:
                self.counters["subscribe_refused"] += 1
                log.info("gb28181: %s refused the position subscription: %s %s", device_id, response.status_code,
                         response.reason_phrase)
                return
            self.counters["subscribed" if dialog is None else "subscription_renewed"] += 1
            if dialog is None:
                dialog = dialog_of_response(response, f"sip:{device_id}@{self.domain}")
            await asyncio.sleep(max(granted * _RENEW_AT, 1.0))


def _granted(response: SipResponse, asked: int) -> int:
    """The expiry the device granted (never more than asked); what was asked when it does not say."""
    raw = (response.headers.get_first("expires") or "").strip()
    return min(int(raw), asked) if raw.isdigit() and len(raw) <= 9 else asked
