"""``fieldhub device add|list|revoke|rotate``: device logins from the command line, on the hub's database and broker.

The broker is told through its dynamic-security administrator: FIELDHUB_MQTT_ADMIN_URL for an external Mosquitto,
or, for the embedded broker, the administrator login the running hub left in ``data_dir/broker-admin.json``. When
the embedded hub is not running only the table changes, which is enough: the embedded broker is built from the
table at every start. A secret is printed once and never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hub.config import Settings

__all__ = ["add_parser", "cmd_device"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("device", help="provision devices: their MQTT, SIP or gateway logins")
    dsub = p.add_subparsers(dest="device_command", required=True)
    d = dsub.add_parser("add", help="register a device on a unit and print its new login (shown once)")
    d.add_argument("device_id")
    d.add_argument("--unit", required=True, help="the unit it belongs to (must exist)")
    d.add_argument("--kind", help="bodycam, radio, vehicle, drone, camera, phone, tracker or gateway")
    d.add_argument("--protocol", choices=("mqtt", "gb28181", "jt808", "owntracks", "osmand"), default="mqtt",
                   help="mqtt (default: a broker login), gb28181 (a SIP body camera: 20-digit id, digest password), "
                        "jt808 (a vehicle terminal, by --phone), owntracks or osmand (a phone app: Traccar Client)")
    d.add_argument("--phone", help="jt808 only: the terminal's phone number (digits, as configured in it)")
    d.add_argument("--terminal-id", help="jt808 only: the terminal id its registration must carry (optional)")
    d.add_argument("--password-stdin", action="store_true",
                   help="gb28181 only: read the camera's password from stdin instead of generating one")
    d.add_argument("--json", action="store_true")
    d = dsub.add_parser("rotate", help="give a device a new secret (the old one stops working; shown once)")
    d.add_argument("device_id")
    d.add_argument("--password-stdin", action="store_true",
                   help="gb28181 only: read the camera's new password from stdin instead of generating one")
    d.add_argument("--json", action="store_true")
    d = dsub.add_parser("cert", help="issue a client certificate for a device with a login (embedded broker's CA): "
                                     "writes DEVICE.pem and DEVICE.key (0600) into --out")
    d.add_argument("device_id")
    d.add_argument("--out", default=".", help="directory for the certificate and key (default: here)")
    d = dsub.add_parser("revoke", help="revoke a device's login: the broker disconnects and refuses it")
    d.add_argument("device_id")
    d = dsub.add_parser("list", help="devices and the state of their logins (never a secret)")
    d.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_device)


async def cmd_device(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from hub.access.provisioning import ProvisioningError
    from hub.errors import HubError, one_line
    from hub.logsafe import redact

    try:
        return await _run(args, settings)
    except ProvisioningError as exc:
        print(f"fieldhub: {exc}", file=sys.stderr, flush=True)
        return 2 if exc.code in ("invalid", "unknown_unit", "unknown_device", "exists") else 1
    except (HubError, psycopg.Error, OSError) as exc:
        print(f"fieldhub: cannot {args.device_command} device logins: {redact(one_line(exc))}", file=sys.stderr,
              flush=True)
        return 1


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Any]:
    from hub.infra.embedded import EmbeddedPostgres
    from hub.storage import Database

    url, pg = settings.database_url, None
    if url is None:
        pg = EmbeddedPostgres(settings.data_dir / "pg")
        url = await asyncio.to_thread(pg.start)
    try:
        async with Database(url) as db:
            yield db
    finally:
        if pg is not None:
            pg.close()


async def _broker(settings: Settings) -> tuple[str | None, str | None, str]:
    """(admin URL, device URL, a note) of the broker to tell (the mTLS URL: ``read_admin_file``)."""
    from hub.access.dynsec import BrokerAdmin, BrokerAdminError
    from hub.infra.broker import read_admin_file

    if settings.mqtt_url is not None:
        note = "" if settings.mqtt_admin_url else "the broker checks logins against the database (no admin URL)"
        return settings.mqtt_admin_url, settings.device_mqtt_url, note
    running = read_admin_file(settings.data_dir)
    if running:
        try:
            async with BrokerAdmin(running["admin_url"], timeout_s=3):
                return running["admin_url"], running.get("device_url"), ""
        except BrokerAdminError:
            pass
    return None, None, "the hub is not running: its embedded broker takes this change when it starts"


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from hub.access.provisioning import Provisioner, gateway_endpoints, sip_server
    from hub.infra.broker import read_admin_file
    from hub.infra.tls import Pki
    from hub.storage.audit import AuditLog
    from hub.storage.device_logins import DeviceLoginStore
    from hub.storage.sip_logins import SipLoginStore

    admin_url, device_url, note = await _broker(settings)
    actor = f"cli:{getpass.getuser()}"
    ca = settings.data_dir / "tls"
    pki = Pki(ca / "ca.pem", ca / "ca.key") if settings.mqtt_url is None and (ca / "ca.key").exists() else None
    mtls_url = (read_admin_file(settings.data_dir) or {}).get("mtls_url")
    async with _database(settings) as db:
        provisioner = Provisioner(DeviceLoginStore(db), admin_url=admin_url, device_url=device_url,
                                  audit=AuditLog(db), pki=pki, mtls_url=mtls_url,
                                  reserved=frozenset({settings.mqtt_client_id}), sip_store=SipLoginStore(db),
                                  sip_server=sip_server(settings), gateways=gateway_endpoints(settings))
        command = args.device_command
        if command == "cert":
            issued = await provisioner.certificate(args.device_id, actor=actor)
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{args.device_id}.pem").write_text(issued["certificate"])
            fd = os.open(out / f"{args.device_id}.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(issued["private_key"])
            print(f"device {args.device_id}: certificate {out / (args.device_id + '.pem')}, key "
                  f"{out / (args.device_id + '.key')} (0600), CA {ca / 'ca.pem'}\n"
                  f"  broker (client certificates): {issued['mqtt_url'] or '(the hub is not running)'}")
            return 0
        if command == "list":
            rows = await provisioner.list()
            if args.json:
                print(json.dumps([{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
                                  for r in rows], indent=1))
            else:
                print(f"{'device':<24} {'unit':<16} {'kind':<9} {'login':<8} {'protocol':<9} {'ident':<24} created")
                for r in rows:
                    created = r["created_at"].strftime("%Y-%m-%d %H:%M") if r["created_at"] else "-"
                    print(f"{r['device_id']:<24} {r['unit_id'] or '-':<16} {r['kind'] or '-':<9} {r['login']:<8} "
                          f"{r['protocol'] or '-':<9} {r['ident'] or '-':<24} {created}")
            return 0
        if command == "revoke":
            await provisioner.revoke(args.device_id, actor=actor)
            print(f"device {args.device_id}: login revoked" + (f" ({note})" if note else ""))
            return 0
        password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None
        if command == "add":
            creds = await provisioner.add(args.device_id, args.unit, args.kind, actor=actor,
                                          protocol=args.protocol, password=password, phone=args.phone,
                                          terminal_id=args.terminal_id)
        else:
            creds = await provisioner.rotate(args.device_id, actor=actor, password=password)
    if args.json:
        print(json.dumps(creds.as_dict()), flush=True)
    elif creds.gateway is not None:
        print(_gateway_text(creds.device_id, creds.password, creds.gateway, note), flush=True)
    elif creds.sip is not None:
        sip = creds.sip
        print(f"device {creds.device_id}: new GB/T 28181 login (shown once; only its digest is kept)\n"
              f"  configure the camera's platform (平台) settings:\n"
              f"  device id / SIP user: {creds.device_id}\n  password: {creds.password}\n"
              f"  SIP server id: {sip.server_id}\n  SIP domain: {sip.realm}\n"
              f"  SIP server address: {sip.host or '(FIELDHUB_GB28181 is off: enable it)'}\n"
              f"  SIP server port: {sip.port} (UDP or TCP)", flush=True)
    else:
        print(f"device {creds.device_id}: new login (shown once; only its digest is kept)\n"
              f"  username = client id: {creds.username}\n  password: {creds.password}\n"
              f"  broker: {creds.mqtt_url or '(FIELDHUB_DEVICE_MQTT_URL not set)'}"
              + (f"\n  CA certificate: {creds.ca_file}" if creds.ca_file else "")
              + (f"\n  note: {note}" if note else ""), flush=True)
    return 0


def _gateway_text(device_id: str, secret: str | None, gw: dict[str, Any], note: str) -> str:
    """What an installer configures a gateway device with (the secret shown this once)."""
    off = "" if gw["enabled"] else f"\n  note: the hub's {gw['protocol']} gateway is off: enable it"
    if gw["protocol"] == "jt808":
        state = "open: the terminal's next registration gets its code" if gw["registration_open"] else "closed"
        return (f"device {device_id}: JT/T 808 terminal (no secret: it gets an authentication code when it "
                f"registers)\n  configure the terminal's platform: server {gw['host'] or '(FIELDHUB_JT808 is off)'}, "
                f"TCP port {gw['port']}\n  phone number: {gw['phone']}"
                + (f"\n  terminal id: {gw['terminal_id']}" if gw["terminal_id"] else "")
                + f"\n  registration: {state}" + off)
    if gw["protocol"] == "owntracks":
        mqtt, http = gw["mqtt"], gw["http"]
        return (f"device {device_id}: OwnTracks phone (shown once; only its digest is kept)\n"
                f"  MQTT mode: broker {mqtt['url'] or '(FIELDHUB_DEVICE_MQTT_URL not set)'}, username = client id: "
                f"{device_id}, password: {secret}\n  topic: {mqtt['topic']}\n"
                f"  HTTP mode: URL {http['url'] or http['path']}, username {device_id}, password: {secret}"
                + (f"\n  note: {note}" if note else "") + off)
    return (f"device {device_id}: Traccar Client / OsmAnd phone (shown once; only its digest is kept)\n"
            f"  device identifier: {gw['identifier']}\n  server URL: {gw['server_url']}" + off)
