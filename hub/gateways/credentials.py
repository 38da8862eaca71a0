"""Per-device secrets of the HTTP phone gateways: OwnTracks' HTTP mode (Basic authentication, the app's user and
password) and Traccar Client (a ``key`` in the server URL, see :func:`hub.gateways.osmand.codec.secret_of`).

Comparison is constant-time, so a wrong guess learns nothing from how long the refusal took. A device with no
secret provisioned is refused too: a gateway never lets an unknown phone in by default.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Final

from hub.gateways.errors import CodecError

__all__ = ["MAX_SECRET", "basic_credentials", "check_secret"]

MAX_SECRET: Final = 256


def check_secret(expected: str | None, presented: str | None) -> None:
    """Raise ``bad_secret`` unless ``presented`` equals the provisioned ``expected`` secret."""
    if expected is None or not expected:
        raise CodecError("bad_secret", "no secret is provisioned for this device")
    if presented is None or len(presented) > MAX_SECRET:
        raise CodecError("bad_secret", "no usable secret presented")
    if not hmac.compare_digest(expected.encode("utf-8", "surrogatepass"), presented.encode("utf-8", "surrogatepass")):
        raise CodecError("bad_secret", "the secret does not match")


def basic_credentials(authorization: str | None) -> tuple[str, str]:
    """``(user, password)`` of an ``Authorization: Basic ...`` header (RFC 7617), or ``bad_secret``."""
    if authorization is None or len(authorization) > 4 * MAX_SECRET:
        raise CodecError("bad_secret", "no usable Basic credentials")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        raise CodecError("bad_secret", "not Basic credentials")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise CodecError("bad_secret", "Basic credentials are not base64 of UTF-8") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise CodecError("bad_secret", "Basic credentials without a ':'")
    return user, password
