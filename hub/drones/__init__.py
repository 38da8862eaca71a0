"""The hub's drones: the fleet and each drone's flight (fleet), the MAVLink link and drone dispatch (service),
the operator's orders (ops) and the one-map view (view). Imports the `drone` library and the hub's shared
parts (domain, ingest, storage, config, errors); never hub.incidents: what it needs of it is a Protocol in
`hub.drones.ports`, and the composition root (hub.server) wires the service's handlers."""
