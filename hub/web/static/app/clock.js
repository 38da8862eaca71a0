// Time as the hub sees it, and how the page writes times and durations.
// Deadlines and fix ages are in the hub's (device) time; the browser's clock may be off by seconds,
// so the offset is learnt from the `ts` of every live frame and applied to local ticking.

import { t } from "./i18n.js";

let offsetMs = 0;

/** Learn the hub clock from a frame's `ts` (sent "now" by the hub; latency on a LAN is negligible). */
export function observeServerTs(ts) {
  if (Number.isFinite(ts)) offsetMs = ts - Date.now();
}

export function serverNow() { return Date.now() + offsetMs; }

/** 0:42, 12:05, 1:02:03 — for countdowns and response times. */
export function formatCountdown(ms) {
  const total = Math.floor(Math.abs(ms) / 1000);
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? `${h}:` : "") + `${mm}:${String(s).padStart(2, "0")}`;
}

/** A rough human duration: "35s", "4m 10s", "2h 5m", "3d 1h" (translated). */
export function formatDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return t("dur.s", { s });
  if (s < 3600) return t("dur.m", { m: Math.floor(s / 60), s: s % 60 });
  if (s < 86400) return t("dur.h", { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
  return t("dur.d", { d: Math.floor(s / 86400), h: Math.floor((s % 86400) / 3600) });
}

/** HH:MM:SS in local time. */
export function formatClock(ts) {
  if (ts == null) return "—";
  const d = new Date(ts);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

/** Local midnight of today, epoch ms (the start of "today's track"). */
export function startOfToday() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}
