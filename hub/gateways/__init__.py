"""Gateways: device protocols other than the native MQTT topics, each turned into the same fixes, status and
events and handed to the ingest pipeline (``Pipeline.submit``), under the same device identities. One subpackage
per protocol; each may import its protocol library (e.g. gb28181), hub.ingest, hub.domain and the base modules,
never incidents, drones or video.
"""
