"""The live picture, fed with fix and status sequences: no broker, no database."""

from __future__ import annotations

from devices.payloads import Fix, Status
from hub.ingest.live import LiveState

T0 = 1_795_000_000_000


def make() -> LiveState:
    live = LiveState(stale_after_ms=60_000)
    live.register_unit("P1", "Patrol 1", "patrol", ["trk", "cam"])
    return live


def test_newest_fix_wins_and_replayed_fix_does_not_move_the_unit_back() -> None:
    live = make()
    assert live.apply_fix("trk", Fix(T0 + 5000, 34.0, 117.0), T0 + 5000)
    assert not live.apply_fix("trk", Fix(T0 + 1000, 35.0, 118.0), T0 + 6000)  # late store-and-forward fix
    view = live.unit_view("P1", T0 + 6000)
    assert view["position"]["lat"] == 34.0 and view["position"]["ts"] == T0 + 5000


def test_unit_position_prefers_the_freshest_device_then_the_more_accurate() -> None:
    live = make()
    live.apply_fix("trk", Fix(T0, 34.0, 117.0, acc=15.0), T0)
    live.apply_fix("cam", Fix(T0 + 500, 34.1, 117.1, acc=4.0), T0 + 500)  # near tie, more accurate
    assert live.units["P1"].fix_device == "cam"
    live.apply_fix("trk", Fix(T0 + 900, 34.2, 117.2, acc=30.0), T0 + 900)  # near tie, less accurate
    assert live.units["P1"].fix_device == "cam"
    live.apply_fix("trk", Fix(T0 + 5000, 34.3, 117.3, acc=30.0), T0 + 5000)  # clearly newer
    assert live.units["P1"].fix_device == "trk"


def test_changes_are_coalesced_per_unit() -> None:
    live = make()
    live.take_changes(T0)
    for i in range(10):
        live.apply_fix("trk", Fix(T0 + i * 1000, 34.0 + i * 1e-4, 117.0), T0 + i * 1000)
    changes = live.take_changes(T0 + 10_000)
    assert len(changes) == 1 and changes[0]["position"]["ts"] == T0 + 9000
    assert live.take_changes(T0 + 10_000) == []


def test_online_offline_from_status_and_staleness() -> None:
    live = make()
    live.apply_fix("trk", Fix(T0, 34.0, 117.0), T0)
    assert live.unit_view("P1", T0 + 1000)["online"] is True
    live.take_changes(T0 + 1000)
    assert live.sweep(T0 + 30_000) == 0
    assert live.sweep(T0 + 61_000) == 1  # fix went stale: the feed must say so
    assert live.take_changes(T0 + 61_000)[0]["status"] == "offline"
    live.apply_status("cam", Status(T0 + 62_000, "online", kind="bodycam"), T0 + 62_000)
    assert live.unit_view("P1", T0 + 62_000)["online"] is True
    # A Last Will carries the ts of the connect it ends, older than the online status: it still wins.
    live.apply_status("cam", Status(T0 + 61_000, "offline"), T0 + 63_000)
    assert live.unit_view("P1", T0 + 63_100)["online"] is False


def test_reassigning_a_device_moves_it_between_units() -> None:
    live = make()
    live.apply_fix("cam", Fix(T0, 34.0, 117.0), T0)
    live.register_unit("P2", "Patrol 2", "patrol", ["cam"])
    assert live.units["P1"].devices == ["trk"]
    assert live.unit_view("P1", T0)["position"] is None  # its only fix came from the moved device
    assert live.devices["cam"].unit_id == "P2"
    assert live.unit_view("P2", T0)["position"]["lat"] == 34.0
    live.register_unit("P2", "Patrol 2", "patrol", [])
    assert live.devices["cam"].unit_id is None


def test_a_fix_newer_than_an_offline_status_brings_the_device_back_online() -> None:
    live = make()
    live.apply_fix("cam", Fix(T0, 34.0, 117.0), T0)
    # The Last Will: ts of the connect it ends (older than the fix), yet the newer news.
    live.apply_status("cam", Status(T0 - 5000, "offline"), T0 + 1000)
    live.take_changes(T0 + 1000)
    assert live.unit_view("P1", T0 + 1000)["online"] is False
    assert not live.apply_fix("cam", Fix(T0 - 100, 34.0, 117.0), T0 + 1500)  # a redelivered older fix
    assert live.devices["cam"].state == "offline"
    assert live.apply_fix("cam", Fix(T0 + 2000, 34.1, 117.1), T0 + 2000)  # back in coverage
    assert live.devices["cam"].state == "online"
    assert live.take_changes(T0 + 2000)[0]["online"] is True


def test_a_fix_newer_than_the_newest_but_older_than_the_offline_status_keeps_it_offline() -> None:
    live = make()
    live.apply_status("cam", Status(T0 + 10_000, "offline"), T0 + 10_000)  # a device that says goodbye
    live.apply_fix("cam", Fix(T0 + 5000, 34.0, 117.0), T0 + 11_000)  # a late fix from before it
    assert live.devices["cam"].state == "offline"
    assert live.unit_view("P1", T0 + 11_000)["online"] is False


def test_a_fix_from_the_future_never_takes_the_live_position() -> None:
    live = LiveState(stale_after_ms=60_000, max_future_ms=300_000)
    live.register_unit("P1", "Patrol 1", "patrol", ["trk"])
    live.apply_fix("trk", Fix(T0, 34.0, 117.0), T0)
    ahead = Fix(T0 + 23 * 3600_000, 35.0, 118.0)  # a clock 23 h ahead that slipped past the codec
    assert not live.apply_fix("trk", ahead, T0 + 1000)
    assert live.apply_fix("trk", Fix(T0 + 2000, 34.1, 117.1), T0 + 2000)  # true fixes still move the unit
    assert live.unit_view("P1", T0 + 2000)["position"]["lat"] == 34.1
    assert live.apply_fix("trk", Fix(T0 + 2000 + 300_000, 34.2, 117.2), T0 + 2000)  # within the margin: taken
