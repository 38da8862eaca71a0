"""SQL of device logins (the hub's side of per-device MQTT credentials)."""

from __future__ import annotations

import builtins
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from hub.domain.device_login import StoredLogin
from hub.storage.database import Database

__all__ = ["DeviceLoginStore", "LoginProblem"]


class LoginProblem(Exception):
    """Why a provisioning step cannot be done: ``code`` is ``unknown_unit``, ``unknown_device``, ``exists`` or
    ``revoked``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class DeviceLoginStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, device_id: str, unit_id: str, kind: str | None, login: StoredLogin) -> None:
        """Register the device on its unit and give it a login; a device with a live login is refused (rotate it
        instead). A revoked device may be added again: it gets a new secret."""
        async with self.db.connection() as conn, conn.transaction():
            await claim_device(conn, device_id, unit_id, kind)
            await conn.execute(
                "INSERT INTO device_logins (device_id, salt, secret_hash, iterations) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (device_id) DO UPDATE SET salt = EXCLUDED.salt, secret_hash = EXCLUDED.secret_hash, "
                "iterations = EXCLUDED.iterations, created_at = now(), rotated_at = NULL, revoked_at = NULL",
                (device_id, login.salt, login.secret_hash, login.iterations))

    async def rotate(self, device_id: str, login: StoredLogin) -> None:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "UPDATE device_logins SET salt = %s, secret_hash = %s, iterations = %s, rotated_at = now() "
                "WHERE device_id = %s AND revoked_at IS NULL",
                (login.salt, login.secret_hash, login.iterations, device_id))
            if cur.rowcount == 0:
                raise LoginProblem("unknown_device", f"device {device_id} has no live login")

    async def revoke(self, device_id: str) -> None:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "UPDATE device_logins SET revoked_at = now() WHERE device_id = %s AND revoked_at IS NULL",
                (device_id,))
            if cur.rowcount == 0:
                raise LoginProblem("unknown_device", f"device {device_id} has no live login")

    async def list(self) -> list[dict[str, Any]]:
        """Every device with its login state (``none``, ``active``, ``revoked``), the protocol of that login
        (``mqtt``, ``gb28181``, ``jt808``, ``owntracks``, ``osmand``; None without one) and the identifier it logs in
        with (``ident``: the device id, a JT/T 808 terminal's phone number); never a secret or digest. A device that
        had several kinds (all but one revoked) shows its live one."""
        async with self.db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT d.device_id, d.unit_id, d.kind, l.created_at, l.rotated_at, l.revoked_at, "
                "CASE WHEN l.device_id IS NULL THEN 'none' WHEN l.revoked_at IS NULL THEN 'active' "
                "ELSE 'revoked' END AS login, l.protocol, l.ident FROM devices d LEFT JOIN LATERAL ("
                " SELECT device_id, created_at, rotated_at, revoked_at, 'mqtt' AS protocol, device_id AS ident"
                " FROM device_logins m WHERE m.device_id = d.device_id UNION ALL"
                " SELECT device_id, created_at, rotated_at, revoked_at, 'gb28181', device_id FROM sip_logins s"
                " WHERE s.device_id = d.device_id UNION ALL"
                " SELECT device_id, created_at, rotated_at, revoked_at, protocol, ident FROM gateway_logins g"
                " WHERE g.device_id = d.device_id ORDER BY revoked_at DESC NULLS FIRST LIMIT 1) l ON true "
                "ORDER BY d.device_id")
            return await cur.fetchall()

    async def active(self) -> builtins.list[StoredLogin]:
        async with self.db.connection() as conn:
            cur = await conn.execute("SELECT device_id, salt, secret_hash, iterations FROM device_logins "
                                     "WHERE revoked_at IS NULL ORDER BY device_id")
            return [StoredLogin(*row) for row in await cur.fetchall()]

    async def active_ids(self, device_ids: builtins.list[str]) -> set[str]:
        async with self.db.connection() as conn:
            cur = await conn.execute("SELECT device_id FROM device_logins WHERE device_id = ANY(%s) "
                                     "AND revoked_at IS NULL", (device_ids,))
            return {row[0] for row in await cur.fetchall()}

    async def revoked(self) -> builtins.list[str]:
        async with self.db.connection() as conn:
            cur = await conn.execute("SELECT device_id FROM device_logins WHERE revoked_at IS NOT NULL")
            return [row[0] for row in await cur.fetchall()]


async def claim_device(conn: AsyncConnection[Any], device_id: str, unit_id: str, kind: str | None) -> None:
    """In the caller's transaction: the unit exists and the device has no live login of any kind (MQTT, SIP or a
    gateway's: a device has one), then the device is put on the unit. :class:`LoginProblem` otherwise. The device's
    MQTT login row, if any, is locked, so two adds of one device do not both pass."""
    cur = await conn.execute("SELECT 1 FROM units WHERE unit_id = %s", (unit_id,))
    if await cur.fetchone() is None:
        raise LoginProblem("unknown_unit", f"unit {unit_id} does not exist: create it first "
                                           f"(PUT /api/v1/units/{unit_id})")
    await conn.execute("SELECT 1 FROM device_logins WHERE device_id = %s FOR UPDATE", (device_id,))
    cur = await conn.execute(
        "SELECT 'a login' FROM device_logins WHERE device_id = %s AND revoked_at IS NULL UNION ALL "
        "SELECT 'a SIP login' FROM sip_logins WHERE device_id = %s AND revoked_at IS NULL UNION ALL "
        "SELECT 'a ' || protocol || ' login' FROM gateway_logins WHERE device_id = %s AND revoked_at IS NULL",
        (device_id, device_id, device_id))
    row = await cur.fetchone()
    if row is not None:
        raise LoginProblem("exists", f"device {device_id} already has {row[0]}: rotate or revoke it")
    await conn.execute(
        "INSERT INTO devices (device_id, unit_id, kind) VALUES (%s, %s, %s) ON CONFLICT (device_id) "
        "DO UPDATE SET unit_id = EXCLUDED.unit_id, kind = coalesce(EXCLUDED.kind, devices.kind)",
        (device_id, unit_id, kind))
