// Reading an incident's response targets against the hub's clock, between two incident messages.
// The hub evaluates `sla` when it sends the view; here a pending target turns missed by itself when its
// deadline passes, so chips tick locally with no polling.

import { serverNow } from "./clock.js";

// A dispatch not acknowledged after this long is an alert (the hub re-sends after 15 s by default).
export const UNACKED_AFTER_MS = 20000;

/** "met" | "missed" | "pending" for one target of `sla`. */
export function targetState(target, now = serverNow()) {
  if (target.met === true) return "met";
  if (target.met === false) return "missed";
  return target.actual == null && now > target.deadline ? "missed" : "pending";
}

/** What to show on a chip: the slack when reached, else the time left (negative: overdue). */
export function targetClock(target, now = serverNow()) {
  if (target.actual != null) return target.deadline - target.actual;
  return target.deadline - now;
}

export function missedTargets(incident, now = serverNow()) {
  return (incident.sla || []).filter((t) => targetState(t, now) === "missed");
}

/** The next target still pending, soonest deadline first; null when none. */
export function nextPending(incident, now = serverNow()) {
  let best = null;
  for (const t of incident.sla || []) {
    if (targetState(t, now) === "pending" && (!best || t.deadline < best.deadline)) best = t;
  }
  return best;
}

/** Active assignments dispatched but not acknowledged for too long. */
export function unackedAssignments(incident, now = serverNow()) {
  return (incident.assignments || []).filter(
    (a) => a.status === "dispatched" && a.dispatched != null && now - a.dispatched > UNACKED_AFTER_MS);
}
