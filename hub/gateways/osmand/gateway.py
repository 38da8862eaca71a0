"""OsmAnd / Traccar Client phones over HTTP, and positions forwarded by a Traccar server, into the ingest pipeline.

* :meth:`OsmAndGateway.report` (``GET|POST /gateway/osmand``): the app's report as a query string (OsmAnd, Traccar
  Client before 9), a form body, or Traccar Client 9's JSON body. The device's secret is the ``key`` of the server
  URL configured in the app (the app keeps the URL's query), or of the form body. The device must be a live OsmAnd
  login (``owns``) and the key its secret. Answers: 200 once stored (the apps read nothing more), 401 for a bad key,
  429 for an address over its failure limit, 400 for a refused report, 503 when it was not stored in time (the apps
  send it again).
* :meth:`OsmAndGateway.forward` (``POST /gateway/traccar``): Traccar's JSON position forwarding
  (``forward.type=json``). The hub's API token in Traccar's ``forward.header`` authenticates the Traccar server (the
  route checks it); a position is stored only for a device that is a live OsmAnd login of this hub, its Traccar
  ``uniqueId`` being the device id. A Traccar server tracks more devices than the hub usually does, so another
  device's position is answered 200 ``{"stored": 0, "refused": "unknown_device"}`` and counted: a 4xx would make
  Traccar retry (``forward.retry.enable``) and log every position of those devices as a failure.

Commands (:class:`~hub.gateways.commands.DeviceCommands`): the protocol is one-way (a report and its 200), so
nothing reaches the phone; ``can_sign`` is False, and a command for it is counted as undeliverable.
"""

from __future__ import annotations

import logging
from typing import Final

from hub.gateways.errors import CodecError
from hub.gateways.osmand.codec import Report, decode_forward, decode_json, decode_query, secret_of
from hub.gateways.phones import Outcome, PhoneGateway

__all__ = ["OsmAndGateway"]

log = logging.getLogger(__name__)

_NO_CONTENT: Final = b" \t\r\n"


def _target(query: str) -> str:
    # As a request target ("?..."): the codec cuts a bare query at its first "?", which a value may hold unescaped.
    return "?" + query


def _is_json(body: bytes, content_type: str | None) -> bool:
    return (content_type is not None and "json" in content_type.lower()) or body.lstrip(_NO_CONTENT)[:1] == b"{"


class OsmAndGateway(PhoneGateway):
    """See the module docstring."""

    protocol = "osmand"

    async def report(self, query: str, body: bytes, content_type: str | None, client: str | None) -> Outcome:
        """One report of a phone: ``query`` the request's query string, ``body`` its body (may be empty)."""
        try:
            key = secret_of(_target(query))
            report = self._decode(query, body, content_type)
            if key is None and body.strip(_NO_CONTENT) and not _is_json(body, content_type):
                key = secret_of(b"?" + body)
        except CodecError as exc:
            return self.refuse("", exc.reason, exc.detail)
        refused = await self.secrets.check(report.device_id, key, client)
        if refused is not None:
            return self.denied(report.device_id, refused)
        return await self._store(report, Outcome(200))

    def _decode(self, query: str, body: bytes, content_type: str | None) -> Report:
        now = self.wall_ms()
        if not body.strip(_NO_CONTENT):
            return decode_query(_target(query), datum=self.datum, now_ms=now)  # OsmAnd: GET, all in the query
        if _is_json(body, content_type):
            return decode_json(body, datum=self.datum, now_ms=now)  # Traccar Client 9+
        return decode_query(b"?" + body, datum=self.datum, now_ms=now)  # a form body

    async def forward(self, body: bytes, only_device: str | None = None) -> Outcome:
        """One position a Traccar server forwards. ``only_device``: the caller's token is bound to this device, and
        may forward its positions alone (403 for another's)."""
        try:
            report = decode_forward(body, datum=self.datum, now_ms=self.wall_ms())
        except CodecError as exc:
            return self.refuse("", exc.reason, exc.detail)
        if only_device is not None and report.device_id != only_device:
            self.rejects["forbidden"] += 1
            return Outcome(403, "forbidden", f"this token is bound to device {only_device}, not {report.device_id}")
        if not self.owns(report.device_id):
            self.rejects["unknown_device"] += 1
            log.debug("osmand: a forwarded position of %s, not an OsmAnd device of this hub", report.device_id)
            return Outcome(200, body={"stored": 0, "refused": "unknown_device"})
        self.counters["forwarded"] += 1
        return await self._store(report, Outcome(200, body={"stored": 1}))

    async def _store(self, report: Report, stored: Outcome) -> Outcome:
        try:
            future = self.submit_fix(report.device_id, report.fix)
        except Exception as exc:  # contained: a value the contract cannot encode is this report's refusal only
            return self.refuse(report.device_id, "bad_value", f"{type(exc).__name__}: {exc}")
        failure = await self.store(report.device_id, [future])
        if failure is not None:
            return self.not_stored(failure)
        return stored

    # --- commands -------------------------------------------------------------------------------------------------

    def can_sign(self, device_id: str) -> bool:
        return False  # a one-way protocol: nothing shows the phone a dispatch order

    def command(self, device_id: str, raw: bytes) -> None:
        """A contract command for an OsmAnd phone (CommandRouter): nothing can carry it; counted, never raises."""
        self.counters["command_undeliverable"] += 1
        log.info("osmand: %s reports over a one-way protocol; a command for it is not delivered", device_id)
