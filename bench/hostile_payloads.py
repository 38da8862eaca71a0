"""The hostile messages of ``fieldhub bench hostile``: a catalogue of kinds, each a seeded payload generator.

Every kind names the one thing it does to the hub (a NUL in an attribute key, 5,000 levels of nesting, a
fix 23 h ahead ...) and says what the hub owes for it: ``rejects``, the counted rejects the contract
demands (SPEC section 2: bad JSON, missing or wrong fields, values out of range, NUL and other characters
PostgreSQL cannot store, nesting deeper than 32, more than 256 KiB, a ``ts`` more than 5 minutes ahead),
and ``good``, the good fixes it carries (the good elements of a mixed batch), which must be stored.

This is the benchmark's generator, built on :mod:`random` with a seed so a run is repeatable and cheap
enough for 100 messages a second; the tests generate their hostile input with Hypothesis.

A fix that could be stored (a good element, or a bad one a lenient hub lets through) gets a ``ts`` from
:meth:`Forge.past_ts`: an hour before the run, counting down, so it never shares a ``(device_id, ts)``
with a good fix of the run (which would make the good fix a duplicate, and look lost). Good elements of
mixed batches carry the attribute ``"bench": "mixed_batch"`` so the benchmark can count them apart.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

Channel = Literal["telemetry", "status", "event"]

MAX_PAYLOAD_BYTES: Final = 256 * 1024  # the contract's limit
BROKER_LIMIT_BYTES: Final = 1024 * 1024  # the benchmark broker's message_size_limit: larger never reaches the hub
MAX_DEPTH: Final = 32  # deeper nesting is refused by the contract
PAST_OFFSET_MS: Final = 3_600_000
FUTURE_MS: Final = 23 * 3_600_000
MIXED_MARK: Final = {"bench": "mixed_batch"}
_INVALID_UTF8: Final = (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82")


@dataclass(frozen=True, slots=True)
class Hostile:
    kind: str
    channel: Channel
    payload: bytes
    rejects: int = 1  # counted rejects the hub owes for this message
    good: int = 0  # good fixes inside it (mixed batch), which must be stored


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Forge:
    """Makes hostile payloads of every kind from one seeded :class:`random.Random`."""

    def __init__(self, seed: int, start_ms: int, clock: Callable[[], int] = now_ms) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.past_hi = start_ms - PAST_OFFSET_MS  # past_ts() hands out past_hi - 1, past_hi - 2, ...
        self.past_lo = self.past_hi

    def make(self, kind: str) -> Hostile:
        channel, make = KINDS[kind]
        made = make(self)
        payload, rejects, good = made if isinstance(made, tuple) else (made, 1, 0)
        return Hostile(kind, channel, payload, rejects, good)

    def past_ts(self) -> int:
        self.past_lo -= 1
        return self.past_lo

    def fix(self, **extra: Any) -> dict[str, Any]:
        """A valid fix with a reserved past ``ts`` (``extra`` overrides or adds fields)."""
        rng = self.rng
        return {"ts": self.past_ts(), "lat": round(34.2 + rng.random() * 0.2, 6),
                "lon": round(117.1 + rng.random() * 0.2, 6), "acc": 5.0, **extra}

    def status(self, **extra: Any) -> dict[str, Any]:
        return {"ts": self.clock(), "state": "online", "kind": "bodycam", **extra}

    def event(self, **extra: Any) -> dict[str, Any]:
        return {"ts": self.clock(), "type": "ptt", "on": True, **extra}

    def nested(self, inner: str = "1") -> str:
        """JSON text nested deeper than the contract allows, from just over the limit to 10,000 levels."""
        depth = self.rng.choice((MAX_DEPTH + 1, self.rng.randint(MAX_DEPTH + 2, 500), 5000,
                                 self.rng.randint(1000, 10_000)))
        opener, closer = self.rng.choice((("[", "]"), ('{"a":', "}")))
        return opener * depth + inner + closer * depth

    def nul_text(self) -> str:
        return self.rng.choice(("a\x00b", "\x00", "fw-1.0\x00", "\x00\x00\x00"))

    def surrogate(self) -> str:
        return chr(self.rng.randint(0xD800, 0xDFFF))


def dump(obj: Any) -> bytes:
    """JSON as a device would send it; lone surrogates and NUL become ``\\uXXXX`` escapes (ensure_ascii)."""
    return json.dumps(obj, ensure_ascii=True).encode()


def with_raw(obj: dict[str, Any], key: str, raw: str) -> bytes:
    """``obj`` as JSON with ``key`` set to ``raw`` JSON text (for what ``json.dumps`` will not write)."""
    text = json.dumps({**obj, key: "\x00RAW\x00"})
    return text.replace(json.dumps("\x00RAW\x00"), raw, 1).encode()


Made = bytes | tuple[bytes, int, int]
KINDS: dict[str, tuple[Channel, Callable[[Forge], Made]]] = {}


def kind(name: str, channel: Channel) -> Callable[[Callable[[Forge], Made]], Callable[[Forge], Made]]:
    def register(make: Callable[[Forge], Made]) -> Callable[[Forge], Made]:
        KINDS[name] = (channel, make)
        return make
    return register


# ------------------------------------------------------------------ telemetry
@kind("fix.invalid_json", "telemetry")
def _invalid_json(f: Forge) -> bytes:
    good = dump(f.fix())
    return f.rng.choice((good[:f.rng.randint(0, len(good) - 1)], good + b"}", good.replace(b'"', b"'"),
                         b"{ts: 1, lat: 2, lon: 3}", b"", b"\x00\x01\x02", b'{"ts":1,,"lat":2}', b"NaN"))


@kind("fix.invalid_utf8", "telemetry")
def _invalid_utf8(f: Forge) -> bytes:
    return dump(f.fix(note="XX")).replace(b"XX", b"x" + f.rng.choice(_INVALID_UTF8) + b"y")


@kind("fix.deep_nesting", "telemetry")
def _deep(f: Forge) -> bytes:
    return f.nested(dump(f.fix()).decode()).encode()


@kind("fix.deep_attrs", "telemetry")
def _deep_attrs(f: Forge) -> bytes:
    return with_raw(f.fix(), "x", f.nested())


@kind("fix.nul_value", "telemetry")
def _nul_value(f: Forge) -> bytes:
    text = f.nul_text()
    return dump(f.fix(**f.rng.choice(({"x": text}, {"note": ["ok", text]}, {"meta": {"fw": text}}))))


@kind("fix.nul_key", "telemetry")
def _nul_key(f: Forge) -> bytes:
    return dump(f.fix(**{f.nul_text(): 1}))


@kind("fix.lone_surrogate", "telemetry")
def _surrogate(f: Forge) -> bytes:
    s = f.surrogate()
    return dump(f.fix(**f.rng.choice(({"x": f"a{s}b"}, {s: 1}, {"meta": {"n": [s]}}))))


@kind("fix.huge_float", "telemetry")
def _huge_float(f: Forge) -> bytes:
    field = f.rng.choice(("lat", "lon", "speed", "alt", "x"))
    return with_raw(f.fix(), field, f.rng.choice(("1e400", "-1e400", "1e309")))


@kind("fix.huge_int", "telemetry")
def _huge_int(f: Forge) -> bytes:
    field = f.rng.choice(("ts", "lat", "seq", "sats", "battery"))
    return dump(f.fix(**{field: f.rng.choice((10**30, 2**64, -(2**63) - 1, 10**400))}))


@kind("fix.huge_string", "telemetry")
def _huge_string(f: Forge) -> bytes:
    size = f.rng.randint(64 * 1024, MAX_PAYLOAD_BYTES - 256)
    return dump(f.fix(note="n" * size))


@kind("fix.oversize", "telemetry")
def _oversize(f: Forge) -> bytes:
    size = f.rng.randint(MAX_PAYLOAD_BYTES + 1, BROKER_LIMIT_BYTES - 64 * 1024)
    return dump(f.fix(note="o" * size))


@kind("fix.wrong_type", "telemetry")
def _wrong_type(f: Forge) -> bytes:
    field = f.rng.choice(("ts", "lat", "lon", "speed", "sats"))
    return dump(f.fix(**{field: f.rng.choice(("34.2", True, [1], {"v": 1}, 1.5 if field in ("ts", "sats") else "x"))}))


@kind("fix.missing_field", "telemetry")
def _missing(f: Forge) -> bytes:
    fix = f.fix()
    del fix[f.rng.choice(("ts", "lat", "lon"))]
    return dump(fix)


def _out_of_range(f: Forge) -> dict[str, Any]:
    field, value = f.rng.choice((("lat", f.rng.uniform(90.001, 1000.0)), ("lat", -f.rng.uniform(90.001, 1000.0)),
                                 ("lon", f.rng.uniform(180.001, 1000.0)), ("speed", -1.0), ("acc", -5.0),
                                 ("heading", f.rng.uniform(360.1, 720.0)), ("battery", 101), ("alt", -5000.0)))
    return f.fix(**{field: value})


@kind("fix.out_of_range", "telemetry")
def _range(f: Forge) -> bytes:
    return dump(_out_of_range(f))


@kind("fix.ts_future", "telemetry")
def _future(f: Forge) -> bytes:
    return dump(f.fix(ts=f.clock() + FUTURE_MS + f.rng.randint(0, 999)))


@kind("fix.ts_past", "telemetry")
def _past(f: Forge) -> bytes:
    """Before 2000 (the codec refuses it) or 400 days old (the hub's retention window refuses it)."""
    return dump(f.fix(ts=f.rng.choice((0, -1, 1000, 631_152_000_000, f.clock() - 400 * 86_400_000))))


@kind("fix.not_object", "telemetry")
def _not_object(f: Forge) -> bytes:
    return f.rng.choice((b"42", b'"fix"', b"null", b"true", b"1.5", b"-0"))


@kind("fix.empty_batch", "telemetry")
def _empty(f: Forge) -> bytes:
    return b"[]"


@kind("fix.batch_too_large", "telemetry")
def _too_large(f: Forge) -> bytes:
    return dump([f.fix() for _ in range(f.rng.randint(1001, 1100))])


@kind("fix.mixed_batch", "telemetry")
def _mixed(f: Forge) -> tuple[bytes, int, int]:
    """Good and bad elements side by side; each bad element is bad on its own (the rest must be stored)."""
    n = f.rng.randint(2, 20)
    bad = set(f.rng.sample(range(n), f.rng.randint(1, n - 1)))
    items: list[Any] = []
    for i in range(n):
        if i not in bad:
            items.append(f.fix(**MIXED_MARK))
            continue
        fix = f.fix()
        choice = f.rng.randrange(5)
        if choice == 0:
            del fix["lat"]
        elif choice == 1:
            fix = _out_of_range(f)
        elif choice == 2:
            fix["lon"] = "117.1"
        elif choice == 3:
            fix["ts"] = f.clock() + FUTURE_MS
        items.append(fix if choice < 4 else f.rng.choice((5, "fix", None, [])))
    return dump(items), len(bad), n - len(bad)


# --------------------------------------------------------------------- status
@kind("status.nul", "status")
def _status_nul(f: Forge) -> bytes:
    field = f.rng.choice(("fw", "unit_id", "state", "note"))
    return dump(f.status(**{field: f.nul_text() if field != "state" else "on\x00line"}))


@kind("status.lone_surrogate", "status")
def _status_surrogate(f: Forge) -> bytes:
    return dump(f.status(fw=f"1.{f.surrogate()}"))


@kind("status.wrong_type", "status")
def _status_type(f: Forge) -> bytes:
    field, value = f.rng.choice((("state", 1), ("recording", "yes"), ("battery", "80"), ("ts", "now"),
                                 ("fw", 12)))
    return dump(f.status(**{field: value}))


@kind("status.missing_field", "status")
def _status_missing(f: Forge) -> bytes:
    status = f.status()
    del status[f.rng.choice(("ts", "state"))]
    return dump(status)


@kind("status.huge_string", "status")
def _status_huge(f: Forge) -> bytes:
    return dump(f.status(fw="f" * f.rng.randint(10_000, 200_000)))


@kind("status.deep_nesting", "status")
def _status_deep(f: Forge) -> bytes:
    return with_raw(f.status(), "x", f.nested())


@kind("status.ts_future", "status")
def _status_future(f: Forge) -> bytes:
    return dump(f.status(ts=f.clock() + FUTURE_MS))


@kind("status.invalid_json", "status")
def _status_json(f: Forge) -> bytes:
    good = dump(f.status())
    return f.rng.choice((good[:-1], good.replace(b"online", b"onl\xffine"), b"{state: online}"))


# ---------------------------------------------------------------------- event
@kind("event.nul", "event")
def _event_nul(f: Forge) -> bytes:
    return f.rng.choice((dump(f.event(type="p\x00tt")), dump(f.event(note=f.nul_text())),
                         dump({"ts": f.clock(), "type": "ack", "cmd_id": f.nul_text()})))


@kind("event.lone_surrogate", "event")
def _event_surrogate(f: Forge) -> bytes:
    return dump(f.event(note=f.surrogate()))


@kind("event.wrong_type", "event")
def _event_type(f: Forge) -> bytes:
    return f.rng.choice((dump({"ts": f.clock(), "type": "ack", "cmd_id": {"id": 1}}), dump(f.event(on="yes")),
                         dump(f.event(type=7)), dump(f.event(ts="soon"))))


@kind("event.missing_field", "event")
def _event_missing(f: Forge) -> bytes:
    return f.rng.choice((dump({"ts": f.clock(), "on": True}), dump({"type": "ptt", "on": True}),
                         dump({"ts": f.clock(), "type": "ack"})))


@kind("event.huge_string", "event")
def _event_huge(f: Forge) -> bytes:
    return f.rng.choice((dump(f.event(type="t" * f.rng.randint(33, 10_000))),
                         dump(f.event(note="e" * f.rng.randint(10_000, 200_000)))))


@kind("event.deep_nesting", "event")
def _event_deep(f: Forge) -> bytes:
    return with_raw(f.event(), "x", f.nested())


@kind("event.ts_future", "event")
def _event_future(f: Forge) -> bytes:
    return dump(f.event(ts=f.clock() + FUTURE_MS))


@kind("event.huge_number", "event")
def _event_number(f: Forge) -> bytes:
    return f.rng.choice((dump(f.event(ts=10**30)), with_raw(f.event(), "ts", "1e400")))


KIND_NAMES: Final = tuple(KINDS)


class Schedule:
    """Which kind comes next: every kind once per round, in a fresh shuffled order each round."""

    def __init__(self, rng: random.Random, kinds: tuple[str, ...] = KIND_NAMES) -> None:
        self.rng = rng
        self.kinds = list(kinds)
        self._round: list[str] = []

    def next(self) -> str:
        if not self._round:
            self._round = self.kinds[:]
            self.rng.shuffle(self._round)
        return self._round.pop()
