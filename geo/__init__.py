"""Neutral geography shared by the hub, the simulator and the device contract.

Owns the geodesy of WGS-84 coordinates (:mod:`geo.geodesy`) and the road network data model
(:mod:`geo.roads`: :class:`~geo.roads.RoadGraph`, its nodes, edges, routing and GeoJSON export).
It imports nothing of this project: every other package may import it, it imports none of them.
"""
