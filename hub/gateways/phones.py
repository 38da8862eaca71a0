"""What the phone gateways (OwnTracks, OsmAnd / Traccar Client) share: checking a phone's secret, and storing its
messages through the ingest pipeline before the phone is told "stored".

A phone's login (migration 011, :class:`~hub.storage.gateway_logins.GatewayLogin`) holds a PBKDF2 digest of its
secret. Checking one costs about a millisecond, and a phone reports every few seconds, so :class:`PhoneSecrets`
keeps each device's last accepted secret (its SHA-256, never the secret) for ``ttl_s``: a revoked or rotated login
stops working at the latest ``ttl_s`` later, at once when the composition root calls :meth:`PhoneSecrets.forget`,
and at once when it leaves the gateway's owned set (``owns``, checked on every request).

Failed checks are counted and limited per client address with the hub's :class:`~hub.access.auth.FailedAuthLimiter`
(the API's tokens share it): over the limit the answer is 429, and for ``retry_after_s`` that address's unknown
secrets are refused without hashing, so a scanner cannot turn PBKDF2 into its tool. A phone whose secret is cached
is never limited by its neighbours' failures behind the same NAT.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from devices import payloads
from devices.clock import now_ms
from devices.payloads import Event, Fix, Status
from devices.topics import Channel, device_topic
from geo.gcj02 import Datum
from hub.access.auth import FailedAuthLimiter
from hub.domain.device_login import StoredLogin, verify_secret
from hub.gateways.submit import Submit, consume
from hub.storage.gateway_logins import GatewayLogin

__all__ = ["Logins", "Outcome", "PhoneGateway", "PhoneSecrets", "Submit", "consume"]

log = logging.getLogger(__name__)

# A digest nobody's secret matches: an unknown device costs the same hash as a known one (no timing oracle).
_DUMMY: Final = StoredLogin("-", "fieldhub-dummy", "00" * 64)


class Logins(Protocol):
    """The part of :class:`~hub.storage.gateway_logins.GatewayLoginStore` a phone gateway reads (live logins)."""

    async def by_ident(self, protocol: str, ident: str) -> GatewayLogin | None: ...

    async def by_device(self, device_id: str) -> GatewayLogin | None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an HTTP request of a phone is answered: 200 with ``body``, or a refusal (``reason``, ``detail``)."""

    status: int
    reason: str = ""
    detail: str = ""
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Cached:
    digest: bytes  # SHA-256 of the secret that was accepted
    expires: float


class PhoneSecrets:
    """Checks ``(device id, secret)`` against the device's live login of ``protocol``; see the module docstring."""

    def __init__(self, logins: Logins, protocol: str, owns: Callable[[str], bool], *,
                 limiter: FailedAuthLimiter | None = None, ttl_s: float = 60.0, max_cached: int = 100_000,
                 clock: Callable[[], float] = time.monotonic, wall_ms: Callable[[], int] = now_ms) -> None:
        self.logins = logins
        self.protocol = protocol
        self.owns = owns
        self.limiter = limiter
        self.ttl_s = ttl_s
        self.max_cached = max_cached
        self.clock = clock
        self.wall_ms = wall_ms
        self.counters: Counter[str] = Counter()  # cache_hits, hashes, failures, limited, lookup_failed
        self._cache: OrderedDict[str, _Cached] = OrderedDict()  # oldest first
        self._blocked: dict[str, float] = {}  # client address -> until (clock), after the limiter said no
        # Bumped by every forget: a check that read a login before a rotation does not cache what it read.
        self._epoch = 0

    def forget(self, device_id: str) -> None:
        """The device's login was revoked or rotated: its cached secret stops working now."""
        self._cache.pop(device_id, None)
        self._epoch += 1

    def clear(self) -> None:
        self._cache.clear()
        self._epoch += 1

    async def check(self, device_id: str, presented: str | None, client: str | None) -> str | None:
        """None when ``presented`` is the device's secret; else why not: ``bad_secret``, ``unknown_device``,
        ``too_many_failures`` (the client is over its limit) or ``login_unavailable`` (the store failed)."""
        if not self.owns(device_id):
            return self._failed(client, "unknown_device")
        if presented is None or not presented:
            return "bad_secret"  # no secret at all is no guess: not counted against the address
        if len(presented) > 256:
            return self._failed(client, "bad_secret")
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        now = self.clock()
        cached = self._cache.get(device_id)
        if cached is not None and cached.expires > now and hmac.compare_digest(cached.digest, digest):
            self.counters["cache_hits"] += 1
            return None
        if client is not None and self._blocked.get(client, 0.0) > now:
            self.counters["limited"] += 1
            return "too_many_failures"
        epoch = self._epoch
        try:
            login = await self.logins.by_ident(self.protocol, device_id)
        except Exception as exc:  # contained: the database away is a 503 for this phone, not a crash
            self.counters["lookup_failed"] += 1
            log.warning("%s: the login of %s could not be read: %s", self.protocol, device_id, exc)
            return "login_unavailable"
        self.counters["hashes"] += 1
        stored = login.secret if login is not None and login.protocol == self.protocol else None
        if not verify_secret(stored or _DUMMY, presented) or stored is None:
            return self._failed(client, "unknown_device" if login is None else "bad_secret")
        if epoch == self._epoch:  # else a rotation or revocation came while the login was read: check it next time
            self._cache.pop(device_id, None)
            self._cache[device_id] = _Cached(digest, now + self.ttl_s)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return None

    def _failed(self, client: str | None, reason: str) -> str:
        self.counters["failures"] += 1
        if client is None or self.limiter is None or self.limiter.failed(client, self.wall_ms()):
            return reason
        self.counters["limited"] += 1
        now = self.clock()
        if len(self._blocked) >= self.max_cached:
            self._blocked = {c: until for c, until in self._blocked.items() if until > now}
            if len(self._blocked) >= self.max_cached:
                self._blocked.clear()  # that many addresses at once: forgetting them only lets each fail anew
        self._blocked[client] = now + self.limiter.retry_after_s
        return "too_many_failures"


class PhoneGateway:
    """The base of a phone gateway: counters, refusals by reason, and :meth:`store` (submit, wait for the commit).

    ``rejects`` counts refused messages by reason (:data:`hub.gateways.errors.REASONS`, ``unknown_device`` and
    ``forbidden``); ``counters`` what the pipeline took (``fixes``, ``events``, ``status``) and how storing went
    (``store_refused``, ``store_timeout``, ``store_failed``), ``limited`` and ``login_unavailable`` answers, and
    commands; ``ignored`` well-formed messages the hub has no use for, by type.
    """

    protocol: str = ""

    def __init__(self, *, submit: Submit, logins: Logins, owns: Callable[[str], bool], datum: Datum = "wgs84",
                 limiter: FailedAuthLimiter | None = None, secret_ttl_s: float = 60.0, store_timeout_s: float = 5.0,
                 wall_ms: Callable[[], int] = now_ms, clock: Callable[[], float] = time.monotonic) -> None:
        self.submit = submit
        self.logins = logins
        self.owns = owns
        self.datum: Datum = datum
        self.store_timeout_s = store_timeout_s
        self.wall_ms = wall_ms
        self.secrets = PhoneSecrets(logins, self.protocol, owns, limiter=limiter, ttl_s=secret_ttl_s, clock=clock,
                                    wall_ms=wall_ms)
        self.counters: Counter[str] = Counter()
        self.rejects: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()

    def forget(self, device_id: str) -> None:
        """Call on a revocation or rotation of the device's login: its cached secret stops working at once."""
        self.secrets.forget(device_id)

    @property
    def fixes(self) -> int:
        return self.counters["fixes"]

    def refuse(self, device_id: str, reason: str, detail: str) -> Outcome:
        """Count a refused message and say so to the phone: 400 with the reason."""
        self.rejects[reason] += 1
        log.info("%s: a message from %s refused: %s (%s)", self.protocol, device_id or "?", reason, detail)
        return Outcome(400, reason, detail)

    def denied(self, device_id: str, reason: str, challenge: str | None = None) -> Outcome:
        """What a failed secret check is answered (401, 429 or 503), counted."""
        if reason == "too_many_failures":
            self.counters["limited"] += 1
            retry = self.secrets.limiter.retry_after_s if self.secrets.limiter is not None else 60
            return Outcome(429, reason, "too many failed authentications from this address",
                           headers={"Retry-After": str(retry)})
        if reason == "login_unavailable":
            self.counters[reason] += 1
            return Outcome(503, "unavailable", "the device registry is unavailable; retry shortly",
                           headers={"Retry-After": "5"})
        self.rejects[reason] += 1
        headers = {"WWW-Authenticate": challenge} if challenge else {}
        # One answer for an unknown device and a wrong secret: a guesser learns nothing of which it was.
        return Outcome(401, "unauthorized", "the device id or its secret is not accepted", headers=headers)

    # --- into the pipeline --------------------------------------------------------------------------------------

    def submit_fix(self, device_id: str, fix: Fix) -> asyncio.Future[None] | None:
        return self._submit(device_id, "telemetry", payloads.encode_fixes([fix]), "fixes")

    def submit_event(self, device_id: str, event: Event) -> asyncio.Future[None] | None:
        return self._submit(device_id, "event", payloads.encode_event(event), "events")

    def submit_status(self, device_id: str, status: Status) -> asyncio.Future[None] | None:
        # Retained, QoS 1, as a native device's status and Last Will: the latest state is what the hub keeps.
        return self._submit(device_id, "status", payloads.encode_status(status), "status", retained=True)

    def _submit(self, device_id: str, channel: Channel, payload: bytes, counter: str, retained: bool = False
                ) -> asyncio.Future[None] | None:
        """Hand one message to the pipeline (QoS 1); counted under ``counter`` once the pipeline took it."""
        future = self.submit(device_topic(device_id, channel), payload, 1, retained)
        if future is None:
            self.counters["store_refused"] += 1
            log.warning("%s: the pipeline refused a %s message of %s (full)", self.protocol, channel, device_id)
        else:
            self.counters[counter] += 1
        return future

    async def store(self, device_id: str, futures: list[asyncio.Future[None] | None]) -> str | None:
        """Wait (bounded) for the commits of messages just submitted; None once all are committed, else why not."""
        if any(f is None for f in futures):
            return "store_refused"  # counted when submitted
        pending = {f for f in futures if f is not None}
        try:
            # Shielded: a future is shared by every message of the cut, a time-out here must not cancel it.
            async with asyncio.timeout(self.store_timeout_s):
                for future in pending:
                    await asyncio.shield(future)
        except TimeoutError:
            self.counters["store_timeout"] += 1
            log.warning("%s: a message of %s not committed within %.1f s", self.protocol, device_id,
                        self.store_timeout_s)
            for future in pending:
                future.add_done_callback(consume)
            return "store_timeout"
        except Exception:  # contained: a failed commit is counted, the phone is still answered
            self.counters["store_failed"] += 1
            log.exception("%s: storing a message of %s failed", self.protocol, device_id)
            return "store_failed"
        return None

    def not_stored(self, why: str) -> Outcome:
        return Outcome(503, "not_stored", f"the hub did not store the message ({why}); send it again",
                       headers={"Retry-After": "5"})


