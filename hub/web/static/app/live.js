// The live feed (`/api/v1/live`): a snapshot, then deltas. Reconnects with exponential backoff
// (0.5 s doubling to 10 s, jittered so a room of screens does not reconnect in step); every
// reconnect starts over from a fresh snapshot, which replaces the whole state. Every (re)connect opens the
// WebSocket with a fresh single-use ticket: the long-lived token never goes into a URL.

import { api } from "./api.js";
import { observeServerTs } from "./clock.js";
import { toast } from "./toast.js";
import * as store from "./store.js";

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10000;

export class LiveFeed {
  /** `hooks`: the window.fieldhub object (connected, stats); `onState(state)`; `onSnapshot()` after each one. */
  constructor(hooks, { onState, onSnapshot }) {
    this.hooks = hooks;
    this.onState = onState;
    this.onSnapshot = onSnapshot;
    this.backoff = MIN_BACKOFF_MS;
    this.ws = null;
    this.retry = null;
  }

  /** Open the feed: a fresh single-use ticket first (POST /api/v1/live/ticket), then the WebSocket with it. */
  async connect() {
    clearTimeout(this.retry);
    this.setState("connecting");
    if (await this.adoptEarly()) return;
    let ticket;
    try {
      ticket = (await api("/api/v1/live/ticket", { method: "POST", quiet: true })).ticket;
    } catch (exc) {
      if (exc.status === 401) return;  // api() is signing out already
      // The hub away or busy: try again as after a dropped feed; a role that may not read waits longest.
      if (exc.status === 403) toast(exc.message || "role may not read the live feed");
      this.retryLater(exc.status === 403);
      return;
    }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/api/v1/live?ticket=${encodeURIComponent(ticket)}`);
    this.ws = ws;
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => this.closed(ws, ev);
  }

  /** early.js may have opened the feed already: take it over, frames and all (once; reconnects get a new ticket). */
  async adoptEarly() {
    const early = window.fieldhubEarly;
    if (!early || !early.live) return false;
    const pending = early.live;
    early.live = null;
    const ws = await pending;
    if (!ws) return false;
    this.ws = ws;
    for (const data of early.messages.splice(0)) this.receive(data);
    if (early.closed) { this.closed(ws, early.closed); return true; }
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => this.closed(ws, ev);
    return true;
  }

  receive(data) {
    const stats = this.hooks.stats;
    stats.wsMessages += 1;
    stats.wsBytes += utf8Length(data);
    let msg;
    try { msg = JSON.parse(data); } catch (exc) {
      console.error("fieldhub: live frame is not JSON", exc);
      return;
    }
    if (msg.ts) observeServerTs(msg.ts);
    switch (msg.type) {
      case "snapshot":
        this.backoff = MIN_BACKOFF_MS;
        store.applySnapshot(msg);
        this.setState("connected");
        this.onSnapshot();
        break;
      case "unit":
        store.applyUnits(msg.units || []);
        break;
      case "incident":
        store.putIncident(msg.incident);
        break;
      case "alert":
        if (msg.alert) store.addAlert(msg.alert);
        break;
      case "drone":
        store.putDrone(msg.drone);
        break;
      case "video":
        store.applyVideo(msg);
        break;
      default:
        break;  // kinds this page does not know yet
    }
  }

  closed(ws, ev) {
    if (ws !== this.ws) return;
    this.ws = null;
    // 4401: the ticket was refused (used, expired, or issued by a hub that has since restarted). The next
    // ticket request says whether the token itself is still good; a 401 there signs out (api.js).
    if (ev.code === 4403) toast(ev.reason || "role may not read the live feed");
    this.retryLater(ev.code === 4403);
  }

  retryLater(long = false) {
    this.setState("offline");
    const wait = this.backoff * (0.8 + Math.random() * 0.4);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    this.retry = setTimeout(() => this.connect(), long ? MAX_BACKOFF_MS : wait);
  }

  setState(state) {
    this.hooks.connected = state === "connected";
    this.onState(state);
  }
}

/** Bytes of `s` as UTF-8 (what went over the wire), without allocating an encoded copy. */
function utf8Length(s) {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff) n += 2;  // a surrogate pair: 2 UTF-16 units, 4 bytes
    else if (c < 0xdc00 || c > 0xdfff) n += 2;
  }
  return n;
}
