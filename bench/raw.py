"""Raw limits: what the broker and the database do alone, the ceiling to hold the hub against.

- Mosquitto pass-through: ``mosquitto_pub -l`` (C) sends ~110-byte fix lines at
  QoS 0 into the broker, ``mosquitto_sub`` (C) receives them and stamps each one
  (``-F %U``); the rate is (messages - 1) / (last stamp - first stamp), timed
  by the subscriber. On a stack with logins the publisher is one of the bench's
  devices on its own telemetry topic, over TLS on the "secure" stack, and the
  subscriber a read-only observer login on the loopback listener (where the hub
  reads); on the anonymous stack both are anonymous, as before.
- PostgreSQL COPY: psycopg 3 binary COPY of fix rows into a scratch table with
  the columns and primary key of ``fixes``, one transaction.
- The hub's own storage path alone: ``Database.write`` (COPY into a temporary
  table, then ``INSERT .. ON CONFLICT DO NOTHING`` into the partitioned
  ``fixes``) in the hub's batch size, without MQTT or the pipeline in front.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.logins import observer_login
from bench.processes import stop_process
from bench.stack import BenchStack
from devices.broker import BrokerAddress
from devices.topics import device_topic
from hub.storage import Batch, Database
from hub.storage.database import FIX_COLUMNS, FIX_TYPES
from hub.storage.partitions import FIXES_COLUMNS

RAW_TOPIC = "bench/raw"
SUBSCRIBE_SETTLE_S = 1.0
PASSTHROUGH_TIMEOUT_S = 60.0


def fix_rows(count: int, prefix: str, start_ms: int) -> list[tuple[Any, ...]]:
    """Rows shaped like the hub's (see ``Pipeline.persist``), 1000 devices, unique (device_id, ts)."""
    return [(f"{prefix}{i % 1000:05d}", start_ms + i // 1000, 34.2 + (i % 997) * 1e-5, 117.1 + (i % 991) * 1e-5,
             None, 5.0, 8.0, float(i % 360), None, None, i // 1000, None, start_ms + i // 1000)
            for i in range(count)]


async def client_args(stack: BenchStack) -> tuple[list[str], list[str], str]:
    """(mosquitto_pub options, mosquitto_sub options, topic) for the stack's broker."""
    if not stack.secure or not stack.logins:
        port = ["-h", "127.0.0.1", "-p", str(stack.mqtt_port)]
        return port, port, RAW_TOPIC
    device, secret = next(iter(stack.logins.items()))
    topic = device_topic(device, "telemetry")
    observer = await observer_login(stack, topic)
    assert observer is not None
    where = BrokerAddress.parse(stack.device_url)
    pub = ["-h", where.host, "-p", str(where.port), "-i", device, "-u", device, "-P", secret]
    if where.tls and where.cafile:
        pub += ["--cafile", where.cafile]
    sub = ["-h", "127.0.0.1", "-p", str(stack.mqtt_port), "-i", observer[0], "-u", observer[0], "-P", observer[1]]
    return pub, sub, topic


async def mosquitto_passthrough(stack: BenchStack, workdir: Path, messages: int = 200_000) -> dict[str, Any]:
    for tool in ("mosquitto_pub", "mosquitto_sub"):
        if shutil.which(tool) is None:
            return {"error": f"{tool} is not on PATH (apt-get install mosquitto-clients)"}
    pub_args, sub_args, topic = await client_args(stack)
    lines = workdir / "raw-fixes.txt"
    start = 1_795_000_000_000
    with lines.open("w") as f:
        for i in range(messages):
            f.write(f'{{"ts":{start + i},"lat":34.261010,"lon":117.185920,"acc":4.5,"speed":8.3,'
                    f'"heading":92,"battery":81,"seq":{i}}}\n')
    stamps = workdir / "raw-stamps.txt"
    common = ["-t", topic, "-q", "0"]
    sub = pub = None
    try:
        with stamps.open("wb") as out:
            sub = subprocess.Popen(["mosquitto_sub", *sub_args, *common, "-C", str(messages), "-F", "%U"], stdout=out,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        await asyncio.sleep(SUBSCRIBE_SETTLE_S)  # connected and subscribed (milliseconds on loopback)
        with lines.open("rb") as source:
            pub_started = time.monotonic()
            pub = subprocess.Popen(["mosquitto_pub", *pub_args, *common, "-l"], stdin=source, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + PASSTHROUGH_TIMEOUT_S
        while sub.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        pub_s = time.monotonic() - pub_started
        timed_out = sub.poll() is None
    finally:
        stop_process(sub, 5)
        stop_process(pub, 5)
    received = stamps.read_text().split()
    result: dict[str, Any] = {"security": stack.security, "messages_sent": messages, "messages_received": len(received),
                              "payload_bytes": len(lines.read_bytes()) // messages, "timed_out": timed_out,
                              "publisher_wall_s": round(pub_s, 3)}
    if len(received) >= 2:
        span = float(received[-1]) - float(received[0])
        result["span_s"] = round(span, 3)
        result["rate"] = round((len(received) - 1) / span) if span > 0 else None
    lines.unlink(missing_ok=True)
    stamps.unlink(missing_ok=True)
    return result


def copy_limit(url: str, rows: int = 500_000) -> dict[str, Any]:
    """Binary COPY of ``rows`` fix rows into a scratch table like ``fixes``; timed COPY + commit."""
    data = fix_rows(rows, "rawcopy-", int(time.time() * 1000))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy_limit")
        conn.execute(f"CREATE TABLE bench_copy_limit ({FIXES_COLUMNS})")
        try:
            started = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur, cur.copy(
                    f"COPY bench_copy_limit ({', '.join(FIX_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(list(FIX_TYPES))
                for row in data:
                    copy.write_row(row)
            elapsed = time.perf_counter() - started
            stored = conn.execute("SELECT count(*) FROM bench_copy_limit").fetchone()
        finally:
            conn.execute("DROP TABLE IF EXISTS bench_copy_limit")
    return {"rows": rows, "stored": stored[0] if stored else None, "seconds": round(elapsed, 3),
            "rate": round(rows / elapsed)}


async def hub_write_path(url: str, rows: int = 200_000, batch_rows: int = 5000) -> dict[str, Any]:
    """The hub's ``Database.write`` alone, in ``batch_rows`` batches, into the real ``fixes`` table."""
    data = fix_rows(rows, "rawwrite-", int(time.time() * 1000))
    async with Database(url) as db:
        started = time.perf_counter()
        inserted = 0
        for i in range(0, rows, batch_rows):
            inserted += await db.write(Batch(fixes=data[i:i + batch_rows]))
        elapsed = time.perf_counter() - started
    # The rows are the measurement's own: do not leave them in an external database.
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("DELETE FROM fixes WHERE device_id LIKE 'rawwrite-%'")
    return {"rows": rows, "inserted": inserted, "batch_rows": batch_rows, "seconds": round(elapsed, 3),
            "rate": round(rows / elapsed)}
