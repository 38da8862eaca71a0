"""API tokens: expiry, revocation at once (REST), within a second (CLI, NOTIFY), while the database is away;
listings without secrets; failed-auth rate limiting; the CLI's one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
import websockets
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from devices.clock import now_ms
from hub.access.auth import FailedAuthLimiter
from hub.access.tokens import MAX_LIFETIME_S, parse_duration
from hub.config import Settings
from hub.infra.embedded import EmbeddedPostgres, free_port
from hub.storage.tokens import LISTENER_NAME
from tests.conftest import TOKEN, RunningHub, running_hub, wait_for

PYTHON = [sys.executable, "-m", "fieldhub"]


def bearer(secret: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **extra}


async def admin_of(hub: RunningHub) -> dict[str, str]:
    return bearer(await hub.hub.create_token("admin", "ops"))


async def new_token(hub: RunningHub, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await hub.api.post("/api/v1/tokens", json={"name": "wall", "role": "viewer", **body}, headers=admin)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def status_with(hub: RunningHub, secret: str) -> int:
    return (await hub.api.get("/api/v1/units", headers=bearer(secret))).status_code


async def refusal(hub: RunningHub, secret: str) -> str:
    r = await hub.api.get("/api/v1/units", headers=bearer(secret))
    assert r.status_code == 401, r.text
    message: str = r.json()["error"]["message"]
    return message


async def cli(database_url: str, *args: str) -> tuple[int, str, str]:
    """`fieldhub ...` as a separate process, without blocking the hub running in this loop."""
    env = dict(os.environ, FIELDHUB_DATABASE_URL=database_url)
    proc = await asyncio.create_subprocess_exec(*PYTHON, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def revoke_in_database(url: str, token_id: int) -> None:
    """What another hub or psql would do: the running hub learns it only by NOTIFY."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("UPDATE tokens SET revoked_at = now() WHERE token_id = %s", (token_id,))


# ------------------------------------------------------------------ expiry and revocation
async def test_an_expired_token_is_refused_at_once(hub: RunningHub) -> None:
    admin = await admin_of(hub)
    token = await new_token(hub, admin, expires_in_s=1.5)
    assert token["expires_at"] - token["created_at"] == 1500 and token["state"] == "valid"
    assert await status_with(hub, token["token"]) == 200
    # The first request after the expiry instant is refused: no cache, no sweep interval.
    await asyncio.sleep(max(0.0, (token["expires_at"] - now_ms()) / 1000) + 0.02)
    assert await refusal(hub, token["token"]) == "expired token"
    listed = {t["id"]: t for t in (await hub.api.get("/api/v1/tokens", headers=admin)).json()["tokens"]}
    assert listed[token["id"]]["state"] == "expired"


async def test_a_token_revoked_through_the_api_is_refused_at_once(hub: RunningHub) -> None:
    admin = await admin_of(hub)
    token = await new_token(hub, admin, name="screen 3")
    assert await status_with(hub, token["token"]) == 200
    r = await hub.api.delete(f"/api/v1/tokens/{token['id']}", headers=admin)
    assert r.status_code == 200 and r.json()["state"] == "revoked" and r.json()["revoked_at"] is not None
    assert await refusal(hub, token["token"]) == "revoked token"  # the very next request
    again = await hub.api.delete(f"/api/v1/tokens/{token['id']}", headers=admin)
    assert again.status_code == 200 and again.json()["revoked_at"] == r.json()["revoked_at"]
    rows = await audit_rows(hub)
    assert ("ops", "admin", "token.create", str(token["id"])) in rows
    assert rows.count(("ops", "admin", "token.revoke", str(token["id"]))) == 1  # revoking again is no new act


async def audit_rows(hub: RunningHub) -> list[tuple[str, str | None, str, str]]:
    async with hub.hub.db.connection() as conn:
        cur = await conn.execute("SELECT actor, role, action, target FROM audit_log ORDER BY id")
        return [(str(a), r, str(b), str(c)) for a, r, b, c in await cur.fetchall()]


async def test_only_admins_manage_tokens_and_bad_input_is_a_4xx(hub: RunningHub) -> None:
    admin = await admin_of(hub)
    for method, path in (("GET", "/api/v1/tokens"), ("POST", "/api/v1/tokens"), ("DELETE", "/api/v1/tokens/1")):
        r = await hub.api.request(method, path, json={"name": "x", "role": "admin"})  # the dispatcher's token
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (method, r.text)
    assert (await hub.api.delete("/api/v1/tokens/999999", headers=admin)).status_code == 404
    for path in ("/api/v1/tokens/0", f"/api/v1/tokens/{2**63}", "/api/v1/tokens/x"):
        assert (await hub.api.delete(path, headers=admin)).status_code == 422, path
    viewer = {"name": "x", "role": "viewer"}
    for change in ({"name": "a\x00b"}, {"name": "a\u2028b"}, {"name": "   "}, {"name": "x" * 201}, {"role": "root"},
                   {"expires_in_s": 0}, {"expires_in_s": 8.4e-43}, {"expires_in_s": 0.5}, {"expires_in_s": -5},
                   {"expires_in_s": MAX_LIFETIME_S + 1}, {"expires_in_s": "1e999"}, {"device_id": "../x"}):
        body = {**viewer, **change}
        r = await hub.api.post("/api/v1/tokens", json=body, headers=admin)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid", (body, r.text)
    # What only the registry can say (a name of blanks) comes back in its own words, through the error table.
    r = await hub.api.post("/api/v1/tokens", json={**viewer, "name": "   "}, headers=admin)
    assert r.json()["error"] == {"code": "invalid", "message": "the name must have 1 to 200 characters"}, r.text


async def test_no_revoke_path_gets_a_500(hub: RunningHub) -> None:
    admin = await admin_of(hub)
    spared = {hub.hub.tokens.check(TOKEN).token_id, hub.hub.tokens.check(admin["Authorization"][7:]).token_id}
    victim = (await new_token(hub, admin))["id"]
    segments = st.one_of(st.integers().map(str), st.text(max_size=30), st.just(str(victim)),
                         st.sampled_from(["1e3", "0x10", "-1", "1_0", " 7", "9" * 40, "%00", "\ud800", "\x00", "/",
                                          "7/"]))

    def fuzz() -> None:
        with httpx.Client(base_url=hub.base_url, headers=admin, timeout=10) as http:
            @hsettings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(segments)
            def one(segment: str) -> None:
                digits = segment.strip().replace("_", "").lstrip("+")
                # isdecimal, not isdigit: int() refuses digits such as "²" that isdigit() accepts.
                assume(not (digits.isdecimal() and int(digits) in spared))  # the tokens this test runs with
                path = quote(segment.encode("utf-8", "surrogatepass"), safe="") or "%20"
                r = http.delete(f"/api/v1/tokens/{path}")
                if r.status_code == 307:  # "a/" decodes to a path with a trailing slash: redirected without it
                    assert segment.endswith("/") and "/api/v1/tokens" in r.headers["location"], (segment, r.headers)
                    return
                assert r.status_code in (200, 404, 422), (segment, r.status_code, r.text)
                if r.status_code != 200:
                    assert isinstance(r.json()["error"]["code"], str), r.text

            one()

    await asyncio.to_thread(fuzz)
    revoked = hub.hub.tokens.by_id(victim)  # drawn as it is, at least once
    assert revoked is not None and revoked.revoked_at is not None
    assert await status_with(hub, TOKEN) == 200


async def test_a_token_revoked_by_the_cli_is_refused_by_a_running_hub_within_two_seconds(
        hub: RunningHub, settings: Settings) -> None:
    secret = await hub.hub.create_token("viewer", "kiosk")
    token_id = hub.hub.tokens.check(secret).token_id
    assert await status_with(hub, secret) == 200
    code, out, err = await cli(settings.database_url or "", "token", "revoke", str(token_id))
    revoked_at = time.monotonic()
    assert code == 0, err
    assert f"token {token_id} (kiosk, viewer) revoked" in out

    async def refused() -> bool:
        return await status_with(hub, secret) == 401

    await wait_for(refused, timeout=2.0, interval=0.02)
    assert time.monotonic() - revoked_at < 2.0
    assert ("cli", None, "token.revoke", str(token_id)) in await audit_rows(hub)
    code, _, err = await cli(settings.database_url or "", "token", "revoke", "424242")
    assert code == 1 and err.strip() == "fieldhub: no token 424242"


async def test_the_registry_reloads_what_it_missed_while_its_connection_was_down(hub: RunningHub,
                                                                                settings: Settings) -> None:
    secret = await hub.hub.create_token("viewer", "missed")
    token_id = hub.hub.tokens.check(secret).token_id
    reloads = hub.hub.tokens.reloads
    # Cut the listening session and revoke in the same breath: its NOTIFY goes to nobody.
    async with await psycopg.AsyncConnection.connect(settings.database_url or "", autocommit=True) as conn:
        cur = await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                                 (LISTENER_NAME,))
        assert [row[0] for row in await cur.fetchall()] == [True]
        await conn.execute("UPDATE tokens SET revoked_at = now() WHERE token_id = %s", (token_id,))

    async def refused() -> bool:
        return await status_with(hub, secret) == 401

    await wait_for(refused, timeout=5.0)
    assert hub.hub.tokens.reloads > reloads


async def test_tokens_hold_while_the_database_is_stopped(settings: Settings, tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "outage-pg")
    url = pg.start()
    try:
        async with running_hub(settings.model_copy(update={"database_url": url})) as hub:
            admin = await admin_of(hub)
            kept = await new_token(hub, admin, name="kept")
            gone = await new_token(hub, admin, name="gone")
            elsewhere = await new_token(hub, admin, name="elsewhere")
            short = await new_token(hub, admin, name="short", expires_in_s=4)
            assert (await hub.api.delete(f"/api/v1/tokens/{gone['id']}", headers=admin)).status_code == 200
            await revoke_in_database(url, elsewhere["id"])
            async def revoked_elsewhere() -> bool:
                return await hub.hub.lookup_token(elsewhere["token"]) is None

            await wait_for(revoked_elsewhere, timeout=2)  # by NOTIFY

            await asyncio.to_thread(pg.stop)
            await wait_for(lambda: not hub.hub.tokens.listening.is_set(), timeout=10)
            assert await status_with(hub, kept["token"]) == 200  # a known valid token keeps working
            assert await status_with(hub, TOKEN) == 200
            assert await refusal(hub, gone["token"]) == "revoked token"  # revoked stay revoked
            assert await refusal(hub, elsewhere["token"]) == "revoked token"
            assert await refusal(hub, "fh_never_issued") == "unknown token"  # not a 503
            await asyncio.sleep(max(0.0, (short["expires_at"] - now_ms()) / 1000) + 0.02)
            assert await refusal(hub, short["token"]) == "expired token"  # expiry runs on the clock
            listed = (await hub.api.get("/api/v1/tokens", headers=admin)).json()["tokens"]
            assert {t["name"]: t["state"] for t in listed}["gone"] == "revoked"
            r = await hub.api.post("/api/v1/tokens", json={"name": "late", "role": "viewer"}, headers=admin)
            assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"

            await asyncio.to_thread(pg.restart)
            await wait_for(hub.hub.tokens.listening.is_set, timeout=30)
            await revoke_in_database(url, kept["id"])  # after the reconnect, NOTIFY is followed again

            async def refused() -> bool:
                return await status_with(hub, kept["token"]) == 401

            await wait_for(refused, timeout=2.0, interval=0.02)
            assert await refusal(hub, gone["token"]) == "revoked token"  # the reload did not resurrect it
    finally:
        pg.close()


# ------------------------------------------------------------------ listings
async def test_listings_never_show_a_secret(hub: RunningHub, settings: Settings) -> None:
    admin = await admin_of(hub)
    secrets = [TOKEN, admin["Authorization"].split()[1]]
    for name in ("ops wall", "张三的平板"):
        secrets.append((await new_token(hub, admin, name=name, expires_in_s=86400))["token"])
    code, out, err = await cli(settings.database_url or "", "token", "create", "--role", "drone_operator",
                               "--name", "pilot", "--expires-in", "90d")
    assert code == 0, err
    secrets.append(out.strip())
    async with hub.hub.db.connection() as conn:
        digests = [str(row[0]) for row in await (await conn.execute("SELECT hash FROM tokens")).fetchall()]
    api = (await hub.api.get("/api/v1/tokens", headers=admin)).text
    _, table, _ = await cli(settings.database_url or "", "token", "list")
    code, as_json, err = await cli(settings.database_url or "", "token", "list", "--json")
    assert code == 0, err
    for listing in (api, table, as_json):
        assert "张三的平板" in listing or "\\u5f20" in listing  # JSON escapes it; the table shows it
        for secret in [*secrets, *digests]:
            assert secret not in listing
            assert secret[3:20] not in listing  # not even a part of one
    rows = json.loads(as_json)
    pilot = next(r for r in rows if r["name"] == "pilot")
    assert pilot["role"] == "drone_operator" and pilot["expires_at"] - pilot["created_at"] == 90 * 86400 * 1000
    assert set(pilot) == {"id", "name", "role", "device_id", "created_at", "expires_at", "revoked_at", "state"}
    header = table.splitlines()[0].split()
    assert header == ["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED", "STATE"]
    assert await status_with(hub, secrets[-1]) == 200  # the CLI's token reached the running hub by NOTIFY


# ------------------------------------------------------------------ failed-auth limiting
async def test_failed_authentications_are_limited_per_address_and_good_tokens_pass(hub: RunningHub) -> None:
    # Through a proxy on loopback (uvicorn trusts 127.0.0.1): each test address is a client of its own.
    guesser, neighbour = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.9"}
    for i in range(10):
        r = await hub.api.get("/api/v1/units", headers=bearer(f"fh_guess_{i}", **guesser))
        assert r.status_code == 401, (i, r.text)
    r = await hub.api.get("/api/v1/incidents", headers=bearer("fh_guess_10", **guesser))
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_failures"
    assert r.headers["Retry-After"] == "6"
    # A good token from the same address is not limited, nor is a request without a token counted as a guess.
    assert (await hub.api.get("/api/v1/units", headers=bearer(TOKEN, **guesser))).status_code == 200
    r = await hub.api.get("/api/v1/units", headers={"Authorization": "", **guesser})
    assert r.status_code == 401 and r.json()["error"]["message"] == "missing bearer token"
    assert (await hub.api.get("/api/v1/units", headers=bearer("fh_nope", **neighbour))).status_code == 401
    ws_url = hub.base_url.replace("http", "ws") + "/api/v1/live"
    with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
        async with websockets.connect(ws_url, additional_headers=bearer("fh_guess_ws", **guesser)) as ws:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4429
    async with websockets.connect(ws_url, additional_headers=bearer(TOKEN, **guesser)) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "snapshot"
    assert hub.hub.auth_failures.refused == 2


def test_the_failure_bucket_refills_at_its_rate_and_forgets_idle_addresses() -> None:
    limiter = FailedAuthLimiter(per_min=10, burst=3, max_clients=2)
    assert [limiter.failed("a", 0) for _ in range(4)] == [True, True, True, False]
    assert limiter.failed("a", 5_999) is False  # one failure's worth comes back after 6 s, not before
    assert limiter.failed("a", 6_000) is True and limiter.failed("a", 6_000) is False
    assert limiter.failed("b", 6_000) is True  # per address
    assert limiter.failed("c", 60_000) is True  # at the bound: the idle, refilled buckets are evicted first
    assert limiter.retry_after_s == 6 and limiter.refused == 3


# ------------------------------------------------------------------ the CLI
async def test_the_cli_without_a_database_prints_one_line(tmp_path: Path) -> None:
    url = f"postgresql://fieldhub:s3cretpw@127.0.0.1:{free_port()}/nothing"
    for args, verb in ((("token", "list"), "list the tokens"), (("token", "revoke", "3"), "revoke the token"),
                       (("token", "create", "--role", "viewer", "--name", "x"), "create the token")):
        code, out, err = await cli(url, *args)
        assert code == 1 and out == "", (args, out, err)
        assert err.startswith(f"fieldhub: cannot {verb}: ") and err.count("\n") == 1, err
        assert "Traceback" not in err and "s3cretpw" not in err
    code, _, err = await cli(url, "token", "create", "--role", "viewer", "--name", "x", "--expires-in", "soon")
    assert code == 2 and "not a duration" in err  # refused before any connection


@given(st.one_of(st.text(max_size=12), st.from_regex(r"\s*[0-9]{1,12}(\.[0-9]{1,3})?\s*[smhdx]?\s*", fullmatch=True)))
def test_a_duration_is_a_positive_bounded_lifetime_or_a_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert 0 < seconds <= MAX_LIFETIME_S


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90d", "12h", "30m", "3600s", "3600", " 1.5h ")] == \
        [90 * 86400, 12 * 3600, 1800, 3600, 3600, 5400]
    for bad in ("", "0s", "-1d", "1w", "d", "1e3", "3651d", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_duration(bad)


async def test_the_bootstrap_token_is_created_once_and_a_revoked_one_stays_revoked(settings: Settings) -> None:
    async with running_hub(settings) as hub:
        assert await status_with(hub, TOKEN) == 200
        token_id = hub.hub.tokens.check(TOKEN).token_id
        await revoke_in_database(settings.database_url or "", token_id)
    async with running_hub(settings.model_copy(update={"port": free_port()})) as hub:  # restarted: still revoked
        assert await refusal(hub, TOKEN) == "revoked token"
        # Not made again: one bootstrap token (and the test settings' bootstrap admin token).
        assert await hub.count("SELECT count(*) FROM tokens WHERE name = 'bootstrap'") == 1
        assert await hub.count("SELECT count(*) FROM tokens") == 2
