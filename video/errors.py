"""The video package's exceptions: one base, one subclass per way a request can be refused.

Every error carries a short machine-readable ``code``; the HTTP router maps the class to a status and
answers ``{"error": {"code", "message"}}`` like the rest of the API.
"""

from __future__ import annotations

__all__ = [
    "BadOffer",
    "BadSdpFragment",
    "ForwardingUnavailable",
    "IceRestartUnsupported",
    "MediaServerError",
    "TooManyViewers",
    "UnknownSession",
    "UnknownStream",
    "Unsupported",
    "VideoError",
]


class VideoError(Exception):
    """Base of every error the video package raises on purpose."""

    code = "video_error"
    status: int | None = None  # the HTTP status, when the error came from a server (video.client)

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadOffer(VideoError):
    """The SDP offer is not SDP, has no usable video m-line, or offers no codec the relay can forward."""

    code = "bad_offer"


class BadSdpFragment(VideoError):
    """A trickle-ICE SDP fragment (RFC 8840) that cannot be parsed."""

    code = "bad_sdpfrag"


class UnknownStream(VideoError):
    code = "unknown_stream"


class UnknownSession(VideoError):
    code = "unknown_session"


class TooManyViewers(VideoError):
    code = "too_many_viewers"


class Unsupported(VideoError):
    """A well-formed request for something this hub does not do."""

    code = "unsupported"


class IceRestartUnsupported(Unsupported):
    """An ICE restart over PATCH: trickle ICE is supported, restarts are not (RFC 9725 4.3.1 -> 422)."""

    code = "ice_restart_unsupported"


class ForwardingUnavailable(VideoError):
    """The installed aiortc lacks an internal the forwarding adapter relies on (see ``video/forward.py``)."""

    code = "forwarding_unavailable"




class MediaServerError(VideoError):
    """The external media server the hub proxies to (Janus) failed or refused: HTTP 502 Bad Gateway."""

    code = "media_server"
