// One unit: status, how fresh its position is, its devices (battery, last fix), what it is assigned to,
// today's track on demand (drawn on the map from the stored fixes), and a "Live" button for each camera the
// hub opens on demand (a GB/T 28181 camera: the hub INVITEs it, and the stream opens in a floating tile).

import { api, query } from "./api.js";
import { formatDuration, serverNow, startOfToday } from "./clock.js";
import { el, fill } from "./dom.js";
import { categoryName, t, term } from "./i18n.js";
import * as store from "./store.js";
import { toast } from "./toast.js";
import { isStale, statusColour, swatch } from "./unit-style.js";
import { openWhenListed, videoSlot } from "./video-wall.js";

const DEVICE_REFRESH_MS = 5000;
const TRACK_PAGE = 100000;     // the API's largest page
const TRACK_PAGES = 4;
const TRACK_STEP_MS = 5000;    // one point per 5 s is plenty for a day's line

export class UnitPanel {
  constructor(host, map) {
    this.host = host;
    this.map = map;
    this.unitId = null;
    this.full = null;          // GET /units/{id}: devices
    this.timer = null;
    this.track = null;         // {unitId, layer, count}
    this.parts = null;         // the panel's nodes, built once per unit
    this.renderer = L.canvas({ padding: 0.3 });
  }

  update() {
    const id = store.selection.unit;
    if (id !== this.unitId) {
      this.unitId = id;
      this.full = null;
      clearInterval(this.timer);
      if (id) {
        this.loadDevices();
        this.timer = setInterval(() => this.loadDevices(), DEVICE_REFRESH_MS);
      }
    }
    this.render();
  }

  async loadDevices() {
    const id = this.unitId;
    try {
      const full = await api(`/api/v1/units/${encodeURIComponent(id)}`);
      if (id === this.unitId) { this.full = full; this.render(); }
    } catch { /* shown by api() */ }
  }

  /** Build the panel once per unit; later calls only refresh its parts (buttons stay put under the pointer). */
  render() {
    const id = this.unitId;
    const view = id && (store.units.get(id) || this.full);
    if (!view) { fill(this.host); this.host.hidden = true; this.parts = null; return; }
    this.host.hidden = false;
    if (!this.parts || this.parts.id !== id || this.parts.lang !== document.documentElement.lang) this.build(id);
    const p = this.parts;
    const now = serverNow();
    const pos = view.position;
    const stale = isStale(view, now);
    fill(p.swatch, swatch(view.status, view.kind, 16));
    p.name.textContent = view.name || id;
    p.status.textContent = term("status", view.status);
    p.status.style.color = statusColour(view.status);
    p.sub.textContent = `${id} · ${term("kind", view.kind)}`;
    // From the live incidents; else what the hub said of the unit (an incident this page has not seen).
    const incident = store.assignmentOf(id)
      || (this.full && this.full.incident_id && { id: this.full.incident_id, category: "" });
    const assignment = incident && (incident.assignments || []).filter((a) => a.unit_id === id).pop();
    fill(p.facts,
      el("dt", null, t("unit.lastFix")),
      el("dd", { class: stale ? "warn" : "" }, pos ? `${t("unit.ago", { d: formatDuration(now - pos.ts) })}${stale ? ` · ${t("unit.stale")}` : ""}`
        : t("unit.noFix")),
      pos && el("dt", null, t("unit.speed")),
      pos && el("dd", null, pos.speed != null ? `${(pos.speed * 3.6).toFixed(0)} km/h` : "—",
        pos.acc != null ? el("span", { class: "muted" }, ` · ±${Math.round(pos.acc)} m`) : ""),
      pos && el("dt", null, t("unit.heading")),
      pos && el("dd", null, pos.heading != null ? `${Math.round(pos.heading)}°` : "—"),
      el("dt", null, t("unit.assignment")),
      el("dd", null, incident ? el("button", { class: "link", type: "button", onclick: () => store.select("incident", incident.id) },
        `${categoryName(incident.category)} ${incident.id}`, assignment ? ` · ${term("status", assignment.status)}` : "")
        : t("unit.noAssignment")));
    fill(p.devices, this.devices(now));
    const trackShown = this.track && this.track.unitId === id;
    p.trackBtn.textContent = trackShown ? t("unit.hideTrack") : t("unit.track");
    p.trackInfo.textContent = trackShown ? t("unit.trackPoints", { n: this.track.count }) : "";
  }

  build(id) {
    const p = {
      id, lang: document.documentElement.lang,
      swatch: el("span"), status: el("span", { class: "status" }), sub: el("div", { class: "muted" }),
      name: el("button", { class: "link title", type: "button", onclick: () => this.focus() }),
      facts: el("dl", { class: "facts" }), devices: el("div"),
      trackBtn: el("button", { class: "btn", type: "button", dataset: { testid: "unit-track-btn" }, onclick: () => this.toggleTrack() }),
      trackInfo: el("span", { class: "muted" }),
      live: new Map(),  // device_id -> its "Live" button, kept across renders (the row is rebuilt each second)
    };
    this.parts = p;
    fill(this.host, el("section", { class: "unit-panel", dataset: { testid: "unit-panel", unitId: id } },
      el("header", { class: "panel-head" },
        el("div", { class: "head-line" }, p.swatch, p.name, p.status,
          el("button", { class: "icon-btn", type: "button", title: t("unit.close"), onclick: () => store.select("unit", null) }, "×")),
        p.sub),
      p.facts,
      videoSlot("unit", id),
      el("h4", null, t("unit.devices")), p.devices,
      el("div", { class: "actions" }, p.trackBtn, p.trackInfo)));
  }

  devices(now) {
    const list = this.full && this.full.devices;
    if (!list) return el("div", { class: "empty" }, "…");
    return el("table", { class: "devices" }, el("tbody", null, list.map((d) => el("tr", null,
      // A camera's "Live" sits under its id: a 20-digit GB/T 28181 id leaves no room for a column of its own.
      el("td", { class: "device-id" }, el("span", null, d.device_id),
        d.video_on_demand ? this.liveButton(d.device_id) : null),
      el("td", null, term("kind", d.kind)),
      el("td", { class: d.online ? "ok" : "warn" }, d.online ? t("unit.online") : t("unit.offlineDev")),
      el("td", null, d.battery != null ? el("span", { class: `battery${d.battery < 20 ? " warn" : ""}` },
        el("span", { class: "bar" }, el("i", { style: `width:${Math.max(0, Math.min(100, d.battery))}%` })),
        `${Math.round(d.battery)}%`) : "—"),
      el("td", { class: "muted" }, d.last_fix_ts ? formatDuration(now - d.last_fix_ts) : "—")))));
  }

  /** The device's "Live" button: the same node on every render, so a click never lands on a replaced one. */
  liveButton(deviceId) {
    const known = this.parts.live.get(deviceId);
    if (known) return known;
    const button = el("button", { class: "btn btn-video btn-live", type: "button", title: t("camera.liveTitle"),
      dataset: { testid: "camera-live-btn", deviceId, state: "idle" }, onclick: () => this.openLive(deviceId, button) },
    el("i", { class: "live-dot" }), t("camera.live"));
    this.parts.live.set(deviceId, button);
    return button;
  }

  /**
   * Ask the hub to start the camera's stream (it INVITEs the camera: seconds, or a refusal with a reason),
   * then open its tile once the live feed lists it. A refusal is a toast with the hub's own message.
   */
  async openLive(deviceId, button) {
    if (button.dataset.state === "opening") return;
    const label = button.lastChild;
    button.dataset.state = "opening";
    button.disabled = true;
    label.textContent = t("camera.opening");
    try {
      const answer = await api(`/api/v1/cameras/${encodeURIComponent(deviceId)}/live`, { method: "POST", quiet: true });
      await openWhenListed(answer.stream_id);
    } catch (err) {
      if (err.status !== 401) toast(t("camera.refused", { d: deviceId, m: err.message }));  // 401: signed out
    } finally {
      button.dataset.state = "idle";
      button.disabled = false;
      label.textContent = t("camera.live");
    }
  }

  focus() {
    const view = store.units.get(this.unitId);
    if (view && view.position) this.map.panTo([view.position.lat, view.position.lon]);
  }

  async toggleTrack() {
    const id = this.unitId;
    if (this.track) {
      const wasThis = this.track.unitId === id;
      this.track.layer.remove();
      this.track = null;
      if (wasThis) { this.render(); return; }
    }
    let fixes;
    try { fixes = await this.loadTrack(id); } catch { return; }  // shown by api()
    if (id !== this.unitId) return;
    const points = [];
    let last = -Infinity;
    for (const f of fixes) {
      if (f.ts - last < TRACK_STEP_MS) continue;
      last = f.ts;
      points.push([f.lat, f.lon]);
    }
    const layer = L.polyline(points, { renderer: this.renderer, color: "#ffd166", weight: 3, opacity: 0.9,
      interactive: false }).addTo(this.map);
    this.track = { unitId: id, layer, count: fixes.length };
    if (points.length > 1) this.map.fitBounds(layer.getBounds(), { padding: [40, 40], maxZoom: 16 });
    this.render();
  }

  /** Today's fixes of all the unit's devices, oldest first, fetched page by page. */
  async loadTrack(id) {
    const to = Date.now();
    let from = startOfToday();
    const fixes = [];
    for (let page = 0; page < TRACK_PAGES; page++) {
      const data = await api(`/api/v1/units/${encodeURIComponent(id)}/track${query({ from, to, limit: TRACK_PAGE })}`);
      const got = data.fixes || [];
      fixes.push(...got);
      if (got.length < TRACK_PAGE) break;
      from = got[got.length - 1].ts + 1;
    }
    return fixes;
  }

  /** Once a second: the age of the last fix moves on. */
  tick() { if (this.unitId) this.render(); }
}
