"""hub.signals: subscribers run in connection order, each fails alone, failures are counted."""

from __future__ import annotations

import logging

import pytest

from hub.signals import AsyncSignal, Signal


def test_signal_calls_subscribers_in_order_and_isolates_failures(caplog: pytest.LogCaptureFixture) -> None:
    sig: Signal[[str, int]] = Signal("unit_released")
    seen: list[tuple[str, str, int]] = []

    def broken(name: str, n: int) -> None:
        raise RuntimeError("boom")

    sig.connect(lambda name, n: seen.append(("first", name, n)))
    sig.connect(broken)
    sig.connect(lambda name, n: seen.append(("third", name, n)))
    with caplog.at_level(logging.ERROR, logger="hub.signals"):
        sig.emit("U1", 2)
        sig.emit("U2", 3)
    assert seen == [("first", "U1", 2), ("third", "U1", 2), ("first", "U2", 3), ("third", "U2", 3)]
    assert sig.failures == 2
    assert sum("signal unit_released: subscriber" in r.getMessage() for r in caplog.records) == 2
    assert len(sig.subscribers) == 3


def test_signal_without_subscribers_does_nothing() -> None:
    sig: Signal[[]] = Signal("nothing")
    sig.emit()
    assert sig.failures == 0 and sig.subscribers == ()


async def test_async_signal_awaits_each_subscriber_before_returning() -> None:
    sig: AsyncSignal[[str]] = AsyncSignal("incident_closing")
    done: list[str] = []

    async def slow(incident_id: str) -> None:
        import asyncio
        await asyncio.sleep(0.01)
        done.append("slow:" + incident_id)

    async def broken(incident_id: str) -> None:
        raise ValueError(incident_id)

    async def last(incident_id: str) -> None:
        done.append("last:" + incident_id)

    for sub in (slow, broken, last):
        sig.connect(sub)
    await sig.emit("I-1")
    assert done == ["slow:I-1", "last:I-1"]
    assert sig.failures == 1
