// Live video on the one-map: floating tiles (one stream each, opened from a unit, a drone or an incident),
// an incident's video wall (every live stream of its units, in a grid, filled as streams start), the
// "Video" buttons the panels show, and the badges on the map next to units that stream. At most
// MAX_TILES players run at once (each is a WebRTC session on the hub and a decoder here).
// Streams come from the store (snapshot `streams` + feed `video` messages); a stream that ends closes its
// tiles with a note.

import { api } from "./api.js";
import { el, fill } from "./dom.js";
import { categoryName, onLangChange, t } from "./i18n.js";
import * as store from "./store.js";
import { toast } from "./toast.js";
import { VideoBadges } from "./video-badges.js";
import { VideoTile } from "./video-tile.js";

export const MAX_TILES = 9;
let maxTiles = MAX_TILES;    // a weaker screen (or a test) may set fewer: hooks.video.setMaxTiles(n)

let views = null;            // the VideoViews of the page, once wired
const slots = new Set();     // panel sections listing streams; dropped once out of the document
// Streams a viewer asked for (a camera opened on demand) that the store does not list yet: stream_id ->
// {promise, resolve, timer}. The hub announces a stream on the live feed around the time it answers the request, in
// either order, so the tile opens at whichever comes second.
const awaited = new Map();
const LISTED_WAIT_MS = 10000;

/** Live streams of a unit (or drone: its unit id), oldest first. */
export function streamsOfUnit(unitId) {
  return [...store.streams.values()].filter((s) => s.unit_id === unitId).sort(byStart);
}

/** Live streams of an incident: started for it, or from a unit now assigned to it. */
export function streamsOfIncident(incidentId) {
  const inc = store.incidents.get(incidentId);
  const units = new Set(((inc && inc.assignments) || []).filter(store.isActiveAssignment).map((a) => a.unit_id));
  return [...store.streams.values()].filter((s) => s.incident_id === incidentId || (s.unit_id && units.has(s.unit_id)))
    .sort(byStart);
}

function byStart(a, b) { return (a.started_at || 0) - (b.started_at || 0) || String(a.stream_id).localeCompare(b.stream_id); }

/** The panels' video section: buttons for the live streams of a unit/drone (`kind` "unit") or an incident. */
export function videoSlot(kind, id) {
  const slot = { kind, id, node: el("div", { class: "video-slot", dataset: { testid: "video-slot", kind } }) };
  slots.add(slot);
  renderSlot(slot);
  return slot.node;
}

/** (Re)build a slot when its streams changed: a rebuilt button under the pointer would lose the click. */
function renderSlot(slot) {
  const list = slot.kind === "incident" ? streamsOfIncident(slot.id) : streamsOfUnit(slot.id);
  const key = `${document.documentElement.lang}|${list.map((s) => s.stream_id).join(" ")}`;
  if (slot.key === key) return;
  slot.key = key;
  const buttons = list.map((s) => el("button", { class: "btn btn-video", type: "button",
    dataset: { testid: "video-open-btn", streamId: s.stream_id }, title: s.stream_id,
    onclick: () => views && views.open(s.stream_id) }, el("i", { class: "live-dot" }), t("video.watch", { d: s.device_id })));
  if (slot.kind !== "incident") {
    fill(slot.node, buttons.length ? el("div", { class: "actions" }, buttons) : null);
    slot.node.hidden = !buttons.length;
    return;
  }
  fill(slot.node,
    el("h4", null, t("video.title"), el("span", { class: "count", dataset: { testid: "video-count" } }, String(list.length))),
    el("div", { class: "actions" }, buttons,
      el("button", { class: "btn", type: "button", dataset: { testid: "video-wall-btn" },
        onclick: () => views && views.openWall(slot.id) }, t("video.wall"))));
}

/**
 * Open `streamId`'s floating tile as soon as the store lists it (at once when it does already): resolves to
 * the tile, or null when the stream was not announced within `timeoutMs` (said in a toast) or no room.
 */
export function openWhenListed(streamId, timeoutMs = LISTED_WAIT_MS) {
  if (!views) return Promise.resolve(null);
  if (store.streams.has(streamId)) return Promise.resolve(views.open(streamId));
  const known = awaited.get(streamId);
  if (known) return known.promise;
  const entry = {};
  entry.promise = new Promise((resolve) => {
    entry.resolve = resolve;
    entry.timer = setTimeout(() => {
      awaited.delete(streamId);
      toast(t("video.notStarted", { id: streamId }));
      resolve(null);
    }, timeoutMs);
  });
  awaited.set(streamId, entry);
  return entry.promise;
}

/** The store's streams changed: open the awaited ones it lists now. */
function openAwaited() {
  for (const [streamId, entry] of awaited) {
    if (!store.streams.has(streamId)) continue;
    awaited.delete(streamId);
    clearTimeout(entry.timer);
    entry.resolve(views.open(streamId));
  }
}

function refreshSlots() {
  // Panels put a slot in the document as they build it (same task), so one out of it now was replaced.
  for (const slot of slots) {
    if (!slot.node.isConnected) slots.delete(slot); else renderSlot(slot);
  }
}

class VideoViews {
  constructor(map, host) {
    this.map = map;
    this.host = host;
    this.dock = el("div", { class: "video-dock", dataset: { testid: "video-dock" } });
    host.append(this.dock);
    this.tiles = new Map();  // stream_id -> VideoTile (floating)
    this.wall = null;        // {incidentId, node, grid, title, more, tiles: Map stream_id -> VideoTile}
    this.badges = new VideoBadges(map, { onOpen: (id) => this.open(id) });
  }

  count() { return this.tiles.size + (this.wall ? this.wall.tiles.size : 0); }

  /** A floating tile for the stream (the one already open is brought forward). */
  open(streamId) {
    const known = this.tiles.get(streamId);
    if (known) { this.dock.append(known.node); return known; }
    const stream = store.streams.get(streamId);
    if (!stream) { toast(t("video.gone", { id: streamId })); return null; }
    if (this.count() >= maxTiles) { toast(t("video.tooMany", { n: maxTiles })); return null; }
    const tile = new VideoTile(stream, "dock", { onGone: (x) => { if (this.tiles.get(x.streamId) === x) this.tiles.delete(x.streamId); } });
    this.tiles.set(streamId, tile);
    this.dock.append(tile.node);
    tile.open();
    return tile;
  }

  /** The incident's wall over the map, showing each of its live streams (and those that start later). */
  openWall(incidentId) {
    if (this.wall && this.wall.incidentId === incidentId) return;
    this.closeWall();
    const wall = { incidentId, tiles: new Map(), title: el("span", { class: "wall-title" }),
      grid: el("div", { class: "video-grid" }),
      more: el("div", { class: "muted wall-more", dataset: { testid: "video-wall-more", left: "0" } }),
      empty: el("div", { class: "empty", dataset: { testid: "video-wall-empty" } }, t("video.none")) };
    wall.node = el("section", { class: "video-wall", dataset: { testid: "video-wall", incidentId } },
      el("header", { class: "wall-head" }, el("i", { class: "live-dot" }), wall.title, wall.more,
        el("button", { class: "icon-btn", type: "button", title: t("video.close"), dataset: { testid: "video-wall-close" },
          onclick: () => this.closeWall() }, "×")),
      wall.empty, wall.grid);
    this.wall = wall;
    this.host.append(wall.node);
    this.syncWall();
  }

  closeWall() {
    if (!this.wall) return;
    const wall = this.wall;
    this.wall = null;
    for (const tile of wall.tiles.values()) tile.close();
    wall.node.remove();
  }

  /** Add tiles for new streams of the wall's incident (room permitting); end those that stopped. */
  syncWall() {
    const wall = this.wall;
    if (!wall) return;
    const inc = store.incidents.get(wall.incidentId);
    const list = streamsOfIncident(wall.incidentId);
    wall.title.textContent = `${t("video.wallOf")} ${inc ? `${categoryName(inc.category)} ` : ""}${wall.incidentId}`;
    let left = 0;
    for (const s of list) {
      if (wall.tiles.has(s.stream_id)) continue;
      if (this.count() >= maxTiles) { left += 1; continue; }
      const tile = new VideoTile(s, "wall", { onGone: (x) => {
        if (wall.tiles.get(x.streamId) === x) wall.tiles.delete(x.streamId);
        this.layoutWall(wall);
      } });
      wall.tiles.set(s.stream_id, tile);
      wall.grid.append(tile.node);
      tile.open();
    }
    wall.more.textContent = left ? t("video.more", { n: left, max: maxTiles }) : "";
    wall.more.dataset.left = String(left);
    this.layoutWall(wall);
  }

  layoutWall(wall) {
    const n = wall.tiles.size;
    wall.empty.hidden = n > 0;
    wall.grid.style.setProperty("--cols", String(Math.max(1, Math.ceil(Math.sqrt(n)))));
  }

  /** The store's streams changed: tiles of streams no longer live end, the wall fills, panels and badges follow. */
  sync() {
    for (const tile of this.allTiles()) {
      if (!store.streams.has(tile.streamId)) tile.ended(); else tile.render();
    }
    openAwaited();
    this.syncWall();
    this.badges.sync();
    refreshSlots();
  }

  allTiles() { return [...this.tiles.values(), ...(this.wall ? this.wall.tiles.values() : [])]; }

  /** A `video` message: end its tiles at once (not at the next batched sync), announce a new stream. */
  heard(state, view) {
    if (state === "ended") {
      for (const tile of this.allTiles()) if (tile.streamId === view.stream_id) tile.ended();
      return;
    }
    if (state !== "started") return;
    const unit = view.unit_id ? store.units.get(view.unit_id) : null;
    toast(t("video.started", { u: unit ? unit.name || view.unit_id : view.unit_id || view.device_id,
      inc: view.incident_id || "—" }), "info");
  }

  tick() {
    for (const tile of this.allTiles()) tile.render();
    if (this.wall) this.syncWall();  // a unit assigned meanwhile may bring streams in
  }

  closeAll() {
    this.closeWall();
    for (const tile of [...this.tiles.values()]) tile.close();
  }

  async stats() { return Promise.all(this.allTiles().map((tile) => tile.stats())); }
}

/** Build the page's video views over `map` (host: the map's wrapper); test hooks in `hooks.video`. */
export function wireVideo(map, host, hooks) {
  views = new VideoViews(map, host);
  store.subscribe("streams", () => views.sync());
  store.subscribe("units", () => views.badges.sync());
  store.subscribe("incidents", () => { views.syncWall(); refreshSlots(); });
  store.onVideo((state, view) => views.heard(state, view));
  setInterval(() => views.tick(), 1000);
  onLangChange(() => { views.badges.reset(); views.sync(); });
  hooks.video = {
    streams: store.streams,
    tiles: () => views.allTiles().map((x) => ({ stream_id: x.streamId, place: x.place, state: x.state })),
    stats: () => views.stats(),
    open: (id) => !!views.open(id),
    openWall: (id) => views.openWall(id),
    closeAll: () => views.closeAll(),
    maxTiles: () => maxTiles,
    setMaxTiles: (n) => { maxTiles = Math.max(1, Math.min(MAX_TILES, Math.floor(n) || MAX_TILES)); },
  };
  // A hub whose snapshot carries no `streams` may still list them.
  if (!store.streamFeed.inSnapshot) {
    api("/api/v1/streams", { optional: true, quiet: true })
      .then((data) => { if (data && Array.isArray(data.streams) && !store.streamFeed.inSnapshot) store.replaceStreams(data.streams); })
      .catch(() => { /* no video on this hub */ });
  }
  views.sync();
  return views;
}
