// "Send drone" in the incident panel: the hub picks the drone (ready on its dock, battery enough for
// the round trip, nearest) and answers with it and its ETA, shown under the button until the panel shows
// another incident; 409 no_drone_available (or any refusal) is shown in a toast. The drone then appears
// in the incident's assignments like a unit.

import { api } from "./api.js";
import { formatCountdown } from "./clock.js";
import { el } from "./dom.js";
import { t } from "./i18n.js";
import * as store from "./store.js";
import { toast } from "./toast.js";

const answers = new Map();   // incident id -> the hub's last answer {drone_id, eta_s, distance_m}

/** The row for an open incident; `onSent(incidentId)` refetches the incident (its new assignment). */
export function droneDispatchRow(inc, onSent) {
  const answer = answers.get(inc.id);
  const button = el("button", { class: "btn btn-drone", type: "button", dataset: { testid: "dispatch-drone" },
    onclick: () => send(inc.id, button, onSent) }, t("drone.send"));
  return el("div", { class: "drone-dispatch" }, button,
    answer && el("span", { class: "drone-answer", dataset: { testid: "drone-dispatch-result", droneId: answer.drone_id } },
      el("button", { class: "link", type: "button", onclick: () => store.select("drone", answer.drone_id) }, answer.drone_id),
      ` · ${describe(answer)}`));
}

function describe(a) {
  const eta = t("incident.eta", { t: formatCountdown((a.eta_s || 0) * 1000) });
  if (a.distance_m == null) return eta;
  const d = a.distance_m >= 1000 ? t("incident.km", { d: (a.distance_m / 1000).toFixed(1) })
    : t("incident.m", { d: Math.round(a.distance_m) });
  return `${eta} · ${d}`;
}

async function send(incidentId, button, onSent) {
  button.disabled = true;
  try {
    const answer = await api(`/api/v1/incidents/${encodeURIComponent(incidentId)}/drone`, { method: "POST", body: {}, quiet: true });
    answers.set(incidentId, answer);
    toast(t("drone.sent", { id: answer.drone_id, inc: incidentId, d: describe(answer) }), "info");
    await onSent(incidentId);  // the panel renders again, with the answer
  } catch (err) {
    if (err.status === 401) return;
    toast(err.code === "no_drone_available" ? t("drone.noneAvailable", { m: err.message }) : `${t("drone.send")}: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}
