// Alerts: the list in the side panel and the flashing marks on the map. The hub raises them (SOS,
// unacknowledged dispatch, sla_breach, ...) and sends them on the live feed.

import { formatClock, serverNow } from "./clock.js";
import { el, escapeHtml, fill } from "./dom.js";
import { categoryName, t, term } from "./i18n.js";
import * as store from "./store.js";

const SOS_SHOWN_MS = 15 * 60000;
const LIST_MAX = 60;

export class AlertViews {
  constructor(map, listNode, { focus }) {
    this.map = map;
    this.listNode = listNode;
    this.focus = focus;
    this.group = L.layerGroup().addTo(map);
    this.marks = new Map();   // alert id -> marker
  }

  setVisible(on) { if (on) this.group.addTo(this.map); else this.group.remove(); }

  render() {
    const recent = store.alerts.slice(-LIST_MAX).reverse();
    const badge = document.querySelector(".alerts-count");
    if (badge) badge.textContent = String(store.alerts.length);
    fill(this.listNode, recent.length ? recent.map((a) => this.item(a))
      : el("div", { class: "empty" }, t("alerts.empty")));
    this.syncMarks();
  }

  item(a) {
    return el("button", {
      class: `alert-item kind-${a.kind}`, type: "button", dataset: { testid: "alert-item", kind: a.kind, alertId: a.id },
      onclick: () => this.focus(a),
    },
    el("span", { class: "alert-kind" }, term("alert", a.kind)),
    el("span", { class: "alert-time" }, formatClock(a.ts)),
    el("span", { class: "alert-text" }, this.text(a)));
  }

  /** The hub writes alert texts in English; a missed target can be said in the page's language. */
  text(a) {
    const inc = a.incident_id && store.incidents.get(a.incident_id);
    if (a.kind === "sla_breach" && a.milestone && inc) {
      return t("alert.sla", { id: `${categoryName(inc.category)} ${inc.id}`, ms: term("ms", a.milestone) });
    }
    return a.text || "";
  }

  /** SOS positions flash on the map while recent or while their incident is open. */
  syncMarks() {
    const now = serverNow();
    const wanted = new Map();
    for (const a of store.alerts) {
      if (a.kind !== "sos" || a.lat == null || a.lon == null) continue;
      const inc = a.incident_id ? store.incidents.get(a.incident_id) : null;
      if ((inc && store.isOpen(inc)) || now - a.ts < SOS_SHOWN_MS) wanted.set(a.id, a);
    }
    for (const [id, mark] of this.marks) if (!wanted.has(id)) { mark.remove(); this.marks.delete(id); }
    for (const [id, a] of wanted) {
      if (this.marks.has(id)) continue;
      const mark = L.marker([a.lat, a.lon], {
        pane: "alerts", keyboard: false,
        icon: L.divIcon({ className: "sos-mark", html: "<span>SOS</span>", iconSize: [44, 44] }),
      }).addTo(this.group);
      mark.bindTooltip(escapeHtml(a.text || "SOS"), { direction: "top" });
      mark.on("click", () => this.focus(a));
      this.marks.set(id, mark);
    }
  }
}
