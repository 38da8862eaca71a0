"""SQL of gateway devices' logins (migration 011): JT/T 808 terminals by phone number, OwnTracks and OsmAnd phones by
device id; each with a PBKDF2 digest of its secret (a JT/T 808 terminal's: of the code it was given at registration).

A device has one login kind: :meth:`GatewayLoginStore.add` refuses a device with a live MQTT or SIP login, as their
stores refuse one with a live gateway login.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

import psycopg

from hub.domain.device_login import StoredLogin
from hub.domain.gateway_login import GATEWAY_PROTOCOLS
from hub.storage.database import Database
from hub.storage.device_logins import LoginProblem, claim_device

__all__ = ["GatewayLogin", "GatewayLoginStore"]

_COLUMNS = ("g.device_id, d.unit_id, g.protocol, g.ident, g.salt, g.secret_hash, g.iterations, g.terminal_id, "
            "g.registration_open")
_SELECT = f"SELECT {_COLUMNS} FROM gateway_logins g JOIN devices d USING (device_id) "


@dataclass(frozen=True, slots=True)
class GatewayLogin:
    device_id: str
    unit_id: str
    protocol: str  # "jt808" | "owntracks" | "osmand"
    ident: str  # jt808: the phone number (digits, no leading zeros); the apps: the device id
    secret: StoredLogin | None  # username = device_id; jt808: None until the terminal registered
    terminal_id: str | None  # jt808 only: the terminal id its registration must carry, when provisioned
    registration_open: bool  # jt808 only: the next registration from this phone gets a new code


def _login(row: tuple[Any, ...]) -> GatewayLogin:
    device_id, unit_id, protocol, ident, salt, secret_hash, iterations, terminal_id, open_ = row
    secret = StoredLogin(device_id, salt, secret_hash, iterations) if secret_hash is not None else None
    return GatewayLogin(device_id, unit_id or "", protocol, ident, secret, terminal_id, bool(open_))


class GatewayLoginStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, device_id: str, unit_id: str, kind: str | None, protocol: str, ident: str, *,
                  secret: StoredLogin | None, terminal_id: str | None = None) -> None:
        """Register the device on its unit with a gateway login. Refused (:class:`LoginProblem`): an unknown unit
        (``unknown_unit``), a device with a live login of any kind or an identifier another live login has
        (``exists``), a login that does not fit its protocol (``invalid``). A revoked device may be added again."""
        if protocol not in GATEWAY_PROTOCOLS:
            raise LoginProblem("invalid", f"protocol must be one of {', '.join(GATEWAY_PROTOCOLS)}")
        jt808 = protocol == "jt808"
        if jt808 != (secret is None) or (terminal_id is not None and not jt808):
            raise LoginProblem("invalid", "a JT/T 808 terminal gets its code at registration; a phone app gets a "
                                          "secret now (and only a JT/T 808 terminal has a terminal id)")
        async with self.db.connection() as conn, conn.transaction():
            await claim_device(conn, device_id, unit_id, kind)
            cur = await conn.execute("SELECT device_id FROM gateway_logins WHERE protocol = %s AND ident = %s "
                                     "AND revoked_at IS NULL", (protocol, ident))
            row = await cur.fetchone()
            if row is not None:
                raise LoginProblem("exists", f"{protocol} identifier {ident} is already device {row[0]}'s login")
            salt, digest, iterations = ((secret.salt, secret.secret_hash, secret.iterations) if secret is not None
                                        else (None, None, 1000))
            try:
                await conn.execute(
                    "INSERT INTO gateway_logins (device_id, protocol, ident, salt, secret_hash, iterations, "
                    "terminal_id, registration_open) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (device_id) DO UPDATE SET protocol = EXCLUDED.protocol, ident = EXCLUDED.ident, "
                    "salt = EXCLUDED.salt, secret_hash = EXCLUDED.secret_hash, iterations = EXCLUDED.iterations, "
                    "terminal_id = EXCLUDED.terminal_id, registration_open = EXCLUDED.registration_open, "
                    "created_at = now(), rotated_at = NULL, revoked_at = NULL",
                    (device_id, protocol, ident, salt, digest, iterations, terminal_id, jt808))
            except psycopg.errors.UniqueViolation as exc:  # the same identifier added at the same time
                raise LoginProblem("exists", f"{protocol} identifier {ident} was just given to another device") \
                    from exc
            except psycopg.errors.CheckViolation as exc:
                raise LoginProblem("invalid", f"not a valid {protocol} login: {exc.diag.constraint_name}") from exc

    async def _one(self, where: str, params: tuple[Any, ...]) -> GatewayLogin | None:
        async with self.db.connection() as conn:
            cur = await conn.execute(_SELECT + where, params)
            row = await cur.fetchone()
            return _login(row) if row is not None else None

    async def by_ident(self, protocol: str, ident: str) -> GatewayLogin | None:
        """The live login of ``protocol`` known by ``ident``."""
        return await self._one("WHERE g.protocol = %s AND g.ident = %s AND g.revoked_at IS NULL", (protocol, ident))

    async def by_device(self, device_id: str) -> GatewayLogin | None:
        """The device's live gateway login."""
        return await self._one("WHERE g.device_id = %s AND g.revoked_at IS NULL", (device_id,))

    async def issue_code(self, device_id: str, code: StoredLogin) -> bool:
        """Store a JT/T 808 terminal's new authentication code and close its registration window, atomically and only
        while the window is open: of two registrations at once, one gets True."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "UPDATE gateway_logins SET salt = %s, secret_hash = %s, iterations = %s, registration_open = false "
                "WHERE device_id = %s AND protocol = 'jt808' AND registration_open AND revoked_at IS NULL",
                (code.salt, code.secret_hash, code.iterations, device_id))
            return cur.rowcount == 1

    async def _change(self, sql: str, params: tuple[Any, ...], device_id: str) -> GatewayLogin:
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(sql + " RETURNING device_id", params)
            if await cur.fetchone() is None:
                raise LoginProblem("unknown_device", f"device {device_id} has no live gateway login")
            cur = await conn.execute(_SELECT + "WHERE g.device_id = %s", (device_id,))
            row = await cur.fetchone()
            assert row is not None  # just changed in this transaction
            return _login(row)

    async def rotate(self, device_id: str, secret: StoredLogin | None) -> GatewayLogin:
        """A phone app's new secret; for a JT/T 808 terminal (``secret`` None) the code is dropped and the
        registration window reopened: the terminal's next registration gets a new code."""
        if secret is None:
            return await self._change(
                "UPDATE gateway_logins SET salt = NULL, secret_hash = NULL, registration_open = true, "
                "rotated_at = now() WHERE device_id = %s AND protocol = 'jt808' AND revoked_at IS NULL",
                (device_id,), device_id)
        return await self._change(
            "UPDATE gateway_logins SET salt = %s, secret_hash = %s, iterations = %s, rotated_at = now() "
            "WHERE device_id = %s AND protocol <> 'jt808' AND revoked_at IS NULL",
            (secret.salt, secret.secret_hash, secret.iterations, device_id), device_id)

    async def revoke(self, device_id: str) -> GatewayLogin:
        """End the device's login (its identifier is free again); returns the revoked login."""
        return await self._change("UPDATE gateway_logins SET revoked_at = now(), registration_open = false "
                                  "WHERE device_id = %s AND revoked_at IS NULL", (device_id,), device_id)

    async def live(self, protocol: str | None = None) -> builtins.list[GatewayLogin]:
        """Every live gateway login (of ``protocol``), by device id."""
        async with self.db.connection() as conn:
            cur = await conn.execute(_SELECT + "WHERE g.revoked_at IS NULL AND (%s::text IS NULL OR g.protocol = %s) "
                                     "ORDER BY g.device_id", (protocol, protocol))
            return [_login(row) for row in await cur.fetchall()]

    async def revoked(self, protocol: str) -> builtins.list[str]:
        """Device ids whose ``protocol`` login is revoked (and not live again)."""
        async with self.db.connection() as conn:
            cur = await conn.execute("SELECT device_id FROM gateway_logins WHERE protocol = %s "
                                     "AND revoked_at IS NOT NULL", (protocol,))
            return [str(row[0]) for row in await cur.fetchall()]
