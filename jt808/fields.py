"""The standard's data types (BYTE, WORD, DWORD, BCD[n], STRING) read from untrusted bytes and written back.

:class:`Reader` is a cursor that refuses to read past its end ("truncated"); BCD refuses nibbles above 9
("bad_bcd"); text is GBK (read as GB18030, its superset) and refuses undecodable bytes or an inner NUL ("bad_text").
"""

from __future__ import annotations

from jt808.errors import Jt808Error

__all__ = ["Reader", "bcd_decode", "bcd_encode", "text_decode", "text_encode"]


def bcd_decode(data: bytes) -> str:
    """Two decimal digits per byte, high nibble first."""
    digits = data.hex()
    if not digits.isdigit() and digits:
        raise Jt808Error("bad_bcd", data.hex())
    return digits


def bcd_encode(digits: str, size: int) -> bytes:
    """``digits`` left-padded with zeros to ``size`` bytes. A caller's mistake is a ValueError."""
    if not digits.isascii() or not digits.isdigit() or len(digits) > 2 * size:
        raise ValueError(f"{digits!r} is not at most {2 * size} decimal digits")
    return bytes.fromhex(digits.rjust(2 * size, "0"))


def text_decode(data: bytes) -> str:
    """A STRING or padded BYTE[n] field: trailing NUL padding removed, the rest must be GBK without a NUL."""
    data = data.rstrip(b"\x00")
    if b"\x00" in data:
        raise Jt808Error("bad_text", "NUL inside a string")
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        raise Jt808Error("bad_text", "not GBK text") from None


def text_encode(text: str, size: int | None = None) -> bytes:
    """GBK bytes; with ``size``, right-padded with NUL to exactly that many (longer text is a ValueError)."""
    data = text.encode("gb18030")
    if b"\x00" in data:
        raise ValueError("a JT/T 808 string cannot hold NUL")
    if size is None:
        return data
    if len(data) > size:
        raise ValueError(f"{text!r} needs {len(data)} bytes, the field has {size}")
    return data.ljust(size, b"\x00")


class Reader:
    """Big-endian fields read in order from ``data``; nothing reads past the end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int) -> bytes:
        if size < 0 or size > self.left:
            raise Jt808Error("truncated", f"{size} bytes wanted at {self.offset}, {self.left} left")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def bcd(self, size: int) -> str:
        return bcd_decode(self.take(size))

    def text(self, size: int) -> str:
        return text_decode(self.take(size))

    def rest(self) -> bytes:
        return self.take(self.left)
