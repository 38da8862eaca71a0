"""The video package's exceptions: one base, one subclass per way a request can be refused.

Every error carries a short machine-readable ``code``; the application serving :mod:`video.http` maps the class
to an HTTP status (the hub: its one table, ``hub.api.errors.ERRORS``) and answers with the code and the message.
The package knows nothing of that application.
"""

from __future__ import annotations

__all__ = [
    "BadOffer",
    "BadSdpFragment",
    "ForwardingUnavailable",
    "IceRestartUnsupported",
    "MediaServerError",
    "PreconditionFailed",
    "PreconditionRequired",
    "TooLarge",
    "TooManyViewers",
    "UnknownSession",
    "UnknownStream",
    "Unsupported",
    "UnsupportedMediaType",
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


class UnsupportedMediaType(VideoError):
    """A WHIP/WHEP body of another Content-Type than the endpoint takes (415)."""

    code = "unsupported_media_type"


class TooLarge(VideoError):
    """A WHIP/WHEP body over :data:`video.sdp.MAX_SDP_BYTES` (413)."""

    code = "too_large"


class PreconditionRequired(VideoError):
    """A trickle-ICE PATCH without ``If-Match`` (RFC 9725 4.3.1: 428)."""

    code = "precondition_required"


class PreconditionFailed(VideoError):
    """A trickle-ICE PATCH whose ``If-Match`` does not name the session's entity tag (412)."""

    code = "precondition_failed"
