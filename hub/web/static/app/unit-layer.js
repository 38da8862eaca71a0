// Thousands of units on one <canvas> (never one DOM marker per unit), plus their short trails on a
// second canvas underneath. Each unit is projected once per fix (Web Mercator at zoom 0); a frame
// only scales and offsets. Redrawn on animation frames only when something changed: new fixes, the
// view, a filter, or the clock turning a fix stale. On tiles in GCJ-02 (the map's `crs.datum`, see
// base-map.js) a fix is projected where those tiles draw it, like every Leaflet layer. When few units are on screen (zoomed in, where a
// jump shows) a new fix glides from where the unit is drawn to the fix over the time between fixes.

import { serverNow } from "./clock.js";
import { fromWgs84 } from "./gcj02.js";
import { MarkerStamp } from "./marker-stamp.js";
import { UnitHits } from "./unit-hits.js";
import { STATUSES, dimColour, isStale, shapeIndex, statusColour, worldX, worldY } from "./unit-style.js";

const TRAIL_POINTS = 20;
const GLIDE_MAX_MS = 1000;
// Gliding redraws every frame; with more units than this on screen a fix is shown where it is at once
// (at city scale a second's drive is a few pixels, and 60 redraws a second of 5,000 units cost too much).
const GLIDE_MAX_UNITS = 1500;
const GLIDE_FRAME_MS = 50;
// Faster than this between two fixes is not driving but a jump (another device of the unit took over,
// a fix after a gap): not animated, and the trail starts afresh instead of drawing a line across town.
const JUMP_MPS = 60;
const METRES_PER_WORLD_PX = 40075016.686 / 256;  // at the equator, zoom 0
// Each unit reports about once a second, so its trail grows once a second: redrawing every trail more
// often than that buys nothing (the stretch from the last trail point to the unit is drawn every frame).
const TRAIL_REDRAW_MS = 1000;
const LABEL_ZOOM = 16;
const N_STATUS = STATUSES.length + 1;  // + unknown statuses

function statusIndex(status) {
  const i = STATUSES.indexOf(status);
  return i < 0 ? STATUSES.length : i;
}
const COLOURS = [...STATUSES.map(statusColour), statusColour("?")];
// Trails in opaque, darker colours and one pixel wide: hairlines are the canvas's cheapest lines.
const TRAIL_COLOURS = COLOURS.map((c) => dimColour(c, 0.55));

/** One unit as drawn: the latest fix and the glide towards it, in zoom-0 world pixels, and its trail. */
class UnitMark {
  constructor(id) {
    this.id = id;
    this.view = null;
    this.has = false;
    this.x = 0; this.y = 0;      // the latest fix
    this.fx = 0; this.fy = 0;    // where the glide started
    this.dx = 0; this.dy = 0;    // where it is drawn now
    this.t0 = 0; this.dur = 0; this.p = 1;
    this.ts = 0;
    this.trail = [];             // earlier fixes, flat [x0, y0, x1, y1, ...], oldest first
  }

  /** Where to draw at `now` (performance.now() time); progress 0..1 in this.p. */
  at(now) {
    const p = this.dur > 0 ? Math.min(1, (now - this.t0) / this.dur) : 1;
    this.p = p;
    this.dx = this.fx + (this.x - this.fx) * p;
    this.dy = this.fy + (this.y - this.fy) * p;
  }

  /** Take a new view, drawn on tiles of `datum`; true when the unit moved (its trail grew). */
  update(view, now, glide, datum) {
    this.view = view;
    const pos = view.position;
    if (!pos || pos.lat == null || pos.lon == null) { this.has = false; this.trail.length = 0; return false; }
    const [lat, lon] = fromWgs84(pos.lat, pos.lon, datum);
    const nx = worldX(lon), ny = worldY(lat);
    if (!this.has || (nx === this.x && ny === this.y)) {
      if (!this.has) { this.fx = this.dx = nx; this.fy = this.dy = ny; this.dur = 0; this.p = 1; }
      this.has = true; this.x = nx; this.y = ny; this.ts = pos.ts;
      return false;
    }
    this.at(now);
    const metres = Math.hypot(nx - this.x, ny - this.y) * METRES_PER_WORLD_PX * Math.cos(pos.lat * Math.PI / 180);
    const jump = metres / (Math.max(1000, pos.ts - this.ts) / 1000) > JUMP_MPS;
    if (jump) this.trail.length = 0;
    else this.trail.push(this.x, this.y);
    if (this.trail.length > TRAIL_POINTS * 2) this.trail.splice(0, this.trail.length - TRAIL_POINTS * 2);
    const animate = glide && !jump;
    this.fx = animate ? this.dx : nx; this.fy = animate ? this.dy : ny;
    this.x = nx; this.y = ny;
    this.t0 = now;
    this.dur = animate ? Math.max(100, Math.min(GLIDE_MAX_MS, pos.ts - this.ts || GLIDE_MAX_MS)) : 0;
    this.ts = pos.ts;
    return true;
  }
}

export const UnitLayer = L.Layer.extend({
  initialize(options) {
    L.setOptions(this, options);
    this.marks = new Map();
    this.visible = { units: true, trails: true };
    this.filter = () => true;
    this.selected = null;
    this.highlighted = new Set();
    this.dirty = true;
    this.trailsDirty = true;
    this.trailsDrawn = -Infinity;
    this.trailsMoved = true;
    this.glide = true;
    this.glideAt = 0;  // when a glide in progress is drawn next (0: none)
    this.stamp = new MarkerStamp();
    this.spriteCache = { key: "", list: [] };
    this.hits = new UnitHits();
    this.stats = options.stats;
    this.datum = "wgs84";  // of the map's tiles, as the marks were projected
  },

  onAdd(map) {
    const pane = map.getPane("units") || map.createPane("units");
    this.trailCanvas = L.DomUtil.create("canvas", "unit-canvas leaflet-zoom-animated", pane);
    this.canvas = L.DomUtil.create("canvas", "unit-canvas leaflet-zoom-animated", pane);
    this.ctx = this.canvas.getContext("2d");
    this.trailCtx = this.trailCanvas.getContext("2d");
    // Not on "move": while the map is dragged both canvases ride along in the map pane; they are drawn
    // anew when it stops (and whenever fixes arrive meanwhile).
    map.on("moveend resize viewreset", this.viewChanged, this);
    map.on("zoomanim", this.zoomAnim, this);
    map.on("zoomend", this.zoomEnd, this);
    this.followDatum();
  },

  onRemove(map) {
    this.canvas.remove(); this.trailCanvas.remove();
    map.off("moveend resize viewreset", this.viewChanged, this);
    map.off("zoomanim", this.zoomAnim, this);
    map.off("zoomend", this.zoomEnd, this);
  },

  viewChanged() { this.followDatum(); this.dirty = true; this.trailsDirty = true; this.trailsDrawn = -Infinity; },

  /** Fixes may arrive before the map knows its tiles' datum: once it does, every mark is projected again. */
  followDatum() {
    const datum = (this._map && this._map.options.crs.datum) || "wgs84";
    if (datum === this.datum) return;
    this.datum = datum;
    const now = performance.now();
    for (const m of this.marks.values()) {
      m.has = false; m.trail.length = 0;
      if (m.view) m.update(m.view, now, false, datum);
    }
  },
  markDirty() { this.dirty = true; },
  setVisible(which, on) { this.visible[which] = on; this.viewChanged(); },
  setFilter(fn) { this.filter = fn; this.viewChanged(); },
  setSelected(id) { this.selected = id; this.dirty = true; },
  setHighlighted(ids) { this.highlighted = new Set(ids); this.dirty = true; },

  /** Take unit views from the feed; `replace` (a snapshot) forgets units it does not list. */
  apply(views, replace) {
    const now = performance.now();
    if (replace) {
      const keep = new Set(views.map((v) => v.unit_id));
      for (const id of this.marks.keys()) if (!keep.has(id)) this.marks.delete(id);
    }
    for (const view of views) {
      let m = this.marks.get(view.unit_id);
      if (!m) { m = new UnitMark(view.unit_id); this.marks.set(view.unit_id, m); }
      if (m.update(view, now, this.glide, this.datum)) this.trailsDirty = true;  // drawn within TRAIL_REDRAW_MS
    }
    this.dirty = true;
  },

  // Zooming: scale the last picture with the map's CSS animation (as Leaflet's own overlays do), draw anew at the end.
  zoomAnim(e) {
    this.zooming = true;
    if (!this.topLeftLatLng) return;
    const offset = this._map._latLngToNewLayerPoint(this.topLeftLatLng, e.zoom, e.center);
    const scale = this._map.getZoomScale(e.zoom);
    L.DomUtil.setTransform(this.canvas, offset, scale);
    L.DomUtil.setTransform(this.trailCanvas, offset, scale);
  },
  zoomEnd() { this.zooming = false; this.viewChanged(); },

  /** Per animation frame: draw if needed; true when it drew. */
  frame(now) {
    const trailsDue = this.trailsDirty && now - this.trailsDrawn >= TRAIL_REDRAW_MS;
    const glideDue = this.glideAt > 0 && now >= this.glideAt;
    if (!this._map || this.zooming || !(this.dirty || trailsDue || glideDue)) return false;
    const t0 = performance.now();
    const view = this.prepareCanvases();
    if (trailsDue || this.trailsMoved) {
      this.trailsDirty = false; this.trailsMoved = false; this.trailsDrawn = now;
      this.drawTrails(view);
    }
    this.dirty = false;
    // Still gliding: draw again soon, but at most every GLIDE_FRAME_MS (a glide at 20 frames/s looks as smooth
    // on a wall screen and costs a third of drawing every animation frame).
    this.glideAt = this.drawUnits(view, now) ? now + GLIDE_FRAME_MS : 0;
    this.glide = this.hits.n <= GLIDE_MAX_UNITS;
    this.stats.lastFrameMs = Math.round((performance.now() - t0) * 100) / 100;
    return true;
  },

  prepareCanvases() {
    const map = this._map;
    const size = map.getSize();
    const dpr = window.devicePixelRatio || 1;
    const topLeft = map.containerPointToLayerPoint([0, 0]);
    this.topLeftLatLng = map.containerPointToLatLng([0, 0]);
    // Both canvases sit at the view's top-left; when that moved, the trails must be drawn anew too.
    this.trailsMoved = this.trailsMoved || !this.topLeft || !this.topLeft.equals(topLeft);
    this.topLeft = topLeft;
    for (const c of [this.canvas, this.trailCanvas]) {
      if (c.width !== Math.round(size.x * dpr) || c.height !== Math.round(size.y * dpr)) {
        c.width = Math.round(size.x * dpr); c.height = Math.round(size.y * dpr);
        c.style.width = `${size.x}px`; c.style.height = `${size.y}px`;
        this.trailsMoved = true;
      }
      L.DomUtil.setPosition(c, topLeft);
    }
    const origin = map.getPixelOrigin();
    const zoom = map.getZoom();
    return { w: size.x, h: size.y, dpr, zoom, k: map.getZoomScale(zoom, 0), ox: origin.x + topLeft.x,
      oy: origin.y + topLeft.y };
  },

  drawTrails(v) {
    const ctx = this.trailCtx;
    ctx.setTransform(v.dpr, 0, 0, v.dpr, 0, 0);
    ctx.clearRect(0, 0, v.w, v.h);
    if (!this.visible.trails || !this.visible.units) return;
    const paths = COLOURS.map(() => new Path2D());
    for (const m of this.marks.values()) {
      const tr = m.trail;
      if (!m.has || tr.length < 4 || !this.filter(m.view)) continue;
      const path = paths[statusIndex(m.view.status)];
      path.moveTo(tr[0] * v.k - v.ox, tr[1] * v.k - v.oy);
      for (let i = 2; i < tr.length; i += 2) path.lineTo(tr[i] * v.k - v.ox, tr[i + 1] * v.k - v.oy);
    }
    ctx.lineWidth = 1;
    paths.forEach((p, i) => { ctx.strokeStyle = TRAIL_COLOURS[i]; ctx.stroke(p); });
  },

  drawUnits(v, now) {
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    this.hits.clear();
    this.stats.unitsDrawn = 0;
    if (!this.visible.units) { ctx.clearRect(0, 0, this.canvas.width, this.canvas.height); return false; }
    const r = v.zoom >= 16 ? 6 : v.zoom >= 14 ? 5 : 4;
    const margin = r + 12;
    const clock = serverNow();
    const trails = this.visible.trails;
    const heads = COLOURS.map(() => new Path2D());  // from the last trail point to the unit
    const ticks = new Path2D();
    const labels = v.zoom >= LABEL_ZOOM ? [] : null;
    const special = [];
    const stamps = [];
    let moving = false;
    for (const m of this.marks.values()) {
      if (!m.has || !this.filter(m.view)) continue;
      m.at(now);
      if (m.p < 1) moving = true;
      const x = m.dx * v.k - v.ox, y = m.dy * v.k - v.oy;
      if (x < -margin || y < -margin || x > v.w + margin || y > v.h + margin) continue;
      const view = m.view;
      const stale = isStale(view, clock);
      const si = statusIndex(view.status);
      stamps.push(this.sprite(shapeIndex(view.kind), si, stale, r, v.dpr), x * v.dpr, y * v.dpr);
      const tr = m.trail;
      if (trails && tr.length >= 2) {
        // Stop at the marker's edge: lines are drawn over the stamped markers.
        const hx = tr[tr.length - 2] * v.k - v.ox, hy = tr[tr.length - 1] * v.k - v.oy;
        const len = Math.hypot(x - hx, y - hy);
        if (len > r + 1) {
          heads[si].moveTo(hx, hy);
          heads[si].lineTo(x - (x - hx) * r / len, y - (y - hy) * r / len);
        }
      }
      const pos = view.position;
      if (!stale && pos.heading != null && (pos.speed || 0) > 0.5) {
        const a = pos.heading * Math.PI / 180;  // clockwise from north; screen y grows downwards
        const sin = Math.sin(a), cos = Math.cos(a);
        ticks.moveTo(x + sin * (r + 1), y - cos * (r + 1));
        ticks.lineTo(x + sin * (r + 6), y - cos * (r + 6));
      }
      if (labels) labels.push(x, y, view.name || view.unit_id);
      if (m.id === this.selected || this.highlighted.has(m.id)) special.push(x, y, m.id === this.selected);
      this.hits.add(m.id, x, y);
    }
    this.stamp.draw(ctx, stamps, this.canvas.width, this.canvas.height);
    this.stats.unitsDrawn = this.hits.n;
    ctx.setTransform(v.dpr, 0, 0, v.dpr, 0, 0);
    ctx.lineWidth = 1;  // hairlines: the cheapest lines a canvas draws
    if (trails) heads.forEach((p, i) => { ctx.strokeStyle = TRAIL_COLOURS[i]; ctx.stroke(p); });
    ctx.strokeStyle = "#e6edf3"; ctx.stroke(ticks);
    this.drawRings(ctx, special, r);
    if (labels) this.drawLabels(ctx, labels, r);
    return moving;
  },

  /** The marker bitmap for (shape, status, stale), made on first use at this radius and pixel ratio. */
  sprite(shape, si, stale, r, dpr) {
    const cache = this.spriteCache;
    if (cache.key !== `${r}|${dpr}`) { cache.key = `${r}|${dpr}`; cache.list = []; }
    const key = (shape * N_STATUS + si) * 2 + (stale ? 1 : 0);
    return cache.list[key] || (cache.list[key] = this.stamp.sprite(shape, COLOURS[si], stale, r, dpr));
  },

  /** The unit drawn nearest to a container point, within a finger's reach; null if none. */
  pick(point) { return this.hits.nearest(point.x, point.y); },

  /** The selected unit (white) and the recommended ones (dashed amber). */
  drawRings(ctx, special, r) {
    for (let i = 0; i < special.length; i += 3) {
      ctx.beginPath();
      ctx.arc(special[i], special[i + 1], r + 5, 0, 2 * Math.PI);
      ctx.setLineDash(special[i + 2] ? [] : [3, 3]);
      ctx.strokeStyle = special[i + 2] ? "#ffffff" : "#f2b233";
      ctx.lineWidth = 2; ctx.stroke();
    }
    ctx.setLineDash([]);
  },

  drawLabels(ctx, labels, r) {
    ctx.font = "11px system-ui, 'Noto Sans CJK SC', sans-serif";
    ctx.lineWidth = 3; ctx.strokeStyle = "rgba(11,15,20,0.85)"; ctx.fillStyle = "#dce3ea";
    for (let i = 0; i < labels.length; i += 3) {
      ctx.strokeText(labels[i + 2], labels[i] + r + 4, labels[i + 1] - r);
      ctx.fillText(labels[i + 2], labels[i] + r + 4, labels[i + 1] - r);
    }
  },
});
