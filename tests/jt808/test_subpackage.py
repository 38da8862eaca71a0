"""Sub-packaged messages: parts out of order, duplicated, missing (-> timeout with the missing indexes), and the
pending sets bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jt808.codec import decode_message, encode_subpackaged
from jt808.errors import Jt808Error
from jt808.frame import decode_frame
from jt808.header import Header, Packet, parse_packet
from jt808.location import BatchLocation, Location
from jt808.subpackage import Expired, Reassembler

POINTS = tuple(Location(0, 2, 31_000_000 + i, 121_000_000 + i, 5, 100, 90, 1_796_000_000_000 + i * 1000)
               for i in range(40))
BATCH = BatchLocation(1, POINTS)  # 40 x 30 bytes + 3: more than one packet's 1023 bytes


def _parts(version: int = 0, part_size: int = 500, serial: int = 65534) -> list[Packet]:
    frames = encode_subpackaged(BATCH, phone="13912344323", serial=serial, version=version, part_size=part_size)
    return [parse_packet(decode_frame(frame[1:-1])) for frame in frames]


def _push_all(reassembler: Reassembler, parts: list[Packet], now: float = 0.0) -> list[Packet]:
    done = []
    for part in parts:
        whole, evicted = reassembler.push(part, now)
        assert evicted == []
        if whole is not None:
            done.append(whole)
    return done


@pytest.mark.parametrize("version", [0, 1])
def test_parts_carry_count_index_and_consecutive_serials(version: int) -> None:
    parts = _parts(version)
    assert [(p.header.packet_count, p.header.packet_index, p.header.serial) for p in parts] == [
        (3, 1, 65534), (3, 2, 65535), (3, 3, 0)]  # the serial wraps at 2**16


@given(st.permutations(range(3)), st.booleans())
def test_out_of_order_parts_make_the_message(order: list[int], is_2019: bool) -> None:
    parts = _parts(int(is_2019))
    reassembler = Reassembler()
    done = _push_all(reassembler, [parts[i] for i in order])
    assert len(done) == 1 and reassembler.pending == 0
    assert done[0].header == Header(0x0704, "13912344323", 65534, int(is_2019))
    assert decode_message(done[0]).body == BATCH


def test_duplicate_is_dropped() -> None:
    parts = _parts()
    reassembler = Reassembler()
    assert _push_all(reassembler, parts[:2]) == []
    with pytest.raises(Jt808Error, match="duplicate"):
        reassembler.push(parts[1], 1.0)
    assert reassembler.drops["duplicate"] == 1
    assert len(_push_all(reassembler, parts[2:])) == 1


def test_missing_part_times_out_with_what_was_missing() -> None:
    parts = _parts()
    reassembler = Reassembler(timeout=30.0)
    _push_all(reassembler, [parts[0], parts[2]], now=100.0)
    assert reassembler.expire(129.0) == []
    assert reassembler.expire(130.0) == [Expired("13912344323", 0x0704, 65534, (2,), "timeout")]
    assert reassembler.pending == 0 and reassembler.drops["timeout"] == 1
    # A late part now starts a set of its own, which later times out too: nothing half-made is delivered.
    assert reassembler.push(parts[1], 131.0) == (None, [])


def test_pending_sets_are_bounded() -> None:
    reassembler = Reassembler(max_pending=2)
    firsts = [_parts(serial=serial)[0] for serial in (10, 20, 30)]
    assert reassembler.push(firsts[0], 0.0) == (None, [])
    assert reassembler.push(firsts[1], 1.0) == (None, [])
    whole, evicted = reassembler.push(firsts[2], 2.0)
    assert whole is None and evicted == [Expired("13912344323", 0x0704, 10, (2, 3), "too_many_pending")]
    assert reassembler.pending == 2


def test_too_many_parts_refused() -> None:
    part = Packet(Header(0x0704, "1", 0, packet_count=1000, packet_index=1), b"x")
    with pytest.raises(Jt808Error, match="too_many_parts"):
        Reassembler(max_parts=256).push(part, 0.0)


def test_whole_packet_passes_through() -> None:
    packet = Packet(Header(0x0002, "1", 5), b"")
    assert Reassembler().push(packet, 0.0) == (packet, [])


def test_two_terminals_do_not_mix() -> None:
    mine, theirs = _parts(), [Packet(Header(p.header.msg_id, "13800000001", p.header.serial, p.header.version,
                                            p.header.encryption, p.header.packet_count, p.header.packet_index),
                                     b"other") for p in _parts()]
    reassembler = Reassembler()
    done = _push_all(reassembler, [mine[0], theirs[0], mine[1], theirs[1], mine[2], theirs[2]])
    assert [p.header.phone for p in done] == ["13912344323", "13800000001"]
    assert decode_message(done[0]).body == BATCH and done[1].body == b"other" * 3
