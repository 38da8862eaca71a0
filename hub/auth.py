"""Bearer tokens: random secrets, stored only as salted SHA-256 digests."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

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
