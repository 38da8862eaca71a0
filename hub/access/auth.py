"""Bearer tokens: random secrets, stored only as salted SHA-256 digests."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
from typing import Final

from hub.domain.ratelimit import Limit, RateLimiter

log = logging.getLogger(__name__)

ROLES: Final = ("admin", "dispatcher", "viewer", "drone_operator", "device")
# What each role may do on top of reading. Admin may do everything.
READ_ROLES: Final = frozenset({"admin", "dispatcher", "viewer", "drone_operator"})
WRITE_UNITS: Final = frozenset({"admin", "dispatcher"})


def new_secret() -> str:
    """A token as handed to a user: ``fh_`` + 32 url-safe random bytes."""
    return "fh_" + secrets.token_urlsafe(32)


def digest(secret: str, pepper: str) -> str:
    """What is stored: HMAC-SHA256 of the token with a server-side pepper."""
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


class FailedAuthLimiter:
    """Failed authentications per client address, as token buckets (:mod:`hub.domain.ratelimit`).

    Only failures take from a bucket: a request with a valid token is never limited by it, so many users behind
    one address (a NAT, a proxy) keep working while someone among them guesses. Guessing a 256-bit token is
    hopeless anyway; the limit keeps a scanner from turning the hub's CPU and logs into its tool.
    """

    KIND: Final = "auth_failure"

    def __init__(self, per_min: float, burst: int, max_clients: int = 100_000) -> None:
        self._buckets = RateLimiter({self.KIND: Limit(per_min / 60, burst)})
        self.max_clients = max_clients
        self.retry_after_s = max(1, math.ceil(60 / per_min))  # a bucket gains one failure's worth in this time
        self.refused = 0  # failures answered 429 instead of 401

    def failed(self, client: str, now_ms: int) -> bool:
        """Count a failure from ``client``; False when it is over its limit (answer 429, not 401)."""
        if len(self._buckets) >= self.max_clients and self._buckets.evict_idle(now_ms) == 0:
            # Every bucket still busy: that many addresses failing at once is a spread-out attack, and the
            # memory of the buckets must stay bounded. Forgetting them only lets each address fail anew.
            log.warning("failed-auth limiter: %d addresses failing at once; buckets cleared", len(self._buckets))
            self._buckets.forget(set())
        if self._buckets.allow(self.KIND, client, now_ms):
            return True
        self.refused += 1
        return False
