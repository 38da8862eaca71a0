"""Neutral geography shared by the hub, the simulator and the device contract.

Owns the geodesy of WGS-84 coordinates (:mod:`geo.geodesy`) and the road network data model
(:mod:`geo.roads`: :class:`~geo.roads.RoadGraph`, its nodes, edges, routing and GeoJSON export), and the
conversion between WGS-84 and China's GCJ-02 (:mod:`geo.gcj02`) that gateways apply at the edge.
It imports nothing of this project: every other package may import it, it imports none of them.
"""
