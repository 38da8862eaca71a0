"""Simulators: a synthetic city, patrol units driving it, and their devices reporting to a hub.

The pure parts (:mod:`sim.city`, :mod:`sim.traffic`; geodesy is :mod:`geo.geodesy`) import no I/O
libraries, so the hub can serve the city map without loading MQTT or HTTP clients; nor do
:mod:`sim.scenarios` (how a unit carries out a dispatch, the hard cases' geometry),
:mod:`sim.response` (one dispatch carried out on a clock) and :mod:`sim.truth` (ground truth).
The fleet itself is :class:`sim.runner.CitySim` (and :func:`sim.runner.run_sim`; units and
devices in :mod:`sim.fleet`); :class:`sim.incidents.IncidentGenerator` plays callers and dispatcher.
"""

from __future__ import annotations

from sim.city import City, build_city
from sim.traffic import GpsModel, SimVehicle

__all__ = ["City", "GpsModel", "SimVehicle", "build_city"]
