"""MAVLink 2 signing keys: loading, redaction and the pure signature checks.

A key file maps system ids to 32-byte secrets written as 64 hex characters::

    {"7": "a1b2...", "8": {"key": "c3d4...", "link_id": 2}}

(JSON, or TOML with the same shape when the file name ends in ``.toml``). The file
must not be readable by group or others: a leaked key lets anyone fly the drone.
Secrets never appear in ``repr``/``str`` or in error messages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drone.errors import SigningError

__all__ = ["REFUSAL_REASONS", "SIGNING_EPOCH", "Admission", "SigningKey", "SigningKeys", "is_signed_frame",
           "signature_valid", "signing_timestamp"]

# MAVLink signing timestamps count 10 µs units since 2015-01-01 00:00:00 UTC.
SIGNING_EPOCH = 1_420_070_400
_SIGNATURE_LEN = 13
# Why a link ignores a frame before decoding it (each a counter of the link's stats).
# signed_no_key: a fleet drone with neither key nor opt-in that signs its frames, i.e. uses a key the hub
# does not have (it would also drop every unsigned command of ours); told apart from refused_unsigned
# because the fix differs: give the hub its key.
REFUSAL_REASONS = ("outside_fleet", "refused_unsigned", "bad_signature", "signed_no_key")


def signing_timestamp(now: float | None = None) -> int:
    """The signing timestamp for wall time ``now`` (seconds since the Unix epoch)."""
    t = time.time() if now is None else now
    return max(0, int((t - SIGNING_EPOCH) * 100_000))


def is_signed_frame(frame: bytes) -> bool:
    """True when ``frame`` is MAVLink 2 with the signed flag (whatever the key)."""
    return len(frame) >= 3 and frame[0] == 0xFD and bool(frame[2] & 0x01)


def signature_valid(secret: bytes, frame: bytes) -> bool:
    """True when a signed MAVLink 2 frame carries the signature of ``secret``.

    The link checks this *before* pymavlink sees the frame: pymavlink records a
    stream's timestamp before comparing the signature, so a forged frame with a far
    future timestamp would otherwise lock out the genuine sender.
    """
    if len(frame) < _SIGNATURE_LEN + 12 or not is_signed_frame(frame):
        return False
    digest = hashlib.sha256(secret + frame[:-6]).digest()[:6]
    return hmac.compare_digest(digest, frame[-6:])


@dataclass(frozen=True)
class SigningKey:
    """One vehicle's secret and the link id we sign with."""

    secret: bytes = field(repr=False)
    link_id: int = 0

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise SigningError(f"a signing key must be 32 bytes, got {len(self.secret)}")
        if not 0 <= self.link_id <= 255:
            raise SigningError(f"link_id must be 0..255, got {self.link_id}")

    def __str__(self) -> str:
        return f"SigningKey(link_id={self.link_id}, secret=<redacted>)"

    __repr__ = __str__


class SigningKeys(Mapping[int, SigningKey]):
    """Signing keys by system id. Vehicles without an entry are unsigned both ways."""

    def __init__(self, keys: Mapping[int, SigningKey | bytes] | None = None, *, link_id: int = 0) -> None:
        self._keys: dict[int, SigningKey] = {}
        for system_id, key in (keys or {}).items():
            if not 1 <= int(system_id) <= 255:
                raise SigningError(f"system id must be 1..255, got {system_id}")
            self._keys[int(system_id)] = key if isinstance(key, SigningKey) else SigningKey(bytes(key), link_id)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKeys:
        """Read a key file; refuses one that group or others may read."""
        p = Path(path)
        try:
            # fstat the descriptor we read from, so the mode checked is that of the file read.
            with p.open("rb") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise SigningError(
                        f"{p}: key file mode is {stat.S_IMODE(mode):04o}; it must be 0600 or stricter "
                        f"(run: chmod 600 {p})"
                    )
                raw = fh.read()
        except OSError as exc:
            raise SigningError(f"{p}: cannot read key file: {exc.strerror}") from exc
        try:
            text = raw.decode("utf-8")
            data: Any = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            # The parser's message may quote the file's content, i.e. a secret: keep only its type.
            raise SigningError(f"{p}: not a valid {'TOML' if p.suffix == '.toml' else 'JSON'} file "
                               f"({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise SigningError(f"{p}: expected an object of system id -> key")
        return cls({_system_id(p, name): _parse_key(p, name, value) for name, value in data.items()})

    def __getitem__(self, system_id: int) -> SigningKey:
        return self._keys[system_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"SigningKeys(systems={sorted(self._keys)})"

    __str__ = __repr__


@dataclass(frozen=True)
class Admission:
    """Whose MAVLink a link hears, decided per frame before it is decoded.

    ``fleet`` None admits any system id (a bare ground station, a test); otherwise only those ids.
    A keyed system must sign every frame with its key, fleet or not. A fleet system without a key
    is heard only when it is in ``unsigned``: the operator opted in for that drone explicitly. Such a
    drone may still sign (with a key we lack): it is heard, so the map shows it, and the link marks
    it; one neither keyed nor opted in that signs is refused as ``signed_no_key``.
    """

    fleet: frozenset[int] | None = None
    unsigned: frozenset[int] = frozenset()

    def refusal(self, system_id: int, key: SigningKey | None, frame: bytes) -> str | None:
        """The reason (one of REFUSAL_REASONS) to ignore ``frame`` from ``system_id``, or None to hear it."""
        if self.fleet is not None and system_id not in self.fleet:
            return "outside_fleet"
        if key is not None:
            # An unsigned frame from a keyed system is as bad as a forged one: both are refused.
            return None if signature_valid(key.secret, frame) else "bad_signature"
        if self.fleet is not None and system_id not in self.unsigned:
            return "signed_no_key" if is_signed_frame(frame) else "refused_unsigned"
        return None


def _system_id(path: Path, name: str) -> int:
    try:
        value = int(name)
    except ValueError:
        raise SigningError(f"{path}: {name!r} is not a system id") from None
    if not 1 <= value <= 255:
        raise SigningError(f"{path}: system id {value} outside 1..255")
    return value


def _parse_key(path: Path, name: str, value: Any) -> SigningKey:
    link_id = 0
    if isinstance(value, dict):
        link_id = value.get("link_id", 0)
        value = value.get("key")
        if not isinstance(link_id, int) or isinstance(link_id, bool):
            raise SigningError(f"{path}: system {name}: link_id must be an integer")
    if not isinstance(value, str) or len(value) != 64:
        raise SigningError(f"{path}: system {name}: key must be 64 hex characters")
    try:
        secret = bytes.fromhex(value)
    except ValueError:
        raise SigningError(f"{path}: system {name}: key must be 64 hex characters") from None
    return SigningKey(secret, link_id)
