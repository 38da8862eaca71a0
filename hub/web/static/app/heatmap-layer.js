// The incident heatmap (热力图): counts per grid cell over a time window, from the reports API, drawn as
// semi-transparent squares on one canvas renderer. Refreshed while shown, so new incidents warm it up.

import { api, query } from "./api.js";
import { t } from "./i18n.js";
import { toast } from "./toast.js";

export const WINDOWS = { "24h": 86400000, "7d": 7 * 86400000, "30d": 30 * 86400000 };
const CELL_M = 250;
const REFRESH_MS = 60000;
// Cool to hot; a cell's colour is its count relative to the hottest cell.
const RAMP = ["#2c7bb6", "#00a6ca", "#00ccbc", "#90eb9d", "#ffff8c", "#f9d057", "#f29e2e", "#e76818", "#d7191c"];

export class HeatmapLayer {
  constructor(map) {
    this.map = map;
    this.group = L.layerGroup();
    this.renderer = L.canvas({ pane: "heat", padding: 0.3 });
    this.window = "24h";
    this.timer = null;
    this.on = false;
    this.told = false;
  }

  setWindow(name) {
    if (!WINDOWS[name]) return;
    this.window = name;
    if (this.on) this.load();
  }

  setVisible(on) {
    this.on = on;
    clearInterval(this.timer);
    if (!on) { this.group.remove(); return; }
    this.group.addTo(this.map);
    this.load();
    this.timer = setInterval(() => this.load(), REFRESH_MS);
  }

  async load() {
    const to = Date.now();
    const data = await api(`/api/v1/reports/heatmap${query({ from: to - WINDOWS[this.window], to, cell_m: CELL_M })}`,
      { optional: true }).catch(() => undefined);
    if (data === undefined) return;  // the error is on screen already
    if (data === null) {  // a hub without the report: say so once, keep the switch as the user set it
      if (!this.told) toast(t("error.heatmapMissing"), "info");
      this.told = true;
      return;
    }
    this.draw(data);
  }

  draw(data) {
    this.group.clearLayers();
    const cells = data.cells || [];
    const max = data.max || Math.max(1, ...cells.map((c) => c.count));
    const cell = data.cell_m || CELL_M;
    for (const c of cells) {
      if (!c.count) continue;
      // (lat, lon) is the cell's centre; half a cell each way, in degrees at that latitude.
      const dLat = cell / 2 / 111320;
      const dLon = cell / 2 / (111320 * Math.cos(c.lat * Math.PI / 180));
      const share = Math.min(1, c.count / max);
      const colour = RAMP[Math.min(RAMP.length - 1, Math.floor(share * RAMP.length))];
      L.rectangle([[c.lat - dLat, c.lon - dLon], [c.lat + dLat, c.lon + dLon]], {
        renderer: this.renderer, interactive: false, stroke: false,
        fillColor: colour, fillOpacity: 0.25 + 0.45 * share,
      }).addTo(this.group);
    }
  }
}
