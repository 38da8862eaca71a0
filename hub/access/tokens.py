"""The hub's API tokens in memory, kept current by PostgreSQL LISTEN/NOTIFY.

Every bearer check is answered here, without a query: the registry loads the whole ``tokens`` table at start and
then follows it on a connection of its own that LISTENs on ``fieldhub_tokens`` (migration 007 notifies on every
change, whoever makes it). So

- a revocation made by this process applies at once (the registry is updated before the API answers);
- one made elsewhere (the CLI, another hub, psql) applies when its NOTIFY arrives, well within a second;
- expiry is tested against the clock on every check, not when a row is read;
- while the database is away the table in memory answers: revoked stay revoked, expired stay expired, known
  valid tokens keep working. When the listening connection comes back the whole table is reloaded, since
  notifications sent while it was down are lost.

A revocation is final: a reload that raced with it (read before its commit) cannot bring the token back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final

import psycopg
from psycopg import AsyncConnection

from devices.tasks import cancel_and_wait
from hub.access import auth
from hub.errors import HubError, StorageUnavailable, one_line
from hub.storage.tokens import TokenRecord, TokenStore, fetch_all, fetch_one, listen

__all__ = ["MAX_LIFETIME_S", "MAX_NAME", "MIN_LIFETIME_S", "InvalidToken", "TokenRecord", "TokenRefused",
           "TokenRegistry", "check_new_token", "format_table", "parse_duration"]

log = logging.getLogger(__name__)

MAX_LIFETIME_S: Final = 10 * 365 * 86400
# The shortest lifetime: below it the expiry would equal the creation time at the database's microsecond
# resolution (and a token that lives for less than a second is of no use to anyone).
MIN_LIFETIME_S: Final = 1.0
MAX_NAME: Final = 200
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenRefused(HubError):
    """A bearer token that does not authenticate; ``reason`` is ``unknown``, ``revoked`` or ``expired``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason} token")
        self.reason = reason


class InvalidToken(HubError, ValueError):
    """A token that may not be created with these values (its name, role or lifetime); the message says why.
    A ValueError too, so callers that check a duration or a name typed on the command line catch it as one."""


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``3600s`` or ``3600`` -> seconds (:class:`InvalidToken` if not a lifetime)."""
    found = _DURATION.match(text)
    if found is None:
        raise InvalidToken(f"{text!r} is not a duration like 90d, 12h, 30m or 3600s")
    seconds = float(found.group(1)) * _UNIT_S[found.group(2)]
    check_new_token("x", auth.ROLES[0], seconds)
    return seconds


def check_new_token(name: str, role: str, expires_in_s: float | None) -> None:
    """:class:`InvalidToken` with the reason when a token with these values may not be created."""
    if role not in auth.ROLES:
        raise InvalidToken(f"unknown role {role!r}; one of: {', '.join(auth.ROLES)}")
    if not name.strip() or len(name) > MAX_NAME:
        raise InvalidToken(f"the name must have 1 to {MAX_NAME} characters")
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name):  # shown in listings and logs
        raise InvalidToken("the name may not contain control characters or line breaks")
    if expires_in_s is not None and not MIN_LIFETIME_S <= expires_in_s <= MAX_LIFETIME_S:
        raise InvalidToken(f"the lifetime must be at least {MIN_LIFETIME_S:g} s and at most "
                           f"{MAX_LIFETIME_S // 86400} days")


class TokenRegistry:
    """Use as ``async with TokenRegistry(...) as tokens``; :meth:`check` authenticates a secret."""

    def __init__(self, store: TokenStore, url: str, pepper: str, clock: Callable[[], int], *,
                 connect_timeout_s: float = 5.0, heartbeat_s: float = 10.0, retry_max_s: float = 5.0) -> None:
        self.store = store
        self.url = url
        self.pepper = pepper
        self.clock = clock
        self.connect_timeout_s = connect_timeout_s
        self.heartbeat_s = heartbeat_s
        self.retry_max_s = retry_max_s
        self._by_digest: dict[str, TokenRecord] = {}
        self._digest_of: dict[int, str] = {}  # token id -> digest; the only writer of both maps is _put/_drop
        self.listening = asyncio.Event()  # set while the LISTEN connection is up and the table was reloaded on it
        self.reloads = 0
        self.notifications = 0
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> TokenRegistry:
        self._replace(await self.store.all())  # a hub that cannot read its tokens does not start
        self._task = asyncio.create_task(self._follow(), name="token-registry")
        # A revocation made between the load above and the LISTEN is caught by the listener's own reload;
        # waiting for it only makes a fresh hub follow the table from its first request on.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening.wait(), self.connect_timeout_s + 1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    # --------------------------------------------------------------- checks
    def check(self, secret: str) -> TokenRecord:
        """The token of ``secret`` if it authenticates now; else :class:`TokenRefused` saying why."""
        record = self._by_digest.get(auth.digest(secret, self.pepper))
        if record is None:
            raise TokenRefused("unknown")
        state = record.state(self.clock())
        if state != "valid":
            raise TokenRefused(state)
        return record

    def known(self, secret: str) -> TokenRecord | None:
        """The token of ``secret`` in any state (revoked, expired), or None."""
        return self._by_digest.get(auth.digest(secret, self.pepper))

    def by_id(self, token_id: int) -> TokenRecord | None:
        digest = self._digest_of.get(token_id)
        return None if digest is None else self._by_digest.get(digest)

    def records(self) -> list[TokenRecord]:
        return sorted(self._by_digest.values(), key=lambda r: r.token_id)

    def __len__(self) -> int:
        return len(self._by_digest)

    # ----------------------------------------------------------- operations
    async def create(self, name: str, role: str, *, expires_in_s: float | None = None,
                     device_id: str | None = None, secret: str | None = None) -> tuple[str, TokenRecord]:
        """A new token: its secret (shown once, never stored) and its record. Usable at once by this hub."""
        check_new_token(name, role, expires_in_s)
        secret = secret or auth.new_secret()
        record = await self.store.insert(name, role, auth.digest(secret, self.pepper), device_id=device_id,
                                         expires_in_s=expires_in_s)
        self._put(record)
        return secret, record

    async def bootstrap(self, secret: str | None, name: str, role: str, variable: str) -> None:
        """A token given in the settings (``FIELDHUB_<variable>``) exists; one revoked or expired on purpose stays."""
        if not secret:
            return
        known = self.known(secret)
        if known is None:
            await self.create(name, role, secret=secret)
        elif known.state(self.clock()) != "valid":
            log.warning("the %s token (FIELDHUB_%s) is %s", name, variable, known.state(self.clock()))

    async def revoke(self, token_id: int) -> TokenRecord | None:
        """Revoke in the database, then here at once (not when the NOTIFY comes back); None: no such token."""
        record = await self.store.revoke(token_id)
        if record is not None:
            self._put(record)
        return record

    # ------------------------------------------------------------ the table
    def _put(self, record: TokenRecord) -> None:
        old_digest = self._digest_of.get(record.token_id)
        old = self._by_digest.get(old_digest) if old_digest is not None else None
        if old is not None and old.revoked_at is not None and record.revoked_at is None:
            record = replace(record, revoked_at=old.revoked_at)  # final: a stale read cannot undo it
        if old_digest is not None and old_digest != record.digest:
            del self._by_digest[old_digest]
        self._by_digest[record.digest] = record
        self._digest_of[record.token_id] = record.digest

    def _drop(self, token_id: int) -> None:
        digest = self._digest_of.pop(token_id, None)
        if digest is not None:
            self._by_digest.pop(digest, None)

    def _replace(self, records: list[TokenRecord]) -> None:
        """The whole table: rows gone from it are dropped, revocations known here are kept."""
        for token_id in set(self._digest_of) - {r.token_id for r in records}:
            self._drop(token_id)
        for record in records:
            self._put(record)

    # ------------------------------------------------------------- follower
    async def _follow(self) -> None:
        """LISTEN, reload, apply notifications; on any connection fault reconnect with a backoff (up to
        ``retry_max_s``) and reload. Meanwhile the table in memory keeps answering."""
        delay = 0.2
        failing = False
        while True:
            conn: AsyncConnection | None = None
            try:
                conn = await listen(self.url, self.connect_timeout_s)
                # Reloaded after LISTEN: a change committed in between is both in this read and in the queue.
                self._replace(await fetch_all(conn))
                self.reloads += 1
                self.listening.set()
                if failing:
                    log.info("token registry: listening again; %d tokens reloaded", len(self._by_digest))
                failing, delay = False, 0.2
                await self._apply_notifications(conn)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError, StorageUnavailable, TimeoutError) as exc:
                (log.debug if failing else log.warning)(
                    "token registry: not listening (%s); answering from memory, retrying", one_line(exc))
                failing = True
            except Exception:  # a bug must not end the following for good: it would stop revocations applying
                log.exception("token registry: following the tokens table failed; retrying")
                failing = True
            finally:
                self.listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_s)

    async def _apply_notifications(self, conn: AsyncConnection) -> None:
        while True:
            # Out of notifies() between batches: the generator holds the connection, and the rows are read on it.
            payloads = [n.payload async for n in conn.notifies(timeout=self.heartbeat_s, stop_after=1)]
            if not payloads:  # quiet: make sure the server is still there (keepalives catch a cut network)
                await asyncio.wait_for(conn.execute("SELECT 1"), self.connect_timeout_s)
            for payload in payloads:
                self.notifications += 1
                await self._apply(conn, payload)

    async def _apply(self, conn: AsyncConnection, payload: str) -> None:
        kind, _, ident = payload.partition(":")
        if kind == "reload":
            self._replace(await fetch_all(conn))
            return
        if kind not in ("upsert", "delete") or not ident.isdigit():
            log.warning("token registry: ignored a notification it does not understand: %r", payload[:80])
            return
        token_id = int(ident)
        record = await fetch_one(conn, token_id) if kind == "upsert" else None
        if record is None:
            self._drop(token_id)
        else:
            self._put(record)


def format_table(records: list[TokenRecord], now_ms: int) -> str:
    """The CLI's listing: one line per token, never its secret or digest; times in UTC."""
    rows = [("ID", "NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED", "STATE")]
    for r in records:
        rows.append((str(r.token_id), _shown(r.name), r.role, _utc(r.created_at),
                     _utc(r.expires_at) if r.expires_at is not None else "never",
                     _utc(r.revoked_at) if r.revoked_at is not None else "-", r.state(now_ms)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _shown(name: str) -> str:
    """A name as a terminal may print it: a row written by hand (psql) may hold what the API refuses."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in name)
