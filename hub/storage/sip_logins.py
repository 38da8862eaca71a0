"""SQL of GB/T 28181 devices' SIP logins: the digest HA1 of each device's password (migration 010)."""

from __future__ import annotations

from hub.storage.database import Database
from hub.storage.device_logins import LoginProblem, claim_device

__all__ = ["SipLoginStore"]


class SipLoginStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, device_id: str, unit_id: str, kind: str | None, realm: str, ha1: str) -> None:
        """Register the device on its unit with a SIP login; refused when it has a live login of any kind."""
        async with self.db.connection() as conn, conn.transaction():
            await claim_device(conn, device_id, unit_id, kind)
            await conn.execute(
                "INSERT INTO sip_logins (device_id, realm, ha1) VALUES (%s, %s, %s) ON CONFLICT (device_id) DO UPDATE "
                "SET realm = EXCLUDED.realm, ha1 = EXCLUDED.ha1, created_at = now(), rotated_at = NULL, "
                "revoked_at = NULL", (device_id, realm, ha1))

    async def has_live(self, device_id: str) -> bool:
        async with self.db.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM sip_logins WHERE device_id = %s AND revoked_at IS NULL",
                                     (device_id,))
            return await cur.fetchone() is not None

    async def rotate(self, device_id: str, realm: str, ha1: str) -> None:
        async with self.db.connection() as conn:
            cur = await conn.execute("UPDATE sip_logins SET realm = %s, ha1 = %s, rotated_at = now() "
                                     "WHERE device_id = %s AND revoked_at IS NULL", (realm, ha1, device_id))
            if cur.rowcount == 0:
                raise LoginProblem("unknown_device", f"device {device_id} has no live SIP login")

    async def revoke(self, device_id: str) -> None:
        async with self.db.connection() as conn:
            cur = await conn.execute("UPDATE sip_logins SET revoked_at = now() WHERE device_id = %s "
                                     "AND revoked_at IS NULL", (device_id,))
            if cur.rowcount == 0:
                raise LoginProblem("unknown_device", f"device {device_id} has no live SIP login")

    async def secret(self, device_id: str) -> tuple[str, str] | None:
        """(realm, HA1) of the device's live SIP login, or None."""
        async with self.db.connection() as conn:
            cur = await conn.execute("SELECT realm, ha1 FROM sip_logins WHERE device_id = %s AND revoked_at IS NULL",
                                     (device_id,))
            row = await cur.fetchone()
            return (str(row[0]), str(row[1])) if row is not None else None

    async def live_ids(self) -> list[str]:
        async with self.db.connection() as conn:
            cur = await conn.execute("SELECT device_id FROM sip_logins WHERE revoked_at IS NULL")
            return [str(row[0]) for row in await cur.fetchall()]
