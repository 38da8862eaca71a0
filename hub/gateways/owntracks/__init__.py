"""OwnTracks: phones reporting over MQTT (``owntracks/{user}/{device}``) or HTTP with the app's JSON.

This round holds the pure codec (:mod:`hub.gateways.owntracks.codec`); the gateway that subscribes and submits
to the pipeline comes later.
"""
