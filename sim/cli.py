"""The simulator's subcommands of the ``fieldhub`` command line: ``demo`` (a hub on the simulated city, driven
by simulated units, calls and drones) and ``sim`` (the simulation against a running hub).

:mod:`fieldhub.cli` adds them to the command line; the hub's helpers (settings, signals, start-up faults) come
from :mod:`hub.cli`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from collections.abc import Coroutine
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devices.tasks import cancel_and_wait
from hub.cli import cannot_start, listening, load_settings, until_signal
from hub.errors import HubStartError

if TYPE_CHECKING:
    from hub.config import Settings

__all__ = ["DEMO_TAK_URL", "add_demo", "add_sim"]

DEMO_TAK_URL = "udp://239.2.3.1:6969"  # ATAK's default SA multicast group: the hub sends and receives there


async def cmd_demo(args: argparse.Namespace) -> int:
    """`fieldhub demo`: a hub on the simulated city, with simulated units, calls and drones driving it."""
    from hub.api.app import serve
    from hub.server import Hub
    from sim.city import build_city
    from sim.drone_runner import city_docks, rest_login, run_drones, write_fleet, write_keys
    from sim.drones import new_keys
    from sim.runner import run_sim

    token = os.environ.get("FIELDHUB_BOOTSTRAP_TOKEN") or "fh_demo_" + secrets.token_urlsafe(16)
    # The simulated installer: provisions every simulated device's own login (MQTT, or GB/T 28181 password) through
    # the API (never printed).
    installer = "fh_demo_admin_" + secrets.token_urlsafe(24)
    try:
        settings = load_settings(bootstrap_token=token, bootstrap_admin_token=installer, city_seed=args.seed)
        settings = listening(settings, args)
    except HubStartError as exc:
        return cannot_start(str(exc))
    docks = city_docks(args.seed, stations=args.drones) if args.drones > 0 else []
    drone_keys: dict[str, bytes] = {}
    if docks and settings.mavlink_url is None:  # the demo's own drones, on a loopback port the hub picks
        drone_keys = new_keys(docks)  # fresh signing keys every run, shared by the hub and the drones
        settings = settings.model_copy(update={
            "mavlink_url": "udpin:127.0.0.1:0", "drones": write_fleet(docks, settings.data_dir / "demo-drones.json"),
            "drone_keys": write_keys(docks, drone_keys, settings.data_dir / "demo-drone-keys.json")})
    if args.gb_cameras > 0 and not settings.gb28181:  # the demo's own SIP server on a loopback port the hub picks
        settings = settings.model_copy(update={"gb28181": True, "gb28181_host": "127.0.0.1", "gb28181_port": 0})
    if args.jt808_terminals > 0 and not settings.jt808:  # the demo's own JT/T 808 server on a loopback port
        settings = settings.model_copy(update={"jt808": True, "jt808_host": "127.0.0.1", "jt808_port": 0})
    if args.phones > 0:  # the phone apps' gateways: OwnTracks over the devices' broker, Traccar Client over HTTP
        settings = settings.model_copy(update={"owntracks": True, "osmand": True})
    if args.tak_clients > 0 and not settings.tak:  # the LAN's SA multicast group (TTL 1: it stays on the link)
        settings = settings.model_copy(update={"tak": True, "tak_url": DEMO_TAK_URL})
    host, port = args.host or settings.host, args.port or settings.port
    try:
        async with Hub(settings, city=partial(build_city, seed=settings.city_seed)) as hub:
            started = asyncio.Event()
            server = asyncio.create_task(serve(hub, host, port, started))
            await started.wait()
            assert hub.broker_links is not None
            url = f"http://{host}:{port}"
            print(f"\nfieldhub demo: one-map at {url}/?token={token}\n"
                  f"  dispatcher token: {token}\n  MQTT broker for devices (TLS, one login each): "
                  f"{hub.broker_links.device_url}\n  Ctrl-C to stop.\n", flush=True)
            city = run_sim(url, "", installer, units=args.units, seed=args.seed,
                           incidents_per_min=args.incidents_per_min, hard_cases=args.hard_cases)
            jobs: list[Coroutine[Any, Any, Any] | asyncio.Future[Any]] = [server, city]
            if docks and hub.drones is not None:
                jobs.append(run_drones(docks, ("127.0.0.1", hub.drones.link.local_address[1]), keys=drone_keys,
                                       login=rest_login(url, installer)))
                print(f"  drones: {len(docks)} simulated (MAVLink 2 on udp {hub.drones.link.local_address[1]})\n",
                      flush=True)
            if args.gb_cameras > 0 and hub.gb28181 is not None:
                jobs.append(_gb_cameras(args, settings, hub.gb28181.udp_port, url, installer))
            if args.jt808_terminals > 0 and hub.jt808 is not None:
                jobs.append(_jt808_terminals(args, settings, hub.jt808.port, url, installer))
            if args.phones > 0 or args.tak_clients > 0:
                jobs.append(_phones(args, settings, url, installer))
            try:
                await until_signal(*jobs)
            finally:
                await cancel_and_wait(server)
    except HubStartError as exc:  # raised only while starting
        return cannot_start(str(exc))
    return 0


def _gb_cameras(args: argparse.Namespace, settings: Settings, sip_port: int, url: str,
                installer: str) -> Coroutine[Any, Any, None]:
    """The demo's GB/T 28181 body cameras (SIP to the hub's own server), announced on the console."""
    from sim.gb28181_demo import GbDemoConfig, run_gb_cameras

    sip_host = settings.gb28181_announce_host or settings.gb28181_host
    if sip_host in ("0.0.0.0", "::", ""):
        sip_host = "127.0.0.1"
    print(f"  GB/T 28181 body cameras: {args.gb_cameras} simulated, SIP server {settings.gb28181_server_id} at "
          f"udp {sip_host}:{sip_port}\n", flush=True)
    return run_gb_cameras(GbDemoConfig(url, installer, settings.gb28181_server_id, sip_host, sip_port,
                                       count=args.gb_cameras, seed=args.seed))


def _jt808_terminals(args: argparse.Namespace, settings: Settings, port: int, url: str,
                     installer: str) -> Coroutine[Any, Any, None]:
    """The demo's JT/T 808 vehicle terminals (TCP to the hub's own server), announced on the console."""
    from sim.jt808_demo import Jt808DemoConfig, run_jt808_terminals

    host = "127.0.0.1" if settings.jt808_host in ("0.0.0.0", "::", "") else settings.jt808_host
    print(f"  JT/T 808 vehicle terminals: {args.jt808_terminals} simulated, server at tcp {host}:{port}\n", flush=True)
    return run_jt808_terminals(Jt808DemoConfig(url, installer, host, port, count=args.jt808_terminals, seed=args.seed,
                                               datum=settings.jt808_datum))


def _phones(args: argparse.Namespace, settings: Settings, url: str, installer: str) -> Coroutine[Any, Any, None]:
    """The demo's officers on foot with phones (OwnTracks over MQTT, Traccar Client over HTTP) and its TAK users
    (Cursor-on-Target on the hub's TAK link), announced on the console."""
    from sim.phone_demo import PhoneDemoConfig, run_phones

    tak_url = settings.tak_url.replace("udp+wo://", "udp://", 1) if settings.tak else None
    if tak_url is not None and not tak_url.startswith(("udp://", "tcp://")):
        print(f"  TAK users: not simulated (the hub's TAK link {tak_url} is not a multicast group or a plain "
              "TAK server)", flush=True)
        tak_url = None
    elif tak_url is not None and settings.tak_url.startswith("udp+wo://"):
        print("  TAK users: the hub only sends to its multicast group (udp+wo://): they see the hub's picture, "
              "the hub does not see them", flush=True)
    tak_clients = args.tak_clients if tak_url is not None else 0
    print(f"  phones: {args.phones} officers on foot ({(args.phones + 1) // 2} OwnTracks over MQTT, "
          f"{args.phones // 2} Traccar Client over HTTP); TAK users: {tak_clients}"
          + (f" on {tak_url}" if tak_clients else "") + "\n", flush=True)
    return run_phones(PhoneDemoConfig(url, installer, count=args.phones, seed=args.seed, tak_clients=tak_clients,
                                      tak_url=tak_url, tak_interval_s=settings.tak_interval_s))


async def cmd_sim(args: argparse.Namespace) -> int:
    """`fieldhub sim`: simulated units and drones against a running hub."""
    from sim.drone_runner import city_docks, drone_keys, rest_login, run_drones, write_fleet
    from sim.runner import run_sim

    jobs: list[Coroutine[Any, Any, Any]] = []
    if args.drones > 0:
        docks = city_docks(args.seed, stations=args.drones)
        if args.drone_fleet:
            write_fleet(docks, Path(args.drone_fleet), unsigned=args.unsigned_drones)
        keys: dict[str, bytes] = {}
        if not args.unsigned_drones:  # signed by default, with the keys of the hub's key file (made if missing)
            keys = drone_keys(docks, Path(args.drone_keys))
            print(f"drones sign with the keys in {args.drone_keys} (the hub's FIELDHUB_DRONE_KEYS)", flush=True)
        host, _, port = args.mavlink.rpartition(":")
        jobs.append(run_drones(docks, (host or "127.0.0.1", int(port)), args.duration, keys=keys,
                               login=rest_login(args.hub, args.token, args.mqtt),
                               params={} if args.stock_drones else None))
    if args.units > 0:
        jobs.append(_city(args, run_sim))
    await until_signal(*jobs)
    return 0


async def _city(args: argparse.Namespace, run_sim: Any) -> None:
    await run_sim(args.hub, args.mqtt, args.token, units=args.units, duration_s=args.duration, seed=args.seed,
                  interval_s=(args.interval[0], args.interval[1]), incidents_per_min=args.incidents_per_min,
                  hard_cases=args.hard_cases, truth_path=args.truth)


def _shares(text: str) -> dict[str, float]:
    """``outliers=0.05,dead_zone=0.02`` -> {case: share of dispatches}; "" -> none."""
    shares: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            shares[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: expected case=share, e.g. dead_zone=0.05") from None
    return shares


def _add_sim_options(p: argparse.ArgumentParser, *, rate: float, hard: str) -> None:
    p.add_argument("--incidents-per-min", type=float, default=rate,
                   help=f"simulated calls per minute (Poisson), dispatched and closed by a simulated dispatcher "
                        f"(default {rate:g}; 0: none)")
    p.add_argument("--hard-cases", type=_shares, default=_shares(hard),
                   help=f"share of dispatches carried out as a hard case: outliers, dead_zone, drive_by "
                        f"(default {hard!r})")


def add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fieldhub demo``."""
    p = sub.add_parser("demo", help="everything on one machine with a simulated city")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--units", type=int, default=60)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--drones", type=int, default=4, help="simulated drones, one per police station (default 4)")
    p.add_argument("--gb-cameras", type=int, default=3, metavar="N",
                   help="patrol units whose only device is a simulated GB/T 28181 body camera (SIP), run beside "
                        "the MQTT units; turns the hub's GB/T 28181 server on (default 3; 0: none)")
    p.add_argument("--jt808-terminals", type=int, default=3, metavar="N",
                   help="patrol units whose only device is a simulated JT/T 808 vehicle terminal (TCP), which "
                        "receives the dispatch as a text; turns the hub's JT/T 808 server on (default 3; 0: none)")
    p.add_argument("--phones", type=int, default=2, metavar="N",
                   help="officers on foot whose only device is a simulated phone: half OwnTracks (MQTT), half "
                        "Traccar Client (HTTP); turns the hub's OwnTracks and OsmAnd gateways on (default 2; 0: none)")
    p.add_argument("--tak-clients", type=int, default=1, metavar="N",
                   help="simulated TAK users (ATAK) walking near the centre, on the LAN's SA multicast group "
                        f"{DEMO_TAK_URL.removeprefix('udp://')}; turns the hub's TAK link on there unless "
                        "FIELDHUB_TAK is set (default 1; 0: none)")
    _add_sim_options(p, rate=2.0, hard="outliers=0.03,dead_zone=0.03,drive_by=0.03")
    p.set_defaults(func=cmd_demo)


def add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fieldhub sim``."""
    p = sub.add_parser("sim", help="run the city simulator against a hub")
    p.add_argument("--hub", default="http://127.0.0.1:8000")
    p.add_argument("--mqtt", default=os.environ.get("FIELDHUB_DEVICE_MQTT_URL", ""),
                   help="where the devices connect, mqtts://host:8883?cafile=CA.pem (default: what the hub says)")
    p.add_argument("--token", required=True,
                   help="an admin token: the simulated installer gives each device its own MQTT login")
    p.add_argument("--units", type=int, default=50)
    p.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--interval", type=float, nargs=2, default=(1.0, 5.0), metavar=("LOW", "HIGH"),
                   help="seconds between a device's fixes, drawn per device (default 1 5)")
    p.add_argument("--truth", help="append the ground truth of every finished response to this file (JSON lines)")
    p.add_argument("--drones", type=int, default=0,
                   help="also fly N simulated drones (one per police station) to --mavlink; write their fleet "
                        "file with --drone-fleet for the hub's FIELDHUB_DRONES")
    p.add_argument("--mavlink", default="127.0.0.1:14550", help="the hub's MAVLink UDP port, HOST:PORT")
    p.add_argument("--drone-fleet", help="write the drones' fleet file here")
    p.add_argument("--drone-keys", default=os.environ.get("FIELDHUB_DRONE_KEYS") or ".fieldhub/drone-keys.json",
                   help="the drones' MAVLink 2 signing key file, shared with the hub (FIELDHUB_DRONE_KEYS); made "
                        "with fresh keys (mode 0600) if missing (default: %(default)s)")
    p.add_argument("--unsigned-drones", action="store_true",
                   help="fly the drones without signing (their fleet file entries say \"unsigned\": true)")
    p.add_argument("--stock-drones", action="store_true",
                   help="give the drones ArduCopter's default parameters (link failsafe off: the hub will not "
                        "dispatch them until it is enabled) instead of a police fleet's")
    _add_sim_options(p, rate=0.0, hard="")
    p.set_defaults(func=cmd_sim)
