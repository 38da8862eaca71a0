"""The two load generators of ``fieldhub bench hostile`` (run as ``python -m bench.hostile_load``).

Both are :class:`bench.loadgen.Generator` with its pacing, its connections and its JSON-lines protocol:

- ``--mode hostile``: the good fixes of ``bench.loadgen`` exactly (``--rate`` of them a second, one per
  message, ``ts`` = publish time), and after every ``--hostile-every``-th good fix one hostile message
  (:mod:`bench.hostile_payloads`, every kind in turn) on a topic of the device that sent that fix, on the
  same connection in the same write: hostile and good messages share connections, the broker's queue to
  the hub and the hub's cuts. The ``done`` line counts what was sent per kind.
- ``--mode flood``: one registered device (``--devices 1``, ``--device-prefix bench-flood-``) on one
  connection publishing valid fixes at ``--rate`` messages a second, each with a distinct ``ts`` counting
  down from the start (distinct, so a hub without a rate limit would have to store every one).

``--rate`` counts the good fixes (hostile mode) or the flood's messages; the ``published``/``acked``
counts of the samples count every message.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from typing import Any

from bench.hostile_payloads import Forge, Schedule
from bench.loadgen import FIX, Generator, build_parser, child_main, run_child
from bench.publisher import MqttProtocolError, Publisher, encode_topic
from devices.topics import device_topic


class HostileGenerator(Generator):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.every = args.hostile_every
        self.forge = Forge(args.seed, time.time_ns() // 1_000_000)
        self.schedule = Schedule(self.forge.rng)
        self.sent_by_kind: dict[str, int] = {}
        self.bytes_by_kind: dict[str, int] = {}
        self.expected_rejects = 0
        self.good_elements = 0
        self.channel_topics: dict[tuple[int, str], bytes] = {}

    def send(self, k: int) -> Publisher:
        connection = super().send(k)
        if self.every and (k + 1) % self.every == 0:
            d = k % len(self.devices)
            hostile = self.forge.make(self.schedule.next())
            topic = self.channel_topics.get((d, hostile.channel))
            if topic is None:
                topic = self.channel_topics[d, hostile.channel] = encode_topic(
                    device_topic(self.devices[d], hostile.channel))
            if not connection.publish(topic, hostile.payload, self.args.qos):
                raise MqttProtocolError("65,535 messages awaiting PUBACK on one connection: the broker stalled")
            self.sent_by_kind[hostile.kind] = self.sent_by_kind.get(hostile.kind, 0) + 1
            self.bytes_by_kind[hostile.kind] = self.bytes_by_kind.get(hostile.kind, 0) + len(hostile.payload)
            self.expected_rejects += hostile.rejects
            self.good_elements += hostile.good
        return connection

    def summary(self) -> dict[str, Any]:
        hostile = sum(self.sent_by_kind.values())
        return {**super().summary(), "good": self.published - hostile, "hostile": hostile,
                "hostile_by_kind": self.sent_by_kind,
                "hostile_bytes_by_kind": self.bytes_by_kind, "expected_rejects": self.expected_rejects,
                "good_elements": self.good_elements,
                "reserved_ts": [self.forge.past_lo, self.forge.past_hi]}


class FloodGenerator(Generator):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.start_ts = 0

    def send(self, k: int) -> Publisher:
        if not self.start_ts:
            self.start_ts = time.time_ns() // 1_000_000
        connection = self.connections[0]
        payload = FIX % (self.start_ts - 1 - k, 34.30 + (k % 1000) * 1e-5, 117.20, 3.0, k % 360, k)
        if not connection.publish(self.topics[0], payload, self.args.qos):
            raise MqttProtocolError("65,535 messages awaiting PUBACK on one connection: the broker stalled")
        return connection

    def summary(self) -> dict[str, Any]:
        return {"device": self.devices[0], "ts_range": [self.start_ts - self.published, self.start_ts - 1]}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--mode", choices=("hostile", "flood"), required=True)
    parser.add_argument("--hostile-every", type=int, default=100, help="one hostile message after every N good fixes")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    factory = HostileGenerator if args.mode == "hostile" else FloodGenerator
    return run_child(functools.partial(child_main, factory=factory), args)


if __name__ == "__main__":
    sys.exit(main())
