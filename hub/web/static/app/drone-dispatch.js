// "Send drone" in the incident panel: the hub picks the drone (ready on its dock, battery enough for
// the round trip, nearest) and answers with it and its ETA, shown under the button until the panel shows
// another incident. A 409 no_drone_available is shown in a toast and, under the button, as the hub's reason
// for each drone. A drone whose only fault is its link failsafe (the hub's reason starts "NO link failsafe")
// gets an explicit, confirmed "send without failsafe": it posts {"drone_id", "without_failsafe": true} and the
// hub logs the override. The drone then appears in the incident's assignments like a unit.

import { api } from "./api.js";
import { formatCountdown } from "./clock.js";
import { el, fill } from "./dom.js";
import { t } from "./i18n.js";
import * as store from "./store.js";
import { toast } from "./toast.js";

const NO_FAILSAFE = "NO link failsafe";  // how the hub starts the reason of a drone whose failsafe is not real
const answers = new Map();    // incident id -> the hub's last answer {drone_id, eta_s, distance_m, without_failsafe}
const refusals = new Map();   // incident id -> {message, reasons: [{droneId, text}]} of the last 409
const confirming = new Map(); // incident id -> the drone id whose override waits for its confirmation

/** The row for an open incident; `onSent(incidentId)` refetches the incident (its new assignment). */
export function droneDispatchRow(inc, onSent) {
  const answer = answers.get(inc.id);
  const slot = el("div", { class: "drone-refusal-slot" });
  const row = { incidentId: inc.id, slot, onSent };
  const button = el("button", { class: "btn btn-drone", type: "button", dataset: { testid: "dispatch-drone" },
    onclick: () => send(row, {}, button) }, t("drone.send"));
  paintRefusal(row);
  return el("div", { class: "drone-dispatch" }, button,
    answer && el("span", { class: "drone-answer", dataset: { testid: "drone-dispatch-result", droneId: answer.drone_id } },
      el("button", { class: "link", type: "button", onclick: () => store.select("drone", answer.drone_id) }, answer.drone_id),
      ` · ${describe(answer)}`,
      answer.without_failsafe ? el("span", { class: "bad" }, ` · ${t("drone.sentWithoutFailsafe")}`) : ""),
    slot);
}

function describe(a) {
  const eta = t("incident.eta", { t: formatCountdown((a.eta_s || 0) * 1000) });
  if (a.distance_m == null) return eta;
  const d = a.distance_m >= 1000 ? t("incident.km", { d: (a.distance_m / 1000).toFixed(1) })
    : t("incident.m", { d: Math.round(a.distance_m) });
  return `${eta} · ${d}`;
}

/**
 * The hub's refusal "no drone can fly to incident X: UAV-01: why; UAV-02: why" as one reason per drone.
 * A reason may itself hold "; " (the failsafe's "…; also, …"), so the message is cut only before a drone id
 * the page knows; a message it cannot cut stays whole.
 */
export function droneReasons(message, droneIds) {
  const ids = [...droneIds].sort((a, b) => b.length - a.length).map((id) => id.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  if (!ids.length) return [];
  const start = new RegExp(`(?:^|: |; )(${ids.join("|")}): `, "g");
  const marks = [...message.matchAll(start)].map((m) => ({ droneId: m[1], at: m.index, body: m.index + m[0].length }));
  return marks.map((m, i) => ({ droneId: m.droneId, text: message.slice(m.body, i + 1 < marks.length ? marks[i + 1].at : undefined).trim() }));
}

/** The last refusal under the button (in place: the panel need not render again), or nothing. */
function paintRefusal(row) {
  const refusal = refusals.get(row.incidentId);
  if (!refusal) { fill(row.slot); return; }
  const waiting = confirming.get(row.incidentId);
  const ask = (droneId) => { confirming.set(row.incidentId, droneId); paintRefusal(row); };
  const items = refusal.reasons.map(({ droneId, text }) => {
    const override = text.startsWith(NO_FAILSAFE);
    return el("li", { dataset: { testid: "drone-refusal", droneId } },
      el("b", null, droneId), `: ${text}`,
      override && waiting !== droneId && el("button", { class: "link danger small override-btn", type: "button",
        dataset: { testid: "drone-override", droneId }, onclick: () => ask(droneId) }, t("drone.override")),
      override && waiting === droneId && confirmBox(row, droneId));
  });
  fill(row.slot, el("div", { class: "drone-refusal", dataset: { testid: "drone-dispatch-refusal" } },
    el("div", { class: "muted" }, t("drone.noneAvailableTitle")),
    items.length ? el("ul", null, items) : el("div", null, refusal.message)));
}

/** The explicit second step of an override: what it means, then send or cancel. */
function confirmBox(row, droneId) {
  const yes = el("button", { class: "btn btn-danger", type: "button", dataset: { testid: "drone-override-confirm" },
    onclick: () => {
      confirming.delete(row.incidentId);
      send(row, { drone_id: droneId, without_failsafe: true }, yes);
    } }, t("drone.override.confirm", { id: droneId }));
  const no = el("button", { class: "btn", type: "button", dataset: { testid: "drone-override-cancel" },
    onclick: () => { confirming.delete(row.incidentId); paintRefusal(row); } }, t("new.cancel"));
  return el("div", { class: "override-confirm", dataset: { testid: "drone-override-box", droneId } },
    el("div", null, t("drone.override.warning", { id: droneId })), el("div", { class: "actions" }, yes, no));
}

async function send(row, body, button) {
  const { incidentId } = row;
  button.disabled = true;
  try {
    const answer = await api(`/api/v1/incidents/${encodeURIComponent(incidentId)}/drone`, { method: "POST", body, quiet: true });
    answers.set(incidentId, answer);
    refusals.delete(incidentId);
    confirming.delete(incidentId);
    paintRefusal(row);
    toast(t("drone.sent", { id: answer.drone_id, inc: incidentId, d: describe(answer) })
      + (answer.without_failsafe ? ` — ${t("drone.sentWithoutFailsafe")}` : ""), "info");
    await row.onSent(incidentId);  // the panel renders again, with the answer
  } catch (err) {
    if (err.status === 401) return;
    if (err.code === "no_drone_available") {
      refusals.set(incidentId, { message: err.message, reasons: droneReasons(err.message, store.drones.keys()) });
      paintRefusal(row);
      toast(t("drone.noneAvailable", { m: err.message }));
    } else {
      toast(`${t("drone.send")}: ${err.message}`);
    }
  } finally {
    button.disabled = false;
  }
}
