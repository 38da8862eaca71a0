"""The hub's live video: publish tokens, the relay's streams as rows, log entries and feed messages, backhaul
and recordings. Imports the `video` library and the hub's shared parts (ingest, access, storage, domain);
never hub.incidents or hub.drones: what it needs of them is a Protocol in `hub.video.ports`."""
