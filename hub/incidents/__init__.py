"""Incidents: the incident log and state (`service`), assignments, acks, alerts, detectors, the 12345 hand-over.

May import hub.domain, hub.ingest (the live picture, the feed), hub.storage, hub.signals and hub.errors; never
hub.server, hub.api, hub.video or hub.drones (they see the incidents through protocols, wired in hub.server).
"""
