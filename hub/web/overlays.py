"""Map overlays for the one-map: duty posts (值守点) and mandatory patrol lines (必巡线).

A deployment names them in a GeoJSON file (`FIELDHUB_MAP_OVERLAYS`): Point features with
`properties.kind = "duty_post"` and LineString features with `kind = "patrol_line"`, each with a
`name`. Without a file, a few are laid out on the hub's road graph (its arterial crossings as duty posts,
its arterials as patrol lines), so the demo shows the layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geo.roads import RoadGraph
from hub.config import read_json_file
from hub.errors import HubError

__all__ = ["OverlayError", "city_overlays", "load_overlays"]

KINDS = {"duty_post": "Point", "patrol_line": "LineString"}
MAX_FEATURES = 10_000


class OverlayError(HubError):
    pass


def _valid_position(pos: object) -> bool:
    return (isinstance(pos, list) and len(pos) >= 2 and all(isinstance(v, int | float) for v in pos[:2])
            and -180 <= pos[0] <= 180 and -90 <= pos[1] <= 90)


def load_overlays(path: Path) -> dict[str, Any]:
    """Read and check the overlays file; a bad file is refused with the reason (at start-up)."""
    data = read_json_file(path, "map overlays", OverlayError)
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection" or not isinstance(
            data.get("features"), list):
        raise OverlayError(f"map overlays {path}: must be a GeoJSON FeatureCollection")
    if len(data["features"]) > MAX_FEATURES:
        raise OverlayError(f"map overlays {path}: more than {MAX_FEATURES} features")
    for i, f in enumerate(data["features"]):
        props = f.get("properties") if isinstance(f, dict) else None
        geom = f.get("geometry") if isinstance(f, dict) else None
        kind = props.get("kind") if isinstance(props, dict) else None
        if kind not in KINDS or not isinstance(geom, dict) or geom.get("type") != KINDS[kind]:
            raise OverlayError(f"map overlays {path}: feature {i} must be a duty_post Point or a patrol_line "
                               "LineString (properties.kind)")
        coords = geom.get("coordinates")
        points = [coords] if kind == "duty_post" else coords
        if not isinstance(points, list) or not points or not all(_valid_position(p) for p in points):
            raise OverlayError(f"map overlays {path}: feature {i} has bad coordinates")
    return data


def city_overlays(city: RoadGraph, posts: int = 6) -> dict[str, Any]:
    """Duty posts at arterial crossings and patrol lines along the arterials of the road graph."""
    arterial = [e for e in city.edges if e.kind == "arterial"]
    degree: dict[int, int] = {}
    for e in arterial:
        degree[e.a] = degree.get(e.a, 0) + 1
        degree[e.b] = degree.get(e.b, 0) + 1
    crossings = sorted((n for n, d in degree.items() if d >= 3), key=lambda n: city.nodes[n])
    step = max(1, len(crossings) // posts)
    features: list[dict[str, Any]] = []
    for k, node in enumerate(crossings[::step][:posts], start=1):
        lat, lon = city.nodes[node]
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(lon, 6),
                                                                                          round(lat, 6)]},
                         "properties": {"kind": "duty_post", "name": f"Duty post {k}"}})
    # Patrol lines: the fastest routes between pairs of duty posts (they follow the arterials).
    chosen = crossings[::step][:posts]
    for k, (a, b) in enumerate(zip(chosen, chosen[1:] + chosen[:1], strict=True), start=1):
        if a == b:
            continue
        line = [[round(city.nodes[n][1], 6), round(city.nodes[n][0], 6)] for n in city.shortest_path(a, b)]
        if len(line) >= 2:
            features.append({"type": "Feature", "geometry": {"type": "LineString", "coordinates": line},
                             "properties": {"kind": "patrol_line", "name": f"Patrol line {k}"}})
    return {"type": "FeatureCollection", "features": features}
