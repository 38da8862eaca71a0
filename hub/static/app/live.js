// The live feed (`/api/v1/live`): a snapshot, then deltas. Reconnects with exponential backoff
// (0.5 s doubling to 10 s, jittered so a room of screens does not reconnect in step); every
// reconnect starts over from a fresh snapshot, which replaces the whole state.

import { observeServerTs } from "./clock.js";
import { getToken, signOut } from "./session.js";
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

  connect() {
    clearTimeout(this.retry);
    this.setState("connecting");
    if (this.adoptEarly()) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/api/v1/live?token=${encodeURIComponent(getToken() || "")}`);
    this.ws = ws;
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => this.closed(ws, ev);
  }

  /** The page's inline script may have opened the feed already (index.html): take it over, frames and all. */
  adoptEarly() {
    const early = window.fieldhubEarly;
    if (!early || !early.ws) return false;
    const ws = early.ws;
    early.ws = null;
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
    if (ev.code === 4401) { signOut("bad"); return; }
    if (ev.code === 4403) toast(ev.reason || "role may not read the live feed");
    this.setState("offline");
    const wait = this.backoff * (0.8 + Math.random() * 0.4);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    this.retry = setTimeout(() => this.connect(), ev.code === 4403 ? MAX_BACKOFF_MS : wait);
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
