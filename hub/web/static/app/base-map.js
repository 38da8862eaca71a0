// The Leaflet map and what lies under everything: the base (the simulator's road network as vector,
// or a configured tile server in a real deployment) and the configured duty posts and patrol lines
// (值守点, 必巡线). No internet at run time: nothing here loads from outside the hub.

import { api } from "./api.js";
import { escapeHtml } from "./dom.js";
import { gcj02ToWgs84, wgs84ToGcj02 } from "./gcj02.js";
import { t } from "./i18n.js";

const ROAD_STYLE = {
  arterial: { color: "#3f5268", weight: 3.2 },
  ring: { color: "#4a5f78", weight: 4 },
  street: { color: "#273342", weight: 1.4 },
};
const FALLBACK_VIEW = { center: [34.261, 117.186], zoom: 13 };

export function createMap(container) {
  const map = L.map(container, {
    zoomControl: false, attributionControl: false, preferCanvas: true, minZoom: 3, maxZoom: 19,
    worldCopyJump: false, zoomSnap: 0.5,
  });
  L.control.zoom({ position: "bottomright" }).addTo(map);
  L.control.scale({ position: "bottomleft", imperial: false }).addTo(map);
  // Above the roads (overlayPane, 400): zones, posts and patrol lines, then units; pins (600) and alerts on top.
  map.createPane("heat").style.zIndex = 350;
  map.createPane("zones").style.zIndex = 410;
  map.createPane("overlays").style.zIndex = 420;
  map.createPane("units").style.zIndex = 450;
  map.createPane("alerts").style.zIndex = 620;
  return map;
}

/**
 * Leaflet's Web Mercator for tiles drawn in `datum` ("wgs84" | "gcj02", the hub's map_tile_datum). LatLngs stay
 * WGS-84 all through the page (units, trails, incidents, heatmap, drones, alerts, pins, clicks, views): only
 * this projection, which every layer and event goes through between a LatLng and a pixel, converts. WGS-84 ->
 * GCJ-02 on the way to the screen, GCJ-02 -> WGS-84 (the iterative inverse) on the way back, so a click's
 * `e.latlng` is already the WGS-84 point the hub takes. The canvas of units projects on its own and reads
 * `crs.datum` (unit-layer.js).
 */
export function datumCrs(datum) {
  if (datum !== "gcj02") return L.extend({}, L.CRS.EPSG3857, { datum: "wgs84" });
  const mercator = L.Projection.SphericalMercator;
  return L.extend({}, L.CRS.EPSG3857, {
    datum: "gcj02",
    projection: {
      bounds: mercator.bounds,
      project(latlng) {
        const [lat, lon] = wgs84ToGcj02(latlng.lat, latlng.lng);
        return mercator.project(L.latLng(lat, lon));
      },
      unproject(point) {
        const shown = mercator.unproject(point);
        const [lat, lon] = gcj02ToWgs84(shown.lat, shown.lng);
        return L.latLng(lat, lon);
      },
    },
  });
}

/**
 * Lay the base under `map` and set the first view: the configured centre and zoom, else the extent of
 * the roads. Resolves once the map has a view (the unit layer needs one to draw), even if the roads fail.
 */
export async function loadBase(map) {
  const [config, roads] = await Promise.all([
    (window.fieldhubEarly && window.fieldhubEarly.mapConfig) || api("/api/v1/map/config", { optional: true }).catch(() => null),
    (window.fieldhubEarly && window.fieldhubEarly.map) || api("/api/v1/map").catch(() => null),
  ]);
  // The datum of the tiles is known only now: the projection is chosen before the first view is set, so nothing
  // has been projected with another (`reset`: a view someone set meanwhile is projected again from scratch).
  map.options.crs = datumCrs(config && config.tile_datum);
  const fresh = { reset: true };
  if (config && config.tile_url) {
    L.tileLayer(config.tile_url, { maxZoom: 19, attribution: config.tile_attribution || "" }).addTo(map);
  } else if (roads && roads.features) {
    const renderer = L.canvas({ padding: 0.25 });
    L.geoJSON(roads, {
      renderer, interactive: false,
      style: (f) => ({ ...(ROAD_STYLE[f.properties && f.properties.kind] || ROAD_STYLE.street), opacity: 1 }),
    }).addTo(map);
  }
  if (config && Array.isArray(config.center)) {
    map.setView(config.center, config.zoom || FALLBACK_VIEW.zoom, fresh);
  } else if (roads && Array.isArray(roads.bbox)) {
    const [w, s, e, n] = roads.bbox;
    map.fitBounds([[s, w], [n, e]], { padding: [10, 10], ...fresh });
  } else {
    map.setView(FALLBACK_VIEW.center, FALLBACK_VIEW.zoom, fresh);
  }
  return { config, roads };
}

/** Duty posts and patrol lines from the configuration; an empty layer on a hub without them. */
export async function loadOverlays() {
  const group = L.layerGroup();
  const data = await api("/api/v1/map/overlays", { optional: true }).catch(() => null);
  if (!data || !Array.isArray(data.features)) return group;
  const renderer = L.svg({ pane: "overlays" });
  L.geoJSON(data, {
    pane: "overlays", renderer,
    style: () => ({ color: "#36c5d6", weight: 4, dashArray: "10 8", opacity: 0.75 }),
    pointToLayer: (feature, latlng) => L.marker(latlng, {
      pane: "overlays",
      icon: L.divIcon({ className: "duty-post", html: "<span></span>", iconSize: [18, 18] }),
      keyboard: false,
    }),
    onEachFeature: (feature, layer) => {
      const p = feature.properties || {};
      const kind = p.kind === "patrol_line" ? "overlay.patrolLine" : "overlay.dutyPost";
      layer.bindTooltip(() => `${t(kind)}: ${escapeHtml(p.name || "")}`, { sticky: true });
    },
  }).addTo(group);
  return group;
}
