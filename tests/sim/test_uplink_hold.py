"""A dead zone on a real broker: DeviceClient.hold_uplink keeps fixes and events, commands still arrive."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gmqtt import Client as MqttClient

from devices import topics
from devices.client import DeviceClient
from devices.clock import now_ms
from devices.payloads import Command, Fix, encode_command
from tests.conftest import SecureBroker, wait_for


async def test_held_fixes_and_events_go_out_as_one_batch_on_release(broker: SecureBroker) -> None:
    seen: list[tuple[str, Any]] = []
    spy = MqttClient("spy-hold")
    spy.on_message = lambda client, topic, payload, qos, props: seen.append((topic, json.loads(payload))) or 0
    broker.login(spy)
    await spy.connect("127.0.0.1", broker.port)
    spy.subscribe("fieldhub/v1/dev/hold-1/+", qos=1)
    commands: list[Command] = []
    device = DeviceClient("hold-1", await broker.device_login("hold-1"),
                kind="radio", unit_id="U1", on_command=commands.append)
    await device.start()
    try:
        await wait_for(lambda: any(t.endswith("/status") for t, _ in seen))
        t0 = now_ms()
        device.send_fix(Fix(ts=t0, lat=34.26, lon=117.18))  # live
        await wait_for(lambda: any(t.endswith("/telemetry") for t, _ in seen))

        device.hold_uplink(True)
        assert device.uplink_held and device.connected  # a dead zone, not a disconnect
        for k in range(1, 6):
            device.send_fix(Fix(ts=t0 + 1000 * k, lat=34.26 + k * 1e-4, lon=117.18))
        device.send_event("contact", ts=t0 + 2500, incident_id="I1")
        # A command still gets through; its ack waits in the dead zone with the device time it was signed.
        spy.publish(topics.device_topic("hold-1", "cmd"),
                    encode_command(Command("c-1", t0, "dispatch", {"incident": {"id": "I1"}})), qos=1)
        await wait_for(lambda: commands)
        acked_at = device.acks["c-1"]
        await asyncio.sleep(0.5)
        assert [t for t, _ in seen if t.endswith(("/telemetry", "/event"))] == [
            topics.device_topic("hold-1", "telemetry")]  # only the live fix from before the hold
        assert len(device.buffer) == 5 and len(device.pending_events) == 2

        device.hold_uplink(False)
        await wait_for(lambda: sum(t.endswith("/telemetry") for t, _ in seen) == 2
                       and sum(t.endswith("/event") for t, _ in seen) == 2)
        batch = next(p for t, p in seen[::-1] if t.endswith("/telemetry"))
        assert isinstance(batch, list) and [f["ts"] for f in batch] == [t0 + 1000 * k for k in range(1, 6)]
        events = {p["type"]: p for t, p in seen if t.endswith("/event")}
        assert events["contact"]["ts"] == t0 + 2500 and events["contact"]["incident_id"] == "I1"
        assert events["ack"]["ts"] == acked_at and events["ack"]["cmd_id"] == "c-1"
        assert not device.buffer and not device.pending_events
    finally:
        await device.stop()
        await spy.disconnect()
