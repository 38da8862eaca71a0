"""Simulators: a synthetic city, patrol units driving it, and their devices reporting to a hub.

The pure parts (:mod:`sim.city`, :mod:`sim.traffic`; geodesy is :mod:`devices.geo`) import no I/O
libraries, so the hub can serve the city map without loading MQTT or HTTP clients;
the fleet itself is :class:`sim.runner.CitySim` (and :func:`sim.runner.run_sim`).
"""

from __future__ import annotations

from sim.city import City, build_city
from sim.traffic import GpsModel, SimVehicle

__all__ = ["City", "GpsModel", "SimVehicle", "build_city"]
