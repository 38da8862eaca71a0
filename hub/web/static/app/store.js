// The page's state: units and incidents as the live feed last told, alerts, selection, filters and
// layer switches. Views read it and subscribe to topics; notifications are batched so the DOM is
// rebuilt at most ~4 times a second however fast the feed runs (the unit canvas has its own, per-frame
// path: `onUnitDeltas`). Drones are units too (kind `drone`); their drone views (link, mode, battery,
// mission) come apart, in `drones`, and a hub that sends none leaves that map empty. Live video streams
// (`streams`, topic "streams") come from the snapshot's `streams` and the feed's `video` messages.

const PANEL_INTERVAL_MS = 250;
const MAX_ALERTS = 200;
const ACTIVE_ASSIGNMENT = new Set(["dispatched", "acknowledged", "en_route", "on_scene"]);

export const units = new Map();      // unit_id -> latest unit view
export const incidents = new Map();  // incident id -> latest full incident view
export const drones = new Map();     // drone_id -> latest drone view (also a unit: unit_id = drone_id)
export const alerts = [];            // newest last
export const streams = new Map();    // stream_id -> live stream view (device, unit, incident, position, started_at)

export const selection = { incident: null, unit: null, drone: null };
export const filters = { status: "", kind: "", category: "" };
export const layers = { units: true, trails: true, incidents: true, heatmap: false, overlays: true, alerts: true, drones: true };

const subscribers = new Map();   // topic -> Set(fn)
const pending = new Set();
let flushTimer = null;
let lastFlush = 0;
const deltaListeners = new Set();
const videoListeners = new Set();
// Whether a snapshot carried `streams` (a hub with video does): else video-wall.js asks GET /api/v1/streams.
export const streamFeed = { inSnapshot: false };
let assignmentIndex = null;      // unit_id -> incident id, rebuilt lazily after incident changes

export function subscribe(topic, fn) {
  if (!subscribers.has(topic)) subscribers.set(topic, new Set());
  subscribers.get(topic).add(fn);
}

/** Tell the subscribers of `topic`, batched; `now` delivers at once (a click must feel instant). */
export function notify(topic, { now = false } = {}) {
  pending.add(topic);
  if (now) { flush(); return; }
  if (flushTimer) return;
  const wait = Math.max(0, PANEL_INTERVAL_MS - (performance.now() - lastFlush));
  flushTimer = setTimeout(flush, wait);
}

function flush() {
  if (flushTimer) { clearTimeout(flushTimer); flushTimer = null; }
  lastFlush = performance.now();
  const topics = [...pending];
  pending.clear();
  for (const topic of topics) {
    for (const fn of subscribers.get(topic) || []) {
      try { fn(); } catch (exc) { console.error(`fieldhub: ${topic} view failed`, exc); }
    }
  }
}

/** The unit canvas listens here for every delta, unbatched: it animates them itself. */
export function onUnitDeltas(fn) { deltaListeners.add(fn); }

export function applySnapshot(msg) {
  units.clear();
  for (const u of msg.units || []) units.set(u.unit_id, u);
  incidents.clear();
  for (const inc of msg.incidents || []) incidents.set(inc.id, inc);
  alerts.length = 0;
  alerts.push(...(msg.alerts || []).slice(-MAX_ALERTS));
  drones.clear();
  for (const d of Array.isArray(msg.drones) ? msg.drones : []) if (d && d.drone_id) drones.set(d.drone_id, d);
  // A hub without video sends no `streams`: keep what GET /api/v1/streams may have brought (video-wall.js).
  if (Array.isArray(msg.streams)) { streamFeed.inSnapshot = true; replaceStreams(msg.streams); }
  assignmentIndex = null;
  for (const fn of deltaListeners) fn(msg.units || [], true);
  for (const topic of ["units", "incidents", "alerts", "drones", "selection"]) notify(topic);
}

/** The whole list of live streams (a snapshot's, or GET /api/v1/streams). */
export function replaceStreams(list) {
  streams.clear();
  for (const s of list) if (s && s.stream_id) streams.set(s.stream_id, s);
  notify("streams");
}

/** A feed `video` message: `state` "started" adds (or refreshes) the stream, "ended" removes it. */
export function applyVideo(msg) {
  if (!msg || !msg.stream_id) return;
  const { type: _type, state, ts: _ts, ...view } = msg;
  if (state === "ended") streams.delete(msg.stream_id); else streams.set(msg.stream_id, view);
  for (const fn of videoListeners) fn(state, view);
  notify("streams");
}

/** Each `video` message as it comes (the tiles close at once, and a new stream is announced). */
export function onVideo(fn) { videoListeners.add(fn); }

export function applyUnits(list) {
  for (const u of list) units.set(u.unit_id, u);
  for (const fn of deltaListeners) fn(list, false);
  notify("units");
}

export function putIncident(view) {
  if (!view || !view.id) return;
  incidents.set(view.id, view);
  assignmentIndex = null;
  notify("incidents");
}

/** A drone's whole view (a `drone` delta, or an answer of the drone API). */
export function putDrone(view) {
  if (!view || !view.drone_id) return;
  drones.set(view.drone_id, view);
  notify("drones");
}

/** A new alert, or a newer version of one already listed (the hub re-sends it when it gains an incident). */
export function addAlert(alert) {
  const i = alerts.findIndex((a) => a.id === alert.id);
  if (i >= 0) { alerts[i] = alert; notify("alerts"); return; }
  alerts.push(alert);
  if (alerts.length > MAX_ALERTS) alerts.splice(0, alerts.length - MAX_ALERTS);
  notify("alerts");
}

/** Select an incident, a unit or a drone; a unit that is a known drone opens as the drone it is. One of
 * unit and drone at a time (they share the right-hand column). */
export function select(kind, id) {
  if (kind === "unit" && id && drones.has(id)) kind = "drone";
  if (kind === "unit" && id) selection.drone = null;
  if (kind === "drone" && id) selection.unit = null;
  selection[kind] = id;
  notify("selection", { now: true });
}

export function isOpen(view) { return view && view.status === "open"; }

/** Open incidents passing the category filter: most urgent first, then the longest waiting. */
export function openIncidents() {
  const list = [];
  for (const inc of incidents.values()) {
    if (isOpen(inc) && (!filters.category || inc.category === filters.category)) list.push(inc);
  }
  return list.sort((a, b) => a.priority - b.priority || a.received_at - b.received_at);
}

export function unitPassesFilters(u) {
  return (!filters.status || u.status === filters.status) && (!filters.kind || u.kind === filters.kind);
}

/** Units drawn on the unit canvas: those passing the filters, less drones the drone layer draws. */
export function drawnAsUnit(u) {
  return unitPassesFilters(u) && !(u.kind === "drone" && drones.has(u.unit_id));
}

/** The open incident a unit is responding to now, or null. */
export function assignmentOf(unitId) {
  if (!assignmentIndex) {
    assignmentIndex = new Map();
    for (const inc of incidents.values()) {
      if (!isOpen(inc)) continue;
      for (const a of inc.assignments || []) {
        if (ACTIVE_ASSIGNMENT.has(a.status)) assignmentIndex.set(a.unit_id, inc.id);
      }
    }
  }
  const id = assignmentIndex.get(unitId);
  return id ? incidents.get(id) : null;
}

export function isActiveAssignment(a) { return ACTIVE_ASSIGNMENT.has(a.status); }
