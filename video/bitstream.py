"""Small, pure readers of the two video bitstreams the relay forwards (VP8 and H.264 Annex B).

The relay and the recorder never decode pictures; they only need to know whether a frame is a key frame
(a viewer or a recording segment may start there) and the picture size a container header wants. Everything
here takes untrusted bytes from a publisher, so garbage, empty or truncated input gives ``False``/``None``
and never raises.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "H264_IDR",
    "H264_PPS",
    "H264_SPS",
    "h264_nal_units",
    "h264_parameter_sets",
    "h264_size",
    "is_keyframe",
    "is_well_formed",
    "vp8_size",
]

H264_IDR = 5  # nal_unit_type of a coded slice of an IDR picture (ITU-T H.264 table 7-1)
H264_SPS = 7
H264_PPS = 8

_VP8_START_CODE = b"\x9d\x01\x2a"
_VP8_KEY_HEADER_LEN = 10  # 3-byte frame tag + 3-byte start code + 2 x 16-bit size


def is_keyframe(codec: str, data: bytes) -> bool:
    """Whether ``data`` (one VP8 frame or one H.264 Annex B access unit) decodes on its own."""
    name = codec.upper()
    if name == "VP8":
        return _vp8_is_keyframe(data)
    if name == "H264":
        return any(_nal_type(data[pos : pos + 1]) == H264_IDR for pos in _nal_starts(data))
    return False


def _nal_starts(data: bytes) -> Iterator[int]:
    """Offsets of the NAL unit headers, found without copying the payloads (the relay checks every frame)."""
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        yield pos + 3
        pos = data.find(b"\x00\x00\x01", pos + 3)


def _vp8_is_keyframe(data: bytes) -> bool:
    # RFC 6386 9.1: bit 0 of the frame tag is 0 for a key frame, and a key frame always carries the
    # start code; requiring it too keeps random bytes (half of which have bit 0 clear) from passing.
    return len(data) >= _VP8_KEY_HEADER_LEN and data[0] & 0x01 == 0 and data[3:6] == _VP8_START_CODE


def is_well_formed(codec: str, data: bytes) -> bool:
    """A cheap plausibility check of one frame's framing (not a decode): catches garbage and empty frames.

    VP8: the frame tag's first partition must fit in the frame (and a key frame needs its start code).
    H.264: at least one NAL unit, every NAL header valid, and at least one coded slice (types 1-5).
    """
    name = codec.upper()
    if name == "VP8":
        if len(data) < 3:
            return False
        first_partition = int.from_bytes(data[0:3], "little") >> 5
        if data[0] & 0x01 == 0:
            return _vp8_is_keyframe(data) and 0 < first_partition <= len(data) - _VP8_KEY_HEADER_LEN
        return 0 < first_partition <= len(data) - 3
    if name == "H264":
        types = [_nal_type(nal) for nal in h264_nal_units(data)]
        return bool(types) and None not in types and any(1 <= (t or 0) <= 5 for t in types)
    return False


def vp8_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a VP8 key frame header, or None for an inter frame or bad input."""
    if not _vp8_is_keyframe(data):
        return None
    # 14-bit sizes, little-endian; the top two bits are the upscaling hint, not part of the size.
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    if width == 0 or height == 0:
        return None
    return width, height


def h264_nal_units(data: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex B byte stream (3- or 4-byte start codes), without their start codes."""
    starts = list(_nal_starts(data))
    for index, start in enumerate(starts):
        end = starts[index + 1] - 3 if index + 1 < len(starts) else len(data)
        # A 4-byte start code (and trailing_zero_8bits) leave zero bytes before the next 00 00 01.
        nal = data[start:end].rstrip(b"\x00") if index + 1 < len(starts) else data[start:end]
        if nal:
            yield nal


def _nal_type(nal: bytes) -> int | None:
    if not nal or nal[0] & 0x80:  # forbidden_zero_bit set: not a valid NAL unit header
        return None
    return nal[0] & 0x1F


def h264_parameter_sets(data: bytes) -> bytes | None:
    """The SPS and PPS NAL units of an access unit as an Annex B blob (container extradata), or None."""
    sps = [nal for nal in h264_nal_units(data) if _nal_type(nal) == H264_SPS]
    pps = [nal for nal in h264_nal_units(data) if _nal_type(nal) == H264_PPS]
    if not sps or not pps:
        return None
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in (*sps, *pps))


class _BitReader:
    """Reads an RBSP (emulation prevention bytes already removed) MSB first; raises IndexError past the end."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def bit(self) -> int:
        byte = self._data[self._pos >> 3]
        value = (byte >> (7 - (self._pos & 7))) & 1
        self._pos += 1
        return value

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:  # no legal syntax element is this long: garbage
                raise IndexError("exp-Golomb code too long")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


def _rbsp(nal: bytes) -> bytes:
    # Drop emulation prevention bytes: 00 00 03 -> 00 00 (H.264 7.4.1).
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def h264_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SPS in an Annex B access unit, cropping applied; None if absent or bad."""
    for nal in h264_nal_units(data):
        if _nal_type(nal) == H264_SPS:
            try:
                return _sps_size(_BitReader(_rbsp(nal[1:])))
            except IndexError:
                return None
    return None


def _sps_size(reader: _BitReader) -> tuple[int, int] | None:  # follows the SPS syntax table (7.3.2.1.1)
    profile_idc = reader.bits(8)
    reader.bits(16)  # constraint flags, reserved bits, level_idc
    reader.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = reader.ue()
        if chroma_format_idc == 3:
            separate_colour_plane = reader.bit()
        reader.ue()  # bit_depth_luma_minus8
        reader.ue()  # bit_depth_chroma_minus8
        reader.bit()  # qpprime_y_zero_transform_bypass_flag
        if reader.bit():  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if reader.bit():
                    _skip_scaling_list(reader, 16 if index < 6 else 64)
    reader.ue()  # log2_max_frame_num_minus4
    poc_type = reader.ue()
    if poc_type == 0:
        reader.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        reader.bit()  # delta_pic_order_always_zero_flag
        reader.se()
        reader.se()
        for _ in range(reader.ue()):
            reader.se()
    reader.ue()  # max_num_ref_frames
    reader.bit()  # gaps_in_frame_num_value_allowed_flag
    width_mbs = reader.ue() + 1
    height_map_units = reader.ue() + 1
    frame_mbs_only = reader.bit()
    if not frame_mbs_only:
        reader.bit()  # mb_adaptive_frame_field_flag
    reader.bit()  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = height_map_units * 16 * (2 - frame_mbs_only)
    if reader.bit():  # frame_cropping_flag
        left, right, top, bottom = reader.ue(), reader.ue(), reader.ue(), reader.ue()
        chroma = 0 if separate_colour_plane else chroma_format_idc
        crop_x = 1 if chroma == 0 else (2 if chroma in (1, 2) else 1)
        crop_y = (1 if chroma in (0, 2, 3) else 2) * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    if width <= 0 or height <= 0 or width > 16384 or height > 16384:
        return None
    return width, height


def _skip_scaling_list(reader: _BitReader, size: int) -> None:
    last = 8
    next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            next_scale = (last + reader.se() + 256) % 256
        last = next_scale if next_scale != 0 else last
