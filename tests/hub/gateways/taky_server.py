"""A real TAK server for the Cursor-on-Target tests: taky (PyPI), run as its own process in a temporary directory
on a free port, plain TCP or TLS (taky's own ``takyctl setup`` makes the CA and server certificate, ``takyctl
build_client`` a client certificate signed by it, as a TAK administrator would).
"""

from __future__ import annotations

import configparser
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TakyServer:
    host: str
    port: int
    site: Path
    tls: bool
    ca: Path | None = None  # the site's CA (it signed the server's and the client's certificates)
    client_cert: Path | None = None
    client_key: Path | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"

    @property
    def log(self) -> str:
        path = self.site / "taky.log"
        return path.read_text(errors="replace") if path.exists() else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")


def _plain_site(site: Path, port: int) -> None:
    site.mkdir(parents=True)
    config = configparser.ConfigParser()
    config.read_dict({
        "taky": {"hostname": "localhost", "node_id": "TAKY", "bind_ip": "127.0.0.1", "root_dir": "."},
        "cot_server": {"port": str(port)},
        "dp_server": {"upload_path": "./dp-user"},
        "ssl": {"enabled": "false"},
    })
    with (site / "taky.conf").open("w") as fp:
        config.write(fp)


def _tls_site(site: Path, port: int) -> tuple[Path, Path, Path]:
    _run([str(BIN / "takyctl"), "setup", "--public-ip", "127.0.0.1", "--bind-ip", "127.0.0.1", "--host",
          "localhost", str(site)], site.parent)
    config = configparser.ConfigParser(allow_no_value=True)
    config.read(site / "taky.conf")
    config.set("cot_server", "port", str(port))
    with (site / "taky.conf").open("w") as fp:
        config.write(fp)
    _run([str(BIN / "takyctl"), "-c", "taky.conf", "build_client", "--dump_pem", "fieldhub"], site)
    cert = next(site.glob("fieldhub-*.crt"))
    return site / "ssl" / "ca.crt", cert, cert.with_suffix(".key")


def _wait_listening(process: subprocess.Popen[bytes], port: int, site: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"taky exited ({process.returncode}): {(site / 'taky.log').read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"taky did not listen on {port} within {START_TIMEOUT_S} s")


@contextlib.contextmanager
def taky_server(root: Path, *, tls: bool = False, port: int | None = None) -> Iterator[TakyServer]:
    """Run taky in ``root``/site until the block ends; ``root`` must be short (taky's UNIX management socket)."""
    port = port or free_port()
    site = root / ("site-tls" if tls else "site")
    ca = cert = key = None
    if tls:
        ca, cert, key = _tls_site(site, port)
    else:
        _plain_site(site, port)
    with (site / "taky.log").open("wb") as log:
        process = subprocess.Popen([str(BIN / "taky"), "-c", "taky.conf", "-l", "debug"], cwd=site,
                                   stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            _wait_listening(process, port, site)
            yield TakyServer("127.0.0.1", port, site, tls, ca, cert, key)
        finally:
            process.send_signal(signal.SIGTERM)  # taky leaves its select loop within a second and closes clients
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
