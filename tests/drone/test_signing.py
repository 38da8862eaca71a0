"""Signing key files: permissions, formats, and that secrets never leak; the link's admission rule."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drone.codec import encode, mavlink, new_codec
from drone.errors import SigningError
from drone.signing import (
    REFUSAL_REASONS,
    SIGNING_EPOCH,
    Admission,
    SigningKey,
    SigningKeys,
    is_signed_frame,
    signing_timestamp,
)

SECRET_HEX = "8f" * 32


def _write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_0600_json_file_loads(tmp_path: Path) -> None:
    path = _write(tmp_path / "keys.json", f'{{"7": "{SECRET_HEX}", "8": {{"key": "{"01" * 32}", "link_id": 2}}}}',
                  0o600)
    keys = SigningKeys.load(path)
    assert sorted(keys) == [7, 8]
    assert keys[7].secret == bytes.fromhex(SECRET_HEX) and keys[7].link_id == 0
    assert keys[8].link_id == 2 and keys.get(9) is None


def test_toml_and_0400_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path / "keys.toml", f'"12" = "{SECRET_HEX}"\n', 0o400)
    assert SigningKeys.load(path)[12].secret == bytes.fromhex(SECRET_HEX)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_world_readable_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "keys.json", f'{{"7": "{SECRET_HEX}"}}', mode)
    with pytest.raises(SigningError, match=r"0600 or stricter") as info:
        SigningKeys.load(path)
    assert f"{mode:04o}" in str(info.value) and SECRET_HEX not in str(info.value)


@pytest.mark.parametrize("text", [
    '{"7": "abc"}', '{"seven": "' + SECRET_HEX + '"}', '{"300": "' + SECRET_HEX + '"}', '["x"]',
    '{"7": "' + "zz" * 32 + '"}', '{"7": ' + SECRET_HEX[:10],
])
def test_bad_files_are_refused_without_echoing_content(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "keys.json", text, 0o600)
    with pytest.raises(SigningError) as info:
        SigningKeys.load(path)
    assert SECRET_HEX[:10] not in str(info.value) and "zz" * 8 not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="cannot read"):
        SigningKeys.load(tmp_path / "nope.json")


def test_secret_never_in_repr_str_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = SigningKeys.load(_write(tmp_path / "k.json", f'{{"7": "{SECRET_HEX}"}}', 0o600))
    key = keys[7]
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").info("keys %s %r %s %r", keys, keys, key, key)
    for text in (repr(keys), str(keys), repr(key), str(key), caplog.text, repr(dict(keys))):
        assert SECRET_HEX not in text and repr(key.secret) not in text
    assert "7" in repr(keys)


def test_key_validation_and_timestamp() -> None:
    with pytest.raises(SigningError):
        SigningKey(b"short")
    with pytest.raises(SigningError):
        SigningKey(bytes(32), link_id=256)
    assert signing_timestamp(SIGNING_EPOCH + 1.5) == 150_000  # 10 µs units since 2015-01-01
    assert SigningKeys({5: bytes(32)})[5].secret == bytes(32)


KEY = SigningKey(bytes(range(32)))


def _frame(system_id: int, key: SigningKey | None = None) -> bytes:
    codec = new_codec(system_id, 1)
    if key is not None:
        codec.signing.secret_key, codec.signing.sign_outgoing = key.secret, True
        codec.signing.timestamp = signing_timestamp()
    return encode(codec, mavlink.MAVLink_heartbeat_message(2, 3, 0, 0, 4, 3))


def test_admission_of_a_fleet_link() -> None:
    fleet = Admission(fleet=frozenset({1, 2, 3}), unsigned=frozenset({2}))
    assert fleet.refusal(1, KEY, _frame(1, KEY)) is None  # keyed, signed right
    assert fleet.refusal(1, KEY, _frame(1)) == "bad_signature"  # keyed, unsigned
    assert fleet.refusal(1, KEY, _frame(1, SigningKey(bytes(32)))) == "bad_signature"  # keyed, another key
    assert fleet.refusal(2, None, _frame(2)) is None  # opted in unsigned
    assert fleet.refusal(3, None, _frame(3)) == "refused_unsigned"  # no key, no opt-in
    # Signed with a key the hub lacks: refused, with the reason that says what to fix (give the hub the key).
    assert fleet.refusal(3, None, _frame(3, KEY)) == "signed_no_key"
    assert fleet.refusal(2, None, _frame(2, KEY)) is None  # opted in: heard (the link marks it signed_unkeyed)
    assert fleet.refusal(9, None, _frame(9)) == "outside_fleet"
    assert fleet.refusal(9, KEY, _frame(9, KEY)) == "outside_fleet"  # a stray key does not let a stranger in
    # An opt-in never weakens a key: the keyed drone must still sign.
    both = Admission(fleet=frozenset({1}), unsigned=frozenset({1}))
    assert both.refusal(1, KEY, _frame(1)) == "bad_signature"


def test_a_bare_link_hears_anyone_and_checks_the_keyed() -> None:
    bare = Admission()
    assert bare.refusal(9, None, _frame(9)) is None
    assert bare.refusal(9, None, _frame(9, KEY)) is None  # heard; the link marks it signed_unkeyed
    assert bare.refusal(9, KEY, _frame(9)) == "bad_signature"


@given(system_id=st.integers(1, 255), frame=st.binary(max_size=300), keyed=st.booleans())
def test_admission_never_raises_and_never_admits_a_stranger(system_id: int, frame: bytes, keyed: bool) -> None:
    fleet = Admission(fleet=frozenset({1, 2}), unsigned=frozenset({2}))
    reason = fleet.refusal(system_id, KEY if keyed else None, frame)
    assert reason is None or reason in REFUSAL_REASONS
    if system_id not in (1, 2):
        assert reason == "outside_fleet"
    elif keyed:
        assert reason == "bad_signature"  # random bytes never carry KEY's signature
    elif system_id == 1:
        assert reason == ("signed_no_key" if is_signed_frame(frame) else "refused_unsigned")
