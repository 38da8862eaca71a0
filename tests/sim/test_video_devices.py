"""Simulated body cameras against a real WHIP endpoint: VideoService + video_router served by uvicorn.

Commands reach the camera over the real Mosquitto (through the city simulator), the camera publishes
with aiortc, the relay hands the encoded frames to a sink that decodes them with libvpx and reads the
burned-in frame codes; refusals and restarts are checked against the relay's own list of streams.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import av
import pytest
import uvicorn
from fastapi import FastAPI
from gmqtt import Client as MqttClient

from devices import topics
from devices.client import DeviceClient
from devices.payloads import Command, encode_command
from hub.api.errors import ApiError, install
from hub.infra.embedded import free_port
from sim.framecode import elapsed_ms, read_code
from sim.runner import CitySim
from sim.video_devices import SimCameras
from tests.conftest import ADMIN_TOKEN, TOKEN, RunningHub, SecureBroker, wait_for
from video.client import WhepViewer
from video.frames import EncodedFrame
from video.http import video_router
from video.service import StreamInfo, VideoService


@dataclass
class CodeReader:
    """A relay sink that decodes a stream's frames and reads their codes, with the time each was read."""

    codes: list[tuple[int, int, int]] = field(default_factory=list)  # (frame_no, sent_low, read at ms)
    undecodable: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._codec = av.CodecContext.create("libvpx", "r")

    def write(self, frame: EncodedFrame) -> None:
        try:
            pictures = self._codec.decode(av.Packet(frame.data))
        except av.FFmpegError:
            self.undecodable += 1
            return
        for picture in pictures:
            self.sizes.add((picture.width, picture.height))
            code = read_code(picture.to_ndarray(format="bgr24"))
            if code is not None:
                self.codes.append((*code, time.time_ns() // 1_000_000))

    def close(self) -> None:
        pass


@dataclass
class WhipHub:
    """The WHIP side of a hub: tokens per device, the relay, what its sinks read."""

    url: str
    service: VideoService
    tokens: dict[str, str] = field(default_factory=dict)
    readers: dict[str, CodeReader] = field(default_factory=dict)  # stream_id -> its sink

    def whip_url(self, device_id: str) -> str:
        return f"{self.url}/whip/{device_id}"

    def issue(self, device_id: str) -> str:
        self.tokens[device_id] = token = uuid.uuid4().hex
        return token


@pytest.fixture
async def whip() -> AsyncIterator[WhipHub]:
    readers: dict[str, CodeReader] = {}

    def sink(info: StreamInfo) -> CodeReader:
        readers[info.stream_id] = reader = CodeReader()
        return reader

    async with VideoService(sink_factory=sink) as service:
        port = free_port()
        hub = WhipHub(f"http://127.0.0.1:{port}", service, readers=readers)

        async def authorize_publish(device_id: str, token: str | None) -> None:
            if token is None or hub.tokens.get(device_id) != token:
                raise ApiError(401, "unauthorized", f"no valid video token for {device_id}")

        async def authorize_view(token: str | None) -> None:
            if token != TOKEN:
                raise ApiError(401, "unauthorized", "viewer token required")

        app = FastAPI()
        install(app)
        app.include_router(video_router(service, authorize_publish, authorize_view))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve())
        await wait_for(lambda: server.started, timeout=10)
        try:
            yield hub
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)


class EventSpy:
    """Every ``video`` event the devices publish, as the hub would receive them."""

    def __init__(self, broker: SecureBroker) -> None:
        self.broker = broker
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.client = MqttClient("spy-" + uuid.uuid4().hex[:8])

        def on_message(client: MqttClient, topic: str, payload: bytes, qos: int, props: Any) -> int:
            event = json.loads(payload)
            if event.get("type") == "video":
                self.events.append((topic.split("/")[-2], event))
            return 0

        self.client.on_message = on_message

    async def __aenter__(self) -> EventSpy:
        self.broker.login(self.client)
        await self.client.connect("127.0.0.1", self.broker.port)
        self.client.subscribe("fieldhub/v1/dev/+/event", qos=1)
        await asyncio.sleep(0.1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    def states(self, device_id: str) -> list[tuple[str, str]]:
        return [(e["state"], e["stream_id"]) for d, e in self.events if d == device_id]

    def command(self, device_id: str, type_: str, **body: Any) -> Command:
        command = Command(uuid.uuid4().hex[:12], time.time_ns() // 1_000_000, type_, body)
        self.client.publish(topics.device_topic(device_id, "cmd"), encode_command(command), qos=1)
        return command


def _start(whip: WhipHub, device_id: str, token: str | None = None, **extra: Any) -> Command:
    body = {"whip_url": whip.whip_url(device_id), "token": token or whip.issue(device_id), **extra}
    return Command(uuid.uuid4().hex[:12], time.time_ns() // 1_000_000, "video_start", body)


def _stop() -> Command:
    return Command(uuid.uuid4().hex[:12], time.time_ns() // 1_000_000, "video_stop")


async def test_sim_unit_publishes_on_video_start_and_ends_on_video_stop(hub: RunningHub, broker: SecureBroker,
                                                                        whip: WhipHub) -> None:
    """The whole device side: MQTT command -> WHIP publish -> frames whose codes decode -> video_stop."""
    async with EventSpy(broker) as spy, CitySim(hub.base_url, "", ADMIN_TOKEN, units=1, start_parked=True,
                                                 camera_size=(320, 240), camera_fps=15) as sim:
        camera = "P001-cam"
        await wait_for(lambda: sim.connected == len(sim.devices), timeout=10)
        spy.command(camera, "video_start", whip_url=whip.whip_url(camera), token=whip.issue(camera),
                    keyframe_interval_ms=1000)
        started = await wait_for(lambda: spy.states(camera), timeout=20)
        [(state, stream_id)] = started
        assert state == "started"
        [info] = whip.service.streams()
        assert (info.stream_id, info.device_id, info.codec) == (stream_id, camera, "VP8")
        feed = sim.cameras.feeds[camera]
        reader = whip.readers[stream_id]
        await wait_for(lambda: len(reader.codes) >= 20, timeout=20)
        assert reader.sizes == {(320, 240)}
        numbers = [n for n, _, _ in reader.codes]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        for number, sent_low, read_ms in reader.codes:
            sent = feed.track.sent_ms.get(number)
            assert sent is not None and sent & 0xFFFF_FFFF == sent_low  # the time in the picture is the time kept
            assert elapsed_ms(sent_low, read_ms) < 2000

        # A viewer joining late decodes the same codes, a few hundred ms behind at most on loopback.
        async with WhepViewer(f"{whip.url}/whep/{stream_id}", TOKEN) as viewer:
            await asyncio.wait_for(viewer.start(), 10)
            seen = []
            for _ in range(8):
                picture = await asyncio.wait_for(viewer.recv(), 10)
                code = read_code(picture.to_ndarray(format="bgr24"))
                assert code is not None
                seen.append((code[0], elapsed_ms(code[1], time.time_ns() // 1_000_000)))
        numbers = [n for n, _ in seen]
        assert numbers == sorted(numbers) and numbers[0] > reader.codes[0][0]
        latencies = sorted(ms for _, ms in seen)
        print(f"\nsimulated camera -> relay -> viewer decode at 320x240: p50 {latencies[len(latencies) // 2]} ms")
        assert latencies[len(latencies) // 2] < 1000

        spy.command(camera, "video_stop")
        await wait_for(lambda: len(spy.states(camera)) == 2, timeout=10)
        assert spy.states(camera) == [("started", stream_id), ("stopped", stream_id)]
        await wait_for(lambda: whip.service.streams() == [], timeout=10)
        assert sim.cameras.feeds == {}
        assert (sim.cameras.counters.started, sim.cameras.counters.stopped) == (1, 1)
        assert sim.cameras.counters.refused == sim.cameras.counters.failed == 0


async def test_second_video_start_restarts_with_the_new_token(broker: SecureBroker, whip: WhipHub) -> None:
    async with EventSpy(broker) as spy, DeviceClient("R1-cam", await broker.device_login("R1-cam"),
                kind="bodycam") as device, \
            SimCameras(width=320, height=240, fps=10) as cameras:
        first = _start(whip, "R1-cam")
        assert cameras.handle(device, first)
        await cameras.idle()
        old = cameras.feeds["R1-cam"].stream_id
        second = _start(whip, "R1-cam")  # a fresh token: the first one no longer works
        cameras.handle(device, second)
        assert cameras.handle(device, second)  # the hub re-sent it: carried out once
        await cameras.idle()
        new = cameras.feeds["R1-cam"].stream_id
        assert new != old
        assert [s.stream_id for s in whip.service.streams()] == [new]
        await wait_for(lambda: len(spy.states("R1-cam")) == 3, timeout=10)
        assert spy.states("R1-cam") == [("started", old), ("stopped", old), ("started", new)]
        assert cameras.counters.started == 2 and cameras.counters.refused == 0


async def test_drone_camera_publishes_a_view_that_follows_the_drone(broker: SecureBroker, whip: WhipHub) -> None:
    pose = [34.26101, 117.18592, 45.0]
    async with DeviceClient("D1-cam", await broker.device_login("D1-cam"), kind="drone") as device, \
            SimCameras(width=320, height=240, fps=15) as cameras:
        cameras.handle(device, _start(whip, "D1-cam"), view="drone", position=lambda: (pose[0], pose[1], pose[2]))
        await cameras.idle()
        feed = cameras.feeds["D1-cam"]
        assert feed.track.view == "drone"
        reader = whip.readers[feed.stream_id]
        await wait_for(lambda: len(reader.codes) >= 5, timeout=10)
        pose[0] += 0.001  # the drone flies on: the camera reads the new position for its next frames
        frames = feed.track.frames
        await wait_for(lambda: feed.track.frames > frames + 3, timeout=5)
        assert feed.track.pose == tuple(pose)


async def test_stream_ended_by_the_hub_is_reported_stopped(broker: SecureBroker, whip: WhipHub) -> None:
    async with EventSpy(broker) as spy, DeviceClient("R6-cam", await broker.device_login("R6-cam"),
                kind="bodycam") as device, \
            SimCameras(width=320, height=240, fps=10) as cameras:
        cameras.handle(device, _start(whip, "R6-cam"))
        await cameras.idle()
        stream_id = cameras.feeds["R6-cam"].stream_id
        await wait_for(lambda: len(whip.readers[stream_id].codes) >= 3, timeout=10)
        await whip.service.end(stream_id)  # e.g. an operator or the hub's own shutdown
        await wait_for(lambda: cameras.feeds == {}, timeout=10)
        await wait_for(lambda: len(spy.states("R6-cam")) == 2, timeout=10)
        assert spy.states("R6-cam") == [("started", stream_id), ("stopped", stream_id)]
        assert cameras.counters.lost == 1 and cameras.counters.stopped == 1


async def test_refused_and_failed_publishes_are_counted_not_raised(broker: SecureBroker, whip: WhipHub) -> None:
    async with EventSpy(broker) as spy, DeviceClient("R2-cam", await broker.device_login("R2-cam"),
                kind="bodycam") as device, \
            SimCameras(width=320, height=240, fps=10, start_timeout_s=5) as cameras:
        whip.issue("R2-cam")
        cameras.handle(device, _start(whip, "R2-cam", token="not-the-token"))
        await cameras.idle()
        assert cameras.counters.refused == 1 and cameras.refusals == {"unauthorized": 1}
        closed_port = free_port()
        cameras.handle(device, Command("c-down", 1, "video_start",
                                       {"whip_url": f"http://127.0.0.1:{closed_port}/whip/R2-cam", "token": "t"}))
        cameras.handle(device, Command("c-bad", 1, "video_start", {"whip_url": whip.whip_url("R2-cam")}))
        cameras.handle(device, _stop())  # nothing to stop: nothing happens
        await cameras.idle()
        assert cameras.counters.failed == 1 and cameras.counters.bad_commands == 1
        assert cameras.counters.started == 0 and cameras.feeds == {}
        assert whip.service.streams() == []
        await asyncio.sleep(0.3)
        assert spy.states("R2-cam") == []
        assert not cameras.handle(device, Command("c-ping", 1, "ping"))  # not a video command


async def test_no_more_than_max_feeds_publish_at_once(broker: SecureBroker, whip: WhipHub) -> None:
    async with DeviceClient("R7-cam", await broker.device_login("R7-cam"), kind="bodycam") as first, \
            DeviceClient("R8-cam", await broker.device_login("R8-cam"), kind="bodycam") as second, \
            SimCameras(width=320, height=240, fps=10, max_feeds=1) as cameras:
        cameras.handle(first, _start(whip, "R7-cam"))
        cameras.handle(second, _start(whip, "R8-cam"))  # at the same time: the first one's publish counts
        await cameras.idle()
        assert list(cameras.feeds) == ["R7-cam"] and cameras.counters.over_limit == 1
        cameras.handle(first, _stop())
        await cameras.idle()
        cameras.handle(second, _start(whip, "R8-cam"))
        await cameras.idle()
        old = cameras.feeds["R8-cam"].stream_id
        cameras.handle(second, _start(whip, "R8-cam"))  # a restart frees its own place first
        await cameras.idle()
        assert list(cameras.feeds) == ["R8-cam"] and cameras.counters.over_limit == 1
        assert [s.stream_id for s in whip.service.streams()] == [cameras.feeds["R8-cam"].stream_id] != [old]


async def test_close_ends_every_publication_without_hanging(broker: SecureBroker, whip: WhipHub) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # a hub that takes the request and never answers, until the client hangs up
        writer.close()

    mute = await asyncio.start_server(silent, "127.0.0.1", 0)
    mute_port = mute.sockets[0].getsockname()[1]
    async with EventSpy(broker) as spy, DeviceClient("R3-cam", await broker.device_login("R3-cam"),
                kind="bodycam") as device, \
            DeviceClient("R4-cam", await broker.device_login("R4-cam"), kind="bodycam") as other, \
            DeviceClient("R5-cam", await broker.device_login("R5-cam"), kind="bodycam") as stuck, mute:
        cameras = SimCameras(width=320, height=240, fps=10, close_grace_s=1.0)
        cameras.handle(device, _start(whip, "R3-cam"))
        cameras.handle(other, _start(whip, "R4-cam"))
        await cameras.idle()
        assert len(whip.service.streams()) == 2
        cameras.handle(stuck, Command("c-stuck", 1, "video_start",
                                      {"whip_url": f"http://127.0.0.1:{mute_port}/whip/R5-cam", "token": "t"}))
        cameras.handle(device, _start(whip, "R3-cam"))  # a restart, maybe still under way at the shutdown
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await asyncio.wait_for(cameras.close(), 20)
        assert time.monotonic() - started < 4  # the grace for the stuck publish, then cancelled
        assert cameras.feeds == {}
        await wait_for(lambda: whip.service.streams() == [], timeout=10)
        for camera in ("R3-cam", "R4-cam"):  # every stream that was said started was said stopped
            await wait_for(lambda camera=camera: (spy.states(camera) or [("", "")])[-1][0] == "stopped", timeout=10)
            states = spy.states(camera)
            assert states[0::2] == [("started", stream) for _, stream in states[1::2]]
            assert all(state == "stopped" for state, _ in states[1::2])
        assert spy.states("R5-cam") == []
        assert cameras.counters.started == cameras.counters.stopped >= 2
        assert cameras.handle(device, _start(whip, "R3-cam"))  # after close: ignored, nothing starts
        await cameras.idle()
        assert cameras.feeds == {} and whip.service.streams() == []
