"""HTTP digest authentication (RFC 2617 / RFC 7616, MD5) as a SIP registrar checks it.

Pure: the registrar passes the time in and owns the I/O. Devices answer with ``qop=auth`` (nc and cnonce) or,
older ones, without qop at all (RFC 2069 style), so both are accepted; ``auth-int`` and ``-sess`` are not
offered and are refused.

A registrar need not keep passwords: what it is given per device may be the password or its :class:`Ha1`
(``MD5(username:realm:password)``, what SIP servers conventionally store), which answers the challenge of that
one realm only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Credentials",
    "DigestError",
    "Ha1",
    "NonceTable",
    "Verdict",
    "challenge",
    "expected_response",
    "ha1_of",
    "parse_authorization",
    "verify",
]

Verdict = Literal["ok", "stale", "unknown_nonce", "wrong_response", "wrong_realm", "unsupported"]
NonceState = Literal["fresh", "stale", "unknown"]


class Ha1(str):
    """A stored ``MD5(username:realm:password)`` (32 lower-case hex digits) given where a password is expected:
    :func:`expected_response` uses it as it is instead of hashing it as a password."""

    __slots__ = ()


def ha1_of(username: str, realm: str, password: str) -> Ha1:
    """The digest secret a registrar stores instead of the password (valid for this realm only)."""
    return Ha1(_md5(f"{username}:{realm}:{password}"))


class DigestError(ValueError):
    """An Authorization header that cannot be read as digest credentials."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """The fields of a digest ``Authorization`` header that a registrar checks."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


def _split_params(text: str) -> list[str]:
    """Split on commas outside double quotes (quoted values may hold commas)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_authorization(value: str) -> Credentials:
    """Read a ``Digest ...`` Authorization value; raise DigestError saying what is missing or wrong."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"scheme {scheme[:20]!r} is not Digest")
    params: dict[str, str] = {}
    for part in _split_params(rest):
        key, eq, raw = part.partition("=")
        if not eq:
            raise DigestError(f"parameter {key[:20]!r} has no value")
        raw = raw.strip()
        if raw.startswith('"'):
            if len(raw) < 2 or not raw.endswith('"'):
                raise DigestError(f"parameter {key.strip()[:20]!r} has an unterminated quote")
            raw = raw[1:-1]
        params[key.strip().lower()] = raw
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
    if missing:
        raise DigestError(f"missing {', '.join(missing)}")
    return Credentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=params.get("algorithm", "MD5"),
        qop=params.get("qop"),
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
    )


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def expected_response(
    *,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` a client holding ``password`` computes (RFC 2617 section 3.2.2.1); ``password`` may be
    the stored :class:`Ha1` of the username and realm instead."""
    ha1 = str(password) if isinstance(password, Ha1) else _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop is None:
        return _md5(f"{ha1}:{nonce}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def challenge(realm: str, nonce: str, *, stale: bool = False) -> str:
    """The ``WWW-Authenticate`` value of a 401; qop is offered, old devices may still answer without it."""
    value = f'Digest realm="{realm}", nonce="{nonce}", algorithm=MD5, qop="auth"'
    return value + ", stale=true" if stale else value


class NonceTable:
    """The nonces this registrar has issued, each with its issue time.

    Bounded: when full the oldest is forgotten, so a flood of unauthenticated REGISTERs costs memory only up to
    ``max_size``; a device whose nonce was forgotten is simply challenged again. A nonce older than
    ``lifetime_s`` is ``stale``: the password was right, the client retries with the new nonce without asking
    its user (RFC 2617 ``stale=true``).
    """

    def __init__(
        self,
        *,
        lifetime_s: float = 300.0,
        max_size: int = 4096,
        token: Callable[[], str] = lambda: secrets.token_hex(16),
    ) -> None:
        self.lifetime_s = lifetime_s
        self.max_size = max_size
        self._token = token
        self._issued: OrderedDict[str, float] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._issued)

    def issue(self, now: float) -> str:
        nonce = self._token()
        self._issued[nonce] = now
        while len(self._issued) > self.max_size:
            self._issued.popitem(last=False)
            self.evicted += 1
        return nonce

    def state(self, nonce: str, now: float) -> NonceState:
        issued = self._issued.get(nonce)
        if issued is None:
            return "unknown"
        if now - issued > self.lifetime_s:
            return "stale"
        return "fresh"

    def forget(self, nonce: str) -> None:
        self._issued.pop(nonce, None)


def verify(
    creds: Credentials,
    *,
    method: str,
    password: str,
    realm: str,
    nonces: NonceTable,
    now: float,
) -> Verdict:
    """Check ``creds`` for a request with ``method``; the password is checked before staleness is reported.

    A stale nonce with a wrong password is ``wrong_response``, so ``stale`` never invites a password guess.
    """
    if creds.algorithm.upper() != "MD5":
        return "unsupported"
    if creds.qop is not None and (creds.qop.lower() != "auth" or not creds.nc or not creds.cnonce):
        return "unsupported"
    if creds.realm != realm:
        return "wrong_realm"
    state = nonces.state(creds.nonce, now)
    if state == "unknown":
        return "unknown_nonce"
    want = expected_response(
        username=creds.username,
        realm=realm,
        password=password,
        method=method,
        uri=creds.uri,
        nonce=creds.nonce,
        qop=creds.qop.lower() if creds.qop else None,
        nc=creds.nc,
        cnonce=creds.cnonce,
    )
    if not hmac.compare_digest(want.encode("ascii"), creds.response.lower().encode("utf-8", "replace")):
        return "wrong_response"
    return "stale" if state == "stale" else "ok"
