"""Live video: WHIP ingest, WHEP viewing and a forwarding relay that neither decodes nor encodes.

Modules, from the wire inwards:

- ``http``: the WHIP/WHEP routes (RFC 9725, draft-ietf-wish-whep) over a ``VideoService``.
- ``service``: publishers and viewers as aiortc peer connections; one stream per publishing device.
- ``sdp``: checking offers and trickle-ICE fragments.
- ``forward``: the adapter over aiortc internals that moves encoded frames (pinned aiortc 1.16).
- ``relay``: one stream's frames to many viewers and its sinks, with key-frame gating.
- ``frames`` / ``bitstream``: encoded frames and the little bitstream reading needed about them.
- ``recording``: sinks that write streams to disk.
- ``client``: the publisher and viewer side (devices, simulators, tests).

Nothing is imported here, so ``video.frames`` stays cheap to import for code that never touches aiortc.
"""
