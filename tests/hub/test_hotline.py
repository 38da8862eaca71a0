"""The 12345 hand-over against a real HTTP server on 127.0.0.1 (uvicorn + starlette in the test's loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from devices.clock import now_ms
from hub.incidents.hotline import (
    Backoff,
    HotlineError,
    HotlineHandOver,
    classify,
    parse_ref,
    parse_retry_after,
)
from hub.infra.embedded import free_port

FAST = Backoff(first_s=0.05, cap_s=0.2, jitter=0.0)
TOKEN = "hotline-test-token"


@dataclass
class Received:
    key: str
    authorization: str
    content_type: str
    body: Any
    at: float  # monotonic


class FakeHotline:
    """The 12345 webhook: answers each incident from its script of steps, then with `default`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/handover"
        self.requests: list[Received] = []
        self.scripts: dict[str, list[str]] = {}
        self.default = "ok"
        self.release = asyncio.Event()  # ends every "hang"
        self.app = Starlette(routes=[Route("/handover", self.handover, methods=["POST"])])

    def keys(self) -> list[str]:
        return [r.key for r in self.requests]

    async def handover(self, request: Request) -> Response:
        key = request.headers.get("idempotency-key", "")
        self.requests.append(Received(key, request.headers.get("authorization", ""),
                                      request.headers.get("content-type", ""), await request.json(), time.monotonic()))
        steps = self.scripts.get(key)
        step = steps.pop(0) if steps else self.default
        if step == "hang":
            with suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 30)
            step = "ok"
        if step == "503":
            return PlainTextResponse("maintenance", 503)
        if step == "429":
            return PlainTextResponse("slow down", 429, headers={"Retry-After": "1"})
        if step == "400":
            return JSONResponse({"error": "区划代码 unknown", "detail": "x" * 2000}, 400)
        if step == "ticket":
            return JSONResponse({"ticket": 4711}, 201)
        if step == "empty":
            return Response(status_code=204)
        if step == "text":
            return PlainTextResponse("OK", 200)
        return JSONResponse({"ref": f"12345-{len(self.requests)}"}, 200)


@asynccontextmanager
async def serving(hotline: FakeHotline) -> AsyncIterator[None]:
    config = uvicorn.Config(hotline.app, host="127.0.0.1", port=hotline.port, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the test hotline did not start"
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        hotline.release.set()
        server.should_exit = True
        await asyncio.wait_for(task, 5)


@pytest.fixture
async def hotline() -> AsyncIterator[FakeHotline]:
    h = FakeHotline(free_port())
    async with serving(h):
        yield h


class Recorder:
    """`on_accepted`: remembers its calls; raises on the first `failing` ones."""

    def __init__(self, failing: int = 0) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self.failing = failing

    async def __call__(self, incident_id: str, accepted_at: int, ref: str) -> None:
        self.calls.append((incident_id, accepted_at, ref))
        if len(self.calls) <= self.failing:
            raise RuntimeError("incident store unavailable")


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., HotlineHandOver]]:
    made: list[HotlineHandOver] = []

    def factory(url: str | None, on_accepted: Recorder, **kw: Any) -> HotlineHandOver:
        kw.setdefault("backoff", FAST)
        kw.setdefault("timeout_s", 2.0)
        h = HotlineHandOver(url, on_accepted=on_accepted, token=TOKEN, clock=now_ms, **kw)
        made.append(h)
        return h

    yield factory
    for h in made:
        await h.stop()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# --- pure helpers ---------------------------------------------------------------------------------------

def test_backoff_doubles_from_one_second_up_to_the_cap() -> None:
    b = Backoff(jitter=0.0)
    assert [b.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert b.delay(0) == 1.0
    assert b.delay(10_000) == 60.0  # no overflow on a long outage


def test_backoff_jitter_spreads_within_bounds_and_never_past_the_cap() -> None:
    b = Backoff(first_s=1.0, cap_s=60.0, jitter=0.2)
    assert b.delay(2, rand=0.0) == pytest.approx(1.6)
    assert b.delay(2, rand=0.5) == pytest.approx(2.0)
    assert b.delay(2, rand=0.999999) == pytest.approx(2.4, abs=1e-5)
    assert b.delay(20, rand=0.999999) == 60.0
    assert b.delay(20, rand=0.0) == pytest.approx(48.0)


def test_classify_status() -> None:
    assert [classify(s) for s in (200, 201, 202, 204)] == ["accepted"] * 4
    assert [classify(s) for s in (408, 429, 500, 502, 503, 504)] == ["retry"] * 6
    assert [classify(s) for s in (301, 400, 401, 403, 404, 409, 413, 422)] == ["refused"] * 8


def test_parse_ref() -> None:
    assert parse_ref(b'{"ref": "GZ-12345-0001"}') == "GZ-12345-0001"
    assert parse_ref(b'{"ticket": 4711}') == "4711"
    assert parse_ref(b'{"ref": "", "ticket": "T-9"}') == "T-9"
    assert parse_ref(b'{"ref": true}') == ""
    assert parse_ref(b'{"ref": null}') == ""
    assert parse_ref(b'["ref"]') == ""
    assert parse_ref(b"OK") == ""
    assert parse_ref(b"") == ""
    assert parse_ref(b"\xff\xfe{") == ""
    assert parse_ref(b'{"ref": "' + b"r" * 1000 + b'"}') == "r" * 200


def test_parse_retry_after() -> None:
    now = 1_700_000_000_000
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after("²", now) is None
    date = format_datetime(datetime.fromtimestamp(now / 1000 + 10, UTC), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(10.0)
    past = format_datetime(datetime.fromtimestamp(now / 1000 - 10, UTC), usegmt=True)
    assert parse_retry_after(past, now) == 0.0


# --- against the real test hotline ----------------------------------------------------------------------

async def test_accepted_first_try(hotline: FakeHotline, make: Callable[..., HotlineHandOver]) -> None:
    rec = Recorder()
    h = make(hotline.url, rec)
    payload = {"id": "inc-1", "category": "噪音扰民", "summary": "楼上装修", "lat": 23.1, "lon": 113.3}
    before = now_ms()
    assert h.submit("inc-1", payload) is True  # before start: kept, sent once started
    payload["summary"] = "changed after submit"
    assert h.pending["inc-1"].state == "queued"
    await h.start()
    await until(lambda: h.accepted == 1)
    after = now_ms()
    assert len(rec.calls) == 1
    incident_id, accepted_at, ref = rec.calls[0]
    assert (incident_id, ref) == ("inc-1", "12345-1")
    assert before <= accepted_at <= after
    [got] = hotline.requests
    assert got.key == "inc-1"
    assert got.authorization == f"Bearer {TOKEN}"
    assert got.content_type.startswith("application/json")
    assert got.body["source"] == "fieldhub"
    assert got.body["incident"] == {**payload, "summary": "楼上装修"}
    assert before <= got.body["sent_at"] <= accepted_at
    assert h.pending == {}
    assert (h.attempts, sum(h.failures.values())) == (1, 0)
    snap = h.snapshot()
    assert snap["configured"] and snap["running"] and snap["accepted"] == 1 and snap["pending"] == []


async def test_ref_from_ticket_or_none(hotline: FakeHotline, make: Callable[..., HotlineHandOver]) -> None:
    rec = Recorder()
    h = make(hotline.url, rec)
    hotline.scripts = {"a": ["ticket"], "b": ["empty"], "c": ["text"]}
    async with h:
        for i in "abc":
            h.submit(i, {"id": i})
        await until(lambda: h.accepted == 3)
    assert sorted((i, ref) for i, _, ref in rec.calls) == [("a", "4711"), ("b", ""), ("c", "")]


async def test_retried_after_503s_then_accepted(hotline: FakeHotline, make: Callable[..., HotlineHandOver]) -> None:
    rec = Recorder()
    h = make(hotline.url, rec)
    hotline.scripts["inc-2"] = ["503", "503"]
    async with h:
        h.submit("inc-2", {"id": "inc-2"})
        await until(lambda: h.accepted == 1)
    assert hotline.keys() == ["inc-2"] * 3
    assert h.attempts == 3 and h.failures == {"server_error": 2}
    gaps = [b.at - a.at for a, b in zip(hotline.requests, hotline.requests[1:], strict=False)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095  # 0.05 s, then doubled
    assert rec.calls[0][2] == "12345-3"


async def test_429_retry_after_is_honoured(hotline: FakeHotline, make: Callable[..., HotlineHandOver]) -> None:
    rec = Recorder()
    h = make(hotline.url, rec)
    hotline.scripts["inc-3"] = ["429"]
    async with h:
        h.submit("inc-3", {"id": "inc-3"})
        await until(lambda: h.failures["rate_limited"] == 1)
        await asyncio.sleep(0.3)  # the backoff alone would have retried after 0.05 s
        p = h.pending["inc-3"]
        assert len(hotline.requests) == 1
        assert p.state == "retrying" and p.last_error.startswith("HTTP 429")
        assert p.next_attempt_at is not None and p.next_attempt_at - now_ms() > 500
        await until(lambda: h.accepted == 1)
    first, second = hotline.requests
    assert second.at - first.at >= 0.95


async def test_timeout_then_success(hotline: FakeHotline, make: Callable[..., HotlineHandOver]) -> None:
    rec = Recorder()
    h = make(hotline.url, rec, timeout_s=0.3)
    hotline.scripts["inc-4"] = ["hang"]
    async with h:
        started = time.monotonic()
        h.submit("inc-4", {"id": "inc-4"})
        await until(lambda: h.accepted == 1)
    assert time.monotonic() - started >= 0.3
    assert hotline.keys() == ["inc-4", "inc-4"]
    assert h.failures == {"timeout": 1} and h.attempts == 2
    assert [c[0] for c in rec.calls] == ["inc-4"]


async def test_refused_is_kept_and_retried_at_the_cap_until_fixed(
        hotline: FakeHotline, make: Callable[..., HotlineHandOver]) -> None:
    rec = Recorder()
    h = make(hotline.url, rec)
    hotline.default = "400"
    async with h:
        h.submit("inc-5", {"id": "inc-5"})
        await until(lambda: h.failures["refused"] >= 3)
        p = h.pending["inc-5"]
        assert p.state in ("refused", "in_flight") and p.failure == "refused"
        assert p.last_error.startswith("HTTP 400: ") and "区划代码" in p.last_error
        assert len(p.last_error.encode()) <= len("HTTP 400: ") + 500
        assert h.accepted == 0 and rec.calls == []
        gaps = [b.at - a.at for a, b in zip(hotline.requests, hotline.requests[1:], strict=False)]
        assert min(gaps) >= 0.19  # the cap (0.2 s), not the first backoff (0.05 s)
        hotline.default = "ok"  # the 12345 side fixed its configuration
        await until(lambda: h.accepted == 1)
    assert h.pending == {} and [c[0] for c in rec.calls] == ["inc-5"]


async def test_server_down_then_started(make: Callable[..., HotlineHandOver]) -> None:
    rec = Recorder()
    late = FakeHotline(free_port())  # not serving yet
    h = make(late.url, rec)
    async with h:
        h.submit("inc-6", {"id": "inc-6"})
        await until(lambda: h.failures["connect"] >= 2)
        assert h.pending["inc-6"].last_error.startswith("cannot connect")
        assert h.accepted == 0
        async with serving(late):
            await until(lambda: h.accepted == 1)
    assert late.keys() == ["inc-6"] and [c[0] for c in rec.calls] == ["inc-6"]


async def test_duplicate_submit_is_not_duplicated(hotline: FakeHotline, make: Callable[..., HotlineHandOver]) -> None:
    rec = Recorder()
    h = make(hotline.url, rec)
    hotline.scripts["inc-7"] = ["503"]
    async with h:
        assert h.submit("inc-7", {"id": "inc-7", "v": 1}) is True
        assert h.submit("inc-7", {"id": "inc-7", "v": 2}) is False
        await until(lambda: len(hotline.requests) == 1)
        assert h.submit("inc-7", {"id": "inc-7", "v": 3}) is False  # waiting for its retry
        await until(lambda: h.accepted == 1)
    assert hotline.keys() == ["inc-7", "inc-7"]  # the 503 and its one retry
    assert {r.body["incident"]["v"] for r in hotline.requests} == {1}
    assert h.duplicates == 2 and len(rec.calls) == 1


async def test_on_accepted_raising_is_retried_without_posting_again(
        hotline: FakeHotline, make: Callable[..., HotlineHandOver]) -> None:
    rec = Recorder(failing=2)
    h = make(hotline.url, rec)
    async with h:
        h.submit("inc-8", {"id": "inc-8"})
        await until(lambda: len(rec.calls) == 1)
        assert "inc-8" in h.pending  # the hotline has it, the store does not yet: not lost
        await until(lambda: h.accepted == 1)
    assert len(rec.calls) == 3 and len(set(rec.calls)) == 1  # same id, same accepted_at, same ref
    assert hotline.keys() == ["inc-8"]
    assert h.failures == {"callback": 2} and h.pending == {}


async def test_stop_returns_promptly_while_a_request_hangs_and_start_resumes(
        hotline: FakeHotline, make: Callable[..., HotlineHandOver]) -> None:
    rec = Recorder()
    h = make(hotline.url, rec, timeout_s=30.0)
    hotline.scripts["inc-9"] = ["hang"]
    await h.start()
    h.submit("inc-9", {"id": "inc-9"})
    await until(lambda: len(hotline.requests) == 1)
    assert h.pending["inc-9"].state == "in_flight"
    started = time.monotonic()
    await h.stop()
    assert time.monotonic() - started < 1.0
    assert not h.running
    p = h.pending["inc-9"]
    assert (p.state, p.attempts, p.next_attempt_at, p.accepted_at) == ("retrying", 1, None, None)
    assert rec.calls == []
    await h.start()  # kept in memory: sent again at once
    await until(lambda: h.accepted == 1)
    assert hotline.keys() == ["inc-9", "inc-9"]


async def test_a_slow_incident_does_not_hold_back_others(
        hotline: FakeHotline, make: Callable[..., HotlineHandOver]) -> None:
    rec = Recorder()
    h = make(hotline.url, rec, timeout_s=10.0, concurrency=2)
    hotline.scripts["slow"] = ["hang"]
    async with h:
        h.submit("slow", {"id": "slow"})
        await until(lambda: len(hotline.requests) == 1)
        for i in range(5):
            h.submit(f"quick-{i}", {"id": i})
        await until(lambda: h.accepted == 5, timeout=3.0)
        assert h.pending["slow"].state == "in_flight"
    assert sorted(c[0] for c in rec.calls) == [f"quick-{i}" for i in range(5)]


async def test_not_configured_is_kept_pending_and_counted(make: Callable[..., HotlineHandOver]) -> None:
    rec = Recorder()
    h = make("", rec)
    async with h:
        assert not h.configured
        assert h.submit("inc-10", {"id": "inc-10"}) is True
        assert h.submit("inc-10", {"id": "inc-10"}) is False
        await asyncio.sleep(0.05)
    p = h.pending["inc-10"]
    assert (p.state, p.failure, p.attempts) == ("not_configured", "not_configured", 0)
    assert "no 12345 hotline URL" in p.last_error
    assert h.failures == {"not_configured": 1} and h.attempts == 0 and rec.calls == []
    assert h.snapshot()["configured"] is False


async def test_unusable_submissions_are_rejected_with_a_reason(make: Callable[..., HotlineHandOver]) -> None:
    h = make("http://127.0.0.1:9/handover", Recorder())
    with pytest.raises(HotlineError, match="not JSON"):
        h.submit("inc-11", {"at": object()})
    with pytest.raises(HotlineError, match="not JSON"):
        h.submit("inc-11", {"x": float("nan")})
    with pytest.raises(HotlineError, match="Idempotency-Key"):
        h.submit("警情-1", {"id": 1})
    with pytest.raises(HotlineError, match="Idempotency-Key"):
        h.submit("", {"id": 1})
    assert h.pending == {}
