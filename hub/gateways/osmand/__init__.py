"""OsmAnd / Traccar Client over HTTP, and positions forwarded by a Traccar server.

This round holds the pure codec (:mod:`hub.gateways.osmand.codec`); the HTTP receiver comes later.
"""
