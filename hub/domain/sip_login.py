"""SIP logins of GB/T 28181 devices: their ids and passwords.

A GB/T 28181 device id is 20 decimal digits (its centre code, industry, type and serial: appendix D of the
standard). Its password is typed into the camera's web page or configuration tool, so a generated one is 20
letters and digits (about 119 bits): long enough, and accepted by every camera's form. A password given by the
operator must be printable ASCII without quotes or backslashes (it travels inside a quoted digest parameter on
some devices' tools) and 8 to 32 characters (the field length of common cameras).
"""

from __future__ import annotations

import re
import secrets
import string
from typing import Final

__all__ = ["PASSWORD_ALPHABET", "is_gb28181_id", "new_sip_password", "password_problem"]

_DEVICE_ID: Final = re.compile(r"[0-9]{20}")
PASSWORD_ALPHABET: Final = string.ascii_letters + string.digits
_GENERATED_LENGTH: Final = 20
_ALLOWED: Final = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "'", "\\"}


def is_gb28181_id(device_id: str) -> bool:
    return _DEVICE_ID.fullmatch(device_id) is not None


def new_sip_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(_GENERATED_LENGTH))


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be a device's SIP password, or None when it can."""
    if not 8 <= len(password) <= 32:
        return "a SIP password is 8 to 32 characters"
    if not set(password) <= _ALLOWED:
        return "a SIP password is printable ASCII without spaces, quotes or backslashes"
    return None
