// The units the hub recommends for an incident (nearest by ETA over the roads), with one-click
// dispatch. Fetched when an open incident is shown, after each change of its assignments, and every
// few seconds while it stays on screen (units move; ETAs change).

import { api } from "./api.js";
import { formatCountdown } from "./clock.js";
import { el, fill } from "./dom.js";
import { t, term } from "./i18n.js";
import { canAct } from "./session.js";
import * as store from "./store.js";
import { toast } from "./toast.js";

const COUNT = 3;
const REFRESH_MS = 10000;

export class Recommendations {
  /** `onHighlight(unitIds)`: show them on the map; `onDispatched(incidentId)`: refetch the incident. */
  constructor(node, { onHighlight, onDispatched }) {
    this.node = node;
    this.onHighlight = onHighlight;
    this.onDispatched = onDispatched;
    this.incidentId = null;
    this.list = [];
    this.timer = null;
    this.seq = 0;
  }

  show(incidentId) {
    if (incidentId === this.incidentId) return;
    this.incidentId = incidentId;
    this.list = [];
    clearInterval(this.timer);
    this.render();
    if (!incidentId) { this.onHighlight([]); return; }
    this.load();
    this.timer = setInterval(() => this.load(), REFRESH_MS);
  }

  async load() {
    const id = this.incidentId;
    if (!id) return;
    const seq = ++this.seq;
    let data;
    try {
      data = await api(`/api/v1/incidents/${encodeURIComponent(id)}/recommendations?count=${COUNT}`);
    } catch { return; }  // shown by api()
    if (seq !== this.seq || id !== this.incidentId) return;  // an older answer, or another incident by now
    this.list = data.recommendations || [];
    this.render();
  }

  render() {
    this.onHighlight(this.list.map((r) => r.unit_id));
    if (!this.incidentId) { fill(this.node); return; }
    // Same units as on screen: update the figures in place, so a button under the pointer stays put.
    const rows = [...this.node.querySelectorAll("[data-testid=recommendation]")];
    if (rows.length && rows.length === this.list.length
        && rows.every((row, i) => row.dataset.unitId === this.list[i].unit_id)) {
      rows.forEach((row, i) => fill(row.querySelector(".rec-figures"), ...this.figures(this.list[i])));
      return;
    }
    fill(this.node, this.list.length ? this.list.map((r) => this.row(r))
      : el("div", { class: "empty" }, t("incident.recommend.none")));
  }

  /** Build the rows anew (the language changed). */
  rerender() {
    fill(this.node);
    this.render();
  }

  row(r) {
    const unit = store.units.get(r.unit_id);
    return el("div", { class: "rec", dataset: { testid: "recommendation", unitId: r.unit_id } },
      el("div", { class: "rec-main" },
        el("button", { class: "link", type: "button", onclick: () => store.select("unit", r.unit_id) },
          unit ? unit.name : r.unit_id),
        el("span", { class: "muted" }, ` ${r.unit_id} · ${term("kind", unit ? unit.kind : "")}`)),
      el("div", { class: "rec-figures" }, ...this.figures(r)),
      canAct() && el("button", {
        class: "btn btn-primary", type: "button", dataset: { testid: "dispatch-btn" },
        onclick: (ev) => this.dispatch(r.unit_id, ev.currentTarget),
      }, t("incident.dispatch")));
  }

  figures(r) {
    const km = r.distance_m >= 1000 ? t("incident.km", { d: (r.distance_m / 1000).toFixed(1) })
      : t("incident.m", { d: Math.round(r.distance_m) });
    return [el("b", null, t("incident.eta", { t: formatCountdown((r.eta_s || 0) * 1000) })),
      el("span", { class: "muted" }, ` · ${km}${r.eta_method ? ` · ${term("eta", r.eta_method)}` : ""}`)];
  }

  async dispatch(unitId, button) {
    const id = this.incidentId;
    button.disabled = true;
    try {
      await api(`/api/v1/incidents/${encodeURIComponent(id)}/dispatch`, { method: "POST", body: { unit_ids: [unitId] } });
      toast(t("toast.dispatched", { u: unitId, id }), "info");
      await this.onDispatched(id);
      this.load();
    } catch {
      button.disabled = false;  // shown by api(); let the dispatcher try again
    }
  }
}
