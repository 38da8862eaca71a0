"""The load generator: fixes from many devices over many MQTT connections, at an exact rate.

It runs in its own process (``python -m bench.loadgen``) so it shares no GIL with
the benchmark's measuring code, and its CPU is measured on its own. The parent
talks to it in JSON lines: the child prints ``ready`` once every connection has
its CONNACK, waits for ``start`` on stdin, prints a ``sample`` (published and
acknowledged counts, wall clock) every 0.1 s and a ``done`` summary at the end.
End of stdin means the parent is gone: the child stops.

Pacing: time is cut into slices of ``SLICE_S``; at each slice the generator sends
what it owes to reach ``rate x elapsed`` (so the average rate is exact whatever
the sleep jitter), and records how far behind it was ("backlog") when it woke.
Message k goes to device k mod devices. Each device has its own connection with its
own login (``--logins``, a JSON file device id -> secret that the parent provisioned
through the hub), over TLS for an ``mqtts://`` ``--url``, as deployed devices connect:
the broker lets a login publish only its own device's topics. A device missing from
the file connects without a login (the anonymous comparison broker only). Each fix's ``ts`` is the
wall clock (ms) at publish, bumped so it strictly increases per device:
``(device_id, ts)`` is unique across the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.publisher import MqttProtocolError, Publisher, connect_devices, encode_topic
from devices.topics import device_topic

SLICE_S = 0.005
SAMPLE_S = 0.1
ACK_WAIT_S = 30.0
FIX = b'{"ts":%d,"lat":%.6f,"lon":%.6f,"acc":5.0,"speed":%.1f,"heading":%d,"seq":%d}'


def device_ids(count: int, prefix: str = "bench-") -> list[str]:
    return [f"{prefix}{d:05d}" for d in range(count)]


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.devices = device_ids(args.devices, args.device_prefix)
        self.topics = [encode_topic(device_topic(d, "telemetry")) for d in self.devices]
        self.last_ts = [0] * len(self.devices)
        self.seq = [0] * len(self.devices)
        self.connections: list[Publisher] = []  # one per device, in the order of ``devices``
        self.slices = 0
        self.late_slices = 0
        self.max_backlog = 0
        self.ts_ahead = 0  # fixes whose ts had to run ahead of the clock to stay strictly increasing
        self.t_first = 0.0
        self.t_last = 0.0

    @property
    def published(self) -> int:
        return sum(c.published for c in self.connections)

    @property
    def acked(self) -> int:
        return sum(c.acked for c in self.connections)

    async def connect(self) -> None:
        logins = read_logins(self.args.logins)
        self.connections = await connect_devices(self.args.url, self.devices, logins)

    def send(self, k: int) -> Publisher:
        """Queue message ``k`` (a fix of device ``k mod devices``) on its connection, which is returned."""
        d = k % len(self.devices)
        now = time.time_ns() // 1_000_000
        ts = self.last_ts[d] + 1
        if ts > now:
            self.ts_ahead += 1  # ts is then later than the publish (latency measured from ts reads short)
        else:
            ts = now
        self.last_ts[d] = ts
        seq = self.seq[d] = self.seq[d] + 1
        payload = FIX % (ts, 34.20 + (d % 100) * 0.002 + (seq % 500) * 1e-5,
                         117.10 + (d // 100 % 100) * 0.002 + (seq % 500) * 1e-5, 8.0 + seq % 7, seq * 7 % 360, seq)
        connection = self.connections[d]
        if not connection.publish(self.topics[d], payload, self.args.qos):
            raise MqttProtocolError("65,535 messages awaiting PUBACK on one connection: the broker stalled")
        return connection

    async def run(self) -> None:
        rate, total = self.args.rate, round(self.args.rate * self.args.duration)
        quota = max(1, int(rate * SLICE_S))
        started = time.monotonic()
        self.t_first = time.time()
        sent = 0
        while sent < total:
            due = min(total, int(rate * (time.monotonic() - started)) + 1)
            backlog = due - sent
            self.slices += 1
            self.max_backlog = max(self.max_backlog, backlog)
            if backlog > 2 * quota:
                self.late_slices += 1
            touched = {self.send(k) for k in range(sent, due)}
            for connection in touched:
                connection.flush()
            sent = due
            self.t_last = time.time()
            await asyncio.sleep(SLICE_S)
        deadline = time.monotonic() + ACK_WAIT_S
        while self.args.qos and self.acked < self.published and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def summary(self) -> dict[str, Any]:
        """What a kind of generator adds to its ``done`` line."""
        return {"ts_ahead": self.ts_ahead}

    async def sample(self) -> None:
        while True:
            emit("sample", t=time.time(), published=self.published, acked=self.acked)
            await asyncio.sleep(SAMPLE_S)


async def watch_parent(reader: asyncio.StreamReader) -> None:
    """Returns when stdin closes: the parent is gone."""
    while await reader.readline():
        pass


async def child_main(args: argparse.Namespace, factory: Callable[[argparse.Namespace], Generator] = Generator) -> int:
    """The child's life: connect, ``ready``, wait for ``start``, run, ``done``. ``factory`` makes the generator
    (``bench.hostile_load`` passes its own kinds of generator)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    gen = factory(args)
    await gen.connect()
    emit("ready", connections=len(gen.connections), devices=len(gen.devices))
    if (await asyncio.wait_for(reader.readline(), 120)).strip() != b"start":
        return 1
    sampler = asyncio.create_task(gen.sample())
    parent = asyncio.create_task(watch_parent(reader))
    lost = [asyncio.ensure_future(c.closed) for c in gen.connections]
    runner = asyncio.create_task(gen.run())
    done, _ = await asyncio.wait([runner, parent, *lost], return_when=asyncio.FIRST_COMPLETED)
    for task in (sampler, parent, runner, *lost):
        task.cancel()
    error = None
    if runner not in done:
        error = "parent went away" if parent in done else "a connection was closed by the broker"
    elif runner.exception() is not None:
        error = repr(runner.exception())
    emit("sample", t=time.time(), published=gen.published, acked=gen.acked)
    elapsed = gen.t_last - gen.t_first
    emit("done", published=gen.published, acked=gen.acked, t_first=gen.t_first, t_last=gen.t_last,
         rate=round((gen.published - 1) / elapsed, 1) if elapsed > 0 else None, cpu_s=round(time.process_time(), 3),
         slices=gen.slices, late_slices=gen.late_slices, max_backlog_ms=round(1000 * gen.max_backlog / args.rate, 1),
         unknown_acks=sum(c.unknown_acks for c in gen.connections), error=error, **gen.summary())
    for c in gen.connections:
        c.disconnect()
    await asyncio.sleep(0.05)
    return 0 if error is None else 1


# ------------------------------------------------------------------ parent side
@dataclass(slots=True)
class GeneratorRun:
    """What the parent collected from one run of the child."""

    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (wall time, published, acked)
    summary: dict[str, Any] = field(default_factory=dict)


class GeneratorProcess:
    """The parent's handle on a generator child: ``start`` (connect), ``go``, ``finish``, ``close``."""

    def __init__(self, url: str, logins: Path, *, rate: float, duration: float, devices: int, qos: int,
                 module: str = "bench.loadgen", extra_argv: Sequence[str] = ()) -> None:
        self.module = module
        self.argv = ["--url", url, "--logins", str(logins), "--rate", str(rate), "--duration", str(duration),
                     "--devices", str(devices), "--qos", str(qos), *extra_argv]
        self.duration = duration
        self.proc: asyncio.subprocess.Process | None = None
        self.run = GeneratorRun()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self, timeout_s: float = 300.0) -> None:
        """Start the child and wait until every device is connected (thousands of TLS handshakes take a while)."""
        from bench.processes import die_with_parent, python_env

        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.module, *self.argv, env=python_env(), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent, limit=1 << 20)
        line = await self._line(timeout_s)
        if line.get("event") != "ready":
            raise MqttProtocolError(f"load generator did not get ready: {line}")

    def go(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"start\n")
        self._reader = asyncio.create_task(self._read())

    async def finish(self) -> GeneratorRun:
        """Wait for the child's summary (bounded by the run's duration plus the PUBACK wait)."""
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), self.duration + ACK_WAIT_S + 30)
        if not self.run.summary:
            raise MqttProtocolError("load generator ended without a summary")
        return self.run

    async def _line(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not raw:
            raise MqttProtocolError(f"load generator exited (code {await self.proc.wait()})")
        message: dict[str, Any] = json.loads(raw)
        if message.get("event") == "error":
            raise MqttProtocolError(f"load generator failed: {message.get('message')}")
        return message

    async def _read(self) -> None:
        while True:
            message = await self._line(self.duration + ACK_WAIT_S + 30)
            if message["event"] == "sample":
                self.run.samples.append((message["t"], message["published"], message["acked"]))
            elif message["event"] == "done":
                self.run.summary = message
                return

    async def close(self) -> None:
        """Stop the child (it ends by itself after ``done``; otherwise SIGTERM, then SIGKILL)."""
        if self._reader is not None:
            self._reader.cancel()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 3)
                return


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the broker: mqtt://host:port or mqtts://host:port?cafile=...")
    p.add_argument("--logins", type=Path, help="JSON file: device id -> MQTT secret (none: anonymous devices)")
    p.add_argument("--rate", type=float, required=True, help="messages per second")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--devices", type=int, required=True, help="devices, one connection each")
    p.add_argument("--qos", type=int, choices=(0, 1), default=1)
    p.add_argument("--device-prefix", default="bench-")
    return p


def read_logins(path: Path | None) -> dict[str, str]:
    """The secrets the parent provisioned (never on the command line, where ``ps`` shows it)."""
    if path is None:
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise MqttProtocolError(f"{path}: not a JSON object of device logins")
    return {str(k): str(v) for k, v in data.items()}


def run_child(child: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], args: argparse.Namespace) -> int:
    """Run a load process's `child` coroutine (on uvloop when installed); its errors become an `error` line."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        return asyncio.run(child(args))
    except (MqttProtocolError, OSError, TimeoutError) as exc:
        emit("error", message=repr(exc))
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    return run_child(child_main, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
