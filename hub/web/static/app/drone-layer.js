// Drones on the map, from their drone views (store.drones): a quadcopter mark turned to its heading and
// coloured by state, labelled "UAV-01 · 60 m" with its battery; grey, dashed and badged "link lost"
// when the hub has not heard it for 3 s. A drone that is not fit to be sent (no telemetry, pre-arm checks
// failing, landed away from its dock, no link failsafe, signing trouble) is drawn in a grey-orange
// "attention" colour, with the hub's reason as its tooltip; a position the hub calls stale is faded.
// Under it a short trail and, on a mission, the planned route (dashed) from where the drone is to its
// target; on the way home a dotted line to its dock. Docks are small pads. A city has a handful of
// drones, so plain Leaflet markers (DOM) are fine here; the unit canvas leaves out the drones drawn here
// (store.drawnAsUnit), so a drone is drawn once.

import { el, escapeHtml } from "./dom.js";
import { t, term } from "./i18n.js";
import * as store from "./store.js";

// States in which the drone stands but may not be sent: the hub says why in `reason`.
export const ATTENTION_STATES = new Set(["refused_unsigned", "signed_no_key", "no_telemetry", "not_ready",
  "landed_away", "no_failsafe"]);
export const ATTENTION_COLOUR = "#c8936a";  // grey-orange: not an alarm, not ready either
export const DRONE_STATE_COLOURS = {
  ready: "#2fbf71", launching: "#6fb0ff", flying: "#3d8bfd", on_scene: "#a970ff", returning: "#f2b233",
  offline: "#7d8896", unavailable: "#5b6470",
  ...Object.fromEntries([...ATTENTION_STATES].map((s) => [s, ATTENTION_COLOUR])),
};
const LOST_COLOUR = "#8f9294";
const TRAIL_POINTS = 40;
const TRAIL_STEP_M = 4;       // a hovering drone does not grow its trail
const LOW_BATTERY_PCT = 25;
// No route for a drone back on its dock or never heard of, nor for one standing not ready; a lost one
// ("unavailable") keeps its plan on show.
const ROUTELESS_STATES = new Set(["ready", "offline", ...ATTENTION_STATES]);

/** Whether the drone stands not fit to be sent (the hub's `reason` says why). */
export function needsAttention(view) { return ATTENTION_STATES.has(view.state); }

export function droneColour(view) {
  return view.link === "lost" ? LOST_COLOUR : DRONE_STATE_COLOURS[view.state] || "#c9d1d9";
}

/** Metres between two [lat, lon] points (equirectangular: plenty for a city). */
export function metres(a, b) {
  const k = Math.cos(((a[0] + b[0]) / 2) * Math.PI / 180);
  return Math.hypot((b[0] - a[0]) * 111320, (b[1] - a[1]) * 111320 * k);
}

/** Where the drone is, as [lat, lon]: its fix, else its dock (a drone without a fix sits there); or null. */
export function dronePoint(view) {
  const p = view.position;
  if (p && p.lat != null && p.lon != null) return [p.lat, p.lon];
  return view.dock && view.dock.lat != null ? [view.dock.lat, view.dock.lon] : null;
}

/** The part of the planned route still ahead: from `at` over the rest of `route` to `target`. */
export function routeAhead(at, mission) {
  const pts = (mission.route || []).filter((p) => Array.isArray(p) && p.length >= 2).map((p) => [p[0], p[1]]);
  const target = mission.target && mission.target.lat != null ? [mission.target.lat, mission.target.lon] : null;
  if (target && (!pts.length || metres(pts[pts.length - 1], target) > 1)) pts.push(target);
  if (!at || !pts.length) return pts;
  let best = 0, bestD = Infinity;  // the leg the drone is on: the one nearest to it
  for (let i = 0; i + 1 < pts.length; i++) {
    const d = toSegment(at, pts[i], pts[i + 1]);
    if (d < bestD) { bestD = d; best = i; }
  }
  return [at, ...pts.slice(pts.length > 1 ? best + 1 : 0)];
}

function toSegment(p, a, b) {
  const k = Math.cos(p[0] * Math.PI / 180);
  const [px, py, ax, ay, bx, by] = [p[1] * k, p[0], a[1] * k, a[0], b[1] * k, b[0]];
  const len2 = (bx - ax) ** 2 + (by - ay) ** 2;
  const s = len2 ? Math.max(0, Math.min(1, ((px - ax) * (bx - ax) + (py - ay) * (by - ay)) / len2)) : 0;
  return Math.hypot(px - ax - s * (bx - ax), py - ay - s * (by - ay));
}

// A quadcopter seen from above, nose up (north): turned by the heading. Static markup, no hub data in it.
const QUAD_SVG = `<svg viewBox="-16 -16 32 32" width="30" height="30" aria-hidden="true">
  <g class="arms"><line x1="-9" y1="-9" x2="9" y2="9"/><line x1="9" y1="-9" x2="-9" y2="9"/></g>
  <g class="rotors"><circle cx="-9" cy="-9" r="5"/><circle cx="9" cy="-9" r="5"/><circle cx="-9" cy="9" r="5"/><circle cx="9" cy="9" r="5"/></g>
  <rect class="body" x="-4.5" y="-4.5" width="9" height="9" rx="2"/><path class="nose" d="M0 -15 L4 -8 L-4 -8 Z"/></svg>`;

function droneIcon(id) {
  const rot = el("span", { class: "drone-rot" });
  rot.innerHTML = QUAD_SVG;
  const parts = {
    root: el("div", { class: "drone-mark", dataset: { testid: "drone-marker", droneId: id } }),
    rot, label: el("span", { class: "drone-name" }), alt: el("span", { class: "drone-alt" }),
    fill: el("i"), pct: el("span"),
    badge: el("span", { class: "drone-lost", dataset: { testid: "drone-link-lost" }, hidden: true }),
    unsigned: el("span", { class: "warn", dataset: { testid: "drone-unsigned-mark" }, hidden: true }),
  };
  parts.root.append(rot, parts.badge,
    el("span", { class: "drone-label" }, parts.label, parts.unsigned, parts.alt,
      el("span", { class: "battery drone-battery" }, el("span", { class: "bar" }, parts.fill), parts.pct)));
  return parts;
}

export class DroneLayer {
  /** `onSelect(droneId)`: a drone's mark was clicked. */
  constructor(map, { onSelect }) {
    this.map = map;
    this.onSelect = onSelect;
    if (!map.getPane("droneLines")) map.createPane("droneLines").style.zIndex = 455;  // over the unit canvas
    if (!map.getPane("drones")) map.createPane("drones").style.zIndex = 610;          // over incident pins
    this.renderer = L.svg({ pane: "droneLines" });
    this.group = L.layerGroup().addTo(map);
    this.items = new Map();   // drone_id -> {marker, parts, trail, trailLine, routeLine, target, shown}
    this.docks = new Map();   // "lat,lon" -> {marker, node}
    this.visible = true;
  }

  setVisible(on) {
    this.visible = on;
    if (on) { this.group.addTo(this.map); this.sync(); } else this.group.remove();
  }

  /** Bring the map in line with store.drones: add, move, restyle, remove. */
  sync() {
    for (const [id, item] of this.items) {
      if (!store.drones.has(id)) { this.drop(item); this.items.delete(id); }
    }
    for (const view of store.drones.values()) {
      const item = this.items.get(view.drone_id) || this.add(view.drone_id);
      this.update(item, view);
    }
    this.syncDocks();
  }

  add(id) {
    const parts = droneIcon(id);
    const marker = L.marker([0, 0], {
      pane: "drones", keyboard: false, riseOnHover: true,
      icon: L.divIcon({ className: "drone-icon", html: parts.root, iconSize: [30, 30], iconAnchor: [15, 15] }),
    });
    marker.on("click", () => this.onSelect(id));
    const line = (className, style) => L.polyline([], { renderer: this.renderer, interactive: false, className, ...style });
    const item = {
      id, marker, parts, trail: [], shown: false,
      trailLine: line("drone-trail", { weight: 2, opacity: 0.55 }),
      routeLine: line("drone-route", { weight: 2.5, opacity: 0.95, dashArray: "8 6" }),
      target: L.marker([0, 0], { pane: "drones", interactive: false, keyboard: false,
        icon: L.divIcon({ className: "drone-target", html: "<span></span>", iconSize: [18, 18] }) }),
    };
    this.items.set(id, item);
    return item;
  }

  drop(item) {
    for (const layer of [item.marker, item.trailLine, item.routeLine, item.target]) this.group.removeLayer(layer);
  }

  /** Shown unless the unit filters leave its unit out (kind "patrol", a status it is not in). */
  passes(view) {
    const unit = store.units.get(view.unit_id || view.drone_id);
    if (unit) return store.unitPassesFilters(unit);
    return !store.filters.kind || store.filters.kind === "drone";
  }

  update(item, view) {
    const at = dronePoint(view);
    const show = !!at && this.passes(view);
    if (!show) { if (item.shown) this.drop(item); item.shown = false; return; }
    if (!item.shown) this.group.addLayer(item.marker);
    item.shown = true;
    const ll = item.marker.getLatLng();
    if (ll.lat !== at[0] || ll.lng !== at[1]) item.marker.setLatLng(at);
    const colour = droneColour(view);
    this.paint(item.parts, view, colour);
    item.marker.setZIndexOffset(store.selection.drone === item.id ? 1000 : 0);
    this.trail(item, view, at, colour);
    this.route(item, view, at, colour);
  }

  paint(p, view, colour) {
    const lost = view.link === "lost";
    const pos = view.position;
    const attention = needsAttention(view);
    p.root.className = `drone-mark state-${view.state || "unknown"} link-${view.link || "unknown"}`
      + `${store.selection.drone === view.drone_id ? " selected" : ""}${pos ? "" : " no-fix"}`
      + `${pos && pos.stale ? " stale" : ""}${attention ? " attention" : ""}`;
    Object.assign(p.root.dataset, { state: view.state || "", link: view.link || "unknown", mode: view.mode || "",
      signing: view.signing || "", reason: view.reason || "", stale: pos && pos.stale ? "true" : "false" });
    p.root.style.color = colour;
    p.rot.style.transform = pos && pos.heading != null ? `rotate(${Math.round(pos.heading)}deg)` : "";
    p.label.textContent = view.drone_id;
    p.alt.textContent = pos && pos.alt_m != null ? ` · ${Math.round(pos.alt_m)} m` : "";
    const pct = view.battery_pct;
    p.fill.style.width = pct != null ? `${Math.max(0, Math.min(100, pct))}%` : "0";
    p.pct.textContent = pct != null ? `${Math.round(pct)}%` : "—";
    p.fill.parentNode.parentNode.classList.toggle("warn", pct != null && pct < LOW_BATTERY_PCT);
    p.badge.hidden = !lost;
    p.badge.textContent = t("drone.linkLost");
    const unsigned = view.signing === "unsigned";  // let in without MAVLink 2 signing: said on the map too
    p.unsigned.hidden = !unsigned;
    p.unsigned.textContent = ` · ${t("drone.unsigned")}`;
    // The tooltip: name, state, and the hub's reason in its own words (not translated: it is the hub's).
    p.root.title = [`${view.name || view.drone_id} · ${term("droneState", view.state)}`, view.reason,
      lost && t("drone.linkLost"), pos && pos.stale && t("drone.staleFix"), unsigned && t("drone.unsignedHint")]
      .filter(Boolean).join(" · ");
  }

  trail(item, view, at, colour) {
    const tr = item.trail;
    if (!view.position || (view.landed === "on_ground" && ROUTELESS_STATES.has(view.state))) tr.length = 0;
    else if (!tr.length || metres(tr[tr.length - 1], at) >= TRAIL_STEP_M) tr.push(at);
    if (tr.length > TRAIL_POINTS) tr.splice(0, tr.length - TRAIL_POINTS);
    this.showLine(item.trailLine, tr.length >= 2 ? tr : null, { color: colour }, "drone-trail", item.id);
  }

  route(item, view, at, colour) {
    const m = view.mission;
    let points = null, kind = "";
    if (view.state === "returning" && view.dock && view.dock.lat != null) {
      points = [at, [view.dock.lat, view.dock.lon]]; kind = "return";
    } else if (m && (m.target || (m.route && m.route.length)) && !ROUTELESS_STATES.has(view.state)) {
      points = routeAhead(at, m); kind = "mission";
    }
    if (points && points.length < 2) points = null;
    this.showLine(item.routeLine, points, { color: colour, dashArray: kind === "return" ? "3 6" : "8 6" },
      "drone-route", item.id, kind);
    const target = kind === "mission" && m.target && m.target.lat != null ? [m.target.lat, m.target.lon] : null;
    if (!target) { this.group.removeLayer(item.target); return; }
    item.target.setLatLng(target);
    this.group.addLayer(item.target);
  }

  /** Put `line` on the map through `points` (or take it off), tagged for the tests (paths are re-made on re-adding). */
  showLine(line, points, style, testid, id, kind = "") {
    if (!points) { this.group.removeLayer(line); return; }
    line.setLatLngs(points);
    line.setStyle(style);
    this.group.addLayer(line);
    const path = line.getElement();
    if (path) {
      path.setAttribute("data-testid", testid);
      path.setAttribute("data-drone-id", id);
      if (kind) path.setAttribute("data-kind", kind);
    }
  }

  /** One small pad per dock place (drones sharing a dock share the pad). */
  syncDocks() {
    const wanted = new Map();
    for (const view of store.drones.values()) {
      const d = view.dock;
      if (!d || d.lat == null || d.lon == null || !this.passes(view)) continue;
      const key = `${d.lat.toFixed(6)},${d.lon.toFixed(6)}`;
      if (!wanted.has(key)) wanted.set(key, { dock: d, ids: [] });
      wanted.get(key).ids.push(view.drone_id);
    }
    for (const [key, item] of this.docks) {
      if (!wanted.has(key)) { this.group.removeLayer(item.marker); this.docks.delete(key); }
    }
    for (const [key, { dock, ids }] of wanted) {
      let item = this.docks.get(key);
      if (!item) {
        const node = el("div", { class: "dock-mark", dataset: { testid: "drone-dock" } }, el("span", null, "H"));
        const marker = L.marker([dock.lat, dock.lon], { pane: "drones", keyboard: false, zIndexOffset: -500,
          icon: L.divIcon({ className: "dock-icon", html: node, iconSize: [16, 16] }) });
        marker.bindTooltip(() => `${escapeHtml(t("drone.dock"))}: ${escapeHtml(item.dock.name || "")}`
          + ` · ${escapeHtml(item.ids.join(", "))}`, { direction: "top", offset: [0, -8] });
        item = { marker, node };
        this.docks.set(key, item);
      }
      Object.assign(item, { dock, ids });
      Object.assign(item.node.dataset, { name: dock.name || "", drones: ids.join(" ") });
      this.group.addLayer(item.marker);
    }
  }
}
