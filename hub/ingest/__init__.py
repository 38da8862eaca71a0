"""Ingest: device messages from the broker to the live picture, the database and the live feed.

Owns the MQTT session (:mod:`~hub.ingest.bridge`), the staged pipeline that checks every message
(:mod:`~hub.ingest.pipeline`), the batched database writer (:mod:`~hub.ingest.writer`), the live picture of every
device and unit (:mod:`~hub.ingest.live`) and the one-map's live feed (:mod:`~hub.ingest.feed`). May import
hub.domain, hub.storage, hub.signals and the hub's base modules; never incidents, drones, video, api or server.
"""
