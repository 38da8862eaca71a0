// A "live video" badge next to each unit (or drone) whose camera streams, at its latest fix (else where the
// stream says it is). Few streams run at once, so one Leaflet marker each is cheap; a click opens the tile.

import { escapeHtml } from "./dom.js";
import { t } from "./i18n.js";
import * as store from "./store.js";

const PANE = "videoBadges";

export class VideoBadges {
  constructor(map, { onOpen }) {
    this.map = map;
    this.onOpen = onOpen;
    this.marks = new Map();  // stream_id -> {marker, at: "lat,lon"}
    if (!map.getPane(PANE)) map.createPane(PANE).style.zIndex = 630;  // over units, drones and alert marks
  }

  /** Drop every badge (the language changed: their label with it); the next sync draws them again. */
  reset() {
    for (const mark of this.marks.values()) mark.marker.remove();
    this.marks.clear();
  }

  sync() {
    for (const [id, mark] of this.marks) {
      if (!store.streams.has(id)) { mark.marker.remove(); this.marks.delete(id); }
    }
    for (const s of store.streams.values()) {
      const at = where(s);
      if (!at) continue;
      const key = `${at[0]},${at[1]}`;
      const mark = this.marks.get(s.stream_id);
      if (mark) {
        if (mark.at !== key) { mark.marker.setLatLng(at); mark.at = key; }
        continue;
      }
      const marker = L.marker(at, {
        pane: PANE, keyboard: false, title: t("video.badge"),
        icon: L.divIcon({ className: "video-badge-icon", iconSize: [40, 16], iconAnchor: [20, 30],  // centred above the unit, clear of its label
          html: `<span class="video-badge" data-testid="video-badge" data-stream-id="${escapeHtml(s.stream_id)}"`
            + ` data-unit-id="${escapeHtml(s.unit_id || "")}"><i></i>${escapeHtml(t("video.live"))}</span>` }),
      }).addTo(this.map);
      marker.on("click", () => this.onOpen(s.stream_id));
      this.marks.set(s.stream_id, { marker, at: key });
    }
  }
}

/** The unit's (or drone's) latest position, else the stream's own. */
function where(s) {
  const drone = s.unit_id ? store.drones.get(s.unit_id) : null;
  const unit = s.unit_id ? store.units.get(s.unit_id) : null;
  const p = (drone && drone.position) || (unit && unit.position) || s.position;
  return p && Number.isFinite(p.lat) && Number.isFinite(p.lon) ? [p.lat, p.lon] : null;
}
