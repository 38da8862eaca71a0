// Incidents on the map: a priority-coloured pin and the arrival zone (the circle a unit must stop in to
// count as arrived). Few incidents are open at once, so plain Leaflet markers are fine here.
// Alarm looks (a missed target, a dispatch nobody signed for) ride on the pin.

import { escapeHtml } from "./dom.js";
import { categoryName } from "./i18n.js";
import { missedTargets, unackedAssignments } from "./sla.js";
import * as store from "./store.js";

export const PRIORITY_COLOURS = { 1: "#ff4d4f", 2: "#ff8c3a", 3: "#f5c242", 4: "#6aa0d8" };

export class IncidentLayer {
  constructor(map, { onSelect }) {
    this.map = map;
    this.onSelect = onSelect;
    this.group = L.layerGroup().addTo(map);
    this.items = new Map();  // id -> {marker, zone, sig}
    this.renderer = L.svg({ pane: "zones" });
  }

  setVisible(on) {
    if (on) this.group.addTo(this.map); else this.group.remove();
  }

  /** Bring the map in line with the store: add, move, restyle, remove. */
  sync() {
    const wanted = new Map(store.openIncidents().map((inc) => [inc.id, inc]));
    for (const [id, item] of this.items) {
      if (!wanted.has(id)) { item.marker.remove(); item.zone.remove(); this.items.delete(id); }
    }
    for (const inc of wanted.values()) {
      const sig = `${inc.lat},${inc.lon},${inc.priority},${inc.arrival_radius_m},${inc.category}`;
      let item = this.items.get(inc.id);
      if (item && item.sig !== sig) { item.marker.remove(); item.zone.remove(); item = null; }
      if (!item) item = this.add(inc, sig);
      this.restyle(inc, item);
    }
  }

  add(inc, sig) {
    const colour = PRIORITY_COLOURS[inc.priority] || PRIORITY_COLOURS[4];
    const zone = L.circle([inc.lat, inc.lon], {
      radius: inc.arrival_radius_m || 100, renderer: this.renderer, interactive: false,
      color: colour, weight: 1.5, opacity: 0.9, fillColor: colour, fillOpacity: 0.08, dashArray: "4 4",
    }).addTo(this.group);
    const marker = L.marker([inc.lat, inc.lon], {
      icon: L.divIcon({
        className: "inc-pin-wrap", iconSize: [28, 36], iconAnchor: [14, 34],
        html: `<div class="inc-pin p${Number(inc.priority) || 4}"><b>${Number(inc.priority) || "?"}</b></div>`
          + "<i class=\"alarm-ring\"></i>",
      }),
      riseOnHover: true, zIndexOffset: (5 - (Number(inc.priority) || 4)) * 100,
    }).addTo(this.group);
    marker.on("click", () => this.onSelect(inc.id));
    marker.bindTooltip(() => {
      const now = store.incidents.get(inc.id) || inc;
      return `${escapeHtml(categoryName(now.category))} · ${escapeHtml(now.id)}`;
    }, { direction: "top", offset: [0, -30] });
    const item = { marker, zone, sig };
    this.items.set(inc.id, item);
    return item;
  }

  restyle(inc, item) {
    const node = item.marker.getElement();
    if (!node) return;
    node.classList.toggle("selected", store.selection.incident === inc.id);
    node.classList.toggle("breach", missedTargets(inc).length > 0);
    node.classList.toggle("unacked", unackedAssignments(inc).length > 0);
    node.dataset.incidentId = inc.id;
  }

  /** Once a second: alarms can start by the clock alone. */
  tick() {
    for (const [id, item] of this.items) {
      const inc = store.incidents.get(id);
      if (inc) this.restyle(inc, item);
    }
  }
}
