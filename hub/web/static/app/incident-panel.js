// One incident in full: its targets ticking, who is assigned and how far they got, recommended units,
// the milestones with where each came from (device, geofence, manual...), the log, and the
// dispatcher's actions. Sections re-render only when the incident itself changed; chips tick in place.

import { api } from "./api.js";
import { formatClock, formatCountdown, formatDuration, serverNow } from "./clock.js";
import { el, fill } from "./dom.js";
import { droneDispatchRow } from "./drone-dispatch.js";
import { PRIORITY_COLOURS } from "./incident-layer.js";
import { categoryName, t, term } from "./i18n.js";
import { Recommendations } from "./recommendations.js";
import { canAct, canSendDrone } from "./session.js";
import { renderChips, tickChips } from "./sla-chips.js";
import * as store from "./store.js";
import { toast } from "./toast.js";
import { videoSlot } from "./video-wall.js";

const TIMELINE = ["received", "dispatched", "acknowledged", "departed", "contacted", "supported", "arrived", "cleared"];
const ASSIGNMENT_STEPS = ["dispatched", "acknowledged", "departed", "contacted", "arrived", "cleared"];

export class IncidentPanel {
  constructor(host, { onHighlight, onFocus }) {
    this.host = host;
    this.onFocus = onFocus;
    this.shown = null;        // the incident view last rendered
    this.node = null;
    this.recommendations = new Recommendations(el("div", { class: "recs" }), {
      onHighlight, onDispatched: (id) => this.refetch(id),
    });
  }

  /** Show the selected incident (fetching it if the live feed has not brought it). */
  async update() {
    const id = store.selection.incident;
    if (!id) { this.clear(); return; }
    let view = store.incidents.get(id);
    if (!view) {
      view = await this.refetch(id);
      if (!view || store.selection.incident !== id) return;
    }
    if (view === this.shown) return;
    this.render(view);
  }

  clear() {
    this.shown = null;
    this.node = null;
    this.recommendations.show(null);
    fill(this.host);
    this.host.hidden = true;
  }

  async refetch(id) {
    try {
      const view = await api(`/api/v1/incidents/${encodeURIComponent(id)}`);
      store.putIncident(view);
      return view;
    } catch {
      return null;  // shown by api()
    }
  }

  render(inc) {
    const sameIncident = this.shown && this.shown.id === inc.id;
    this.shown = inc;
    const open = store.isOpen(inc);
    const act = canAct() && open;
    this.recommendations.show(open ? inc.id : null);
    if (sameIncident && open && !this.recommendations.list.length) this.recommendations.load();
    const chips = el("div", { class: "chips" });
    this.chipsNode = chips;
    const node = el("section", { class: "incident-panel", dataset: { testid: "incident-panel", incidentId: inc.id } },
      this.header(inc),
      el("h4", null, t("incident.sla"), el("span", { class: "muted" }, ` · ${inc.policy || "—"}`)), chips,
      act && this.actions(inc),
      el("h4", null, t("incident.assignments")), this.assignments(inc, act),
      videoSlot("incident", inc.id),
      open && canSendDrone() && droneDispatchRow(inc, (id) => this.refetch(id)),
      open && el("h4", null, t("incident.recommend"),
        el("button", { class: "link small", type: "button", onclick: () => this.recommendations.load() },
          t("incident.refresh"))),
      open && this.recommendations.node,
      el("h4", null, t("incident.timeline")), this.timeline(inc),
      el("h4", null, t("incident.log")), this.log(inc, act));
    renderChips(chips, inc);
    this.node = node;
    fill(this.host, node);
    this.host.hidden = false;
  }

  header(inc) {
    const age = formatDuration(serverNow() - inc.received_at);
    return el("header", { class: "panel-head" },
      el("div", { class: "head-line" },
        el("span", { class: "prio-badge", style: `background:${PRIORITY_COLOURS[inc.priority] || "#888"}` },
          t(`prio.${inc.priority}`)),
        el("button", { class: "link title", type: "button", onclick: () => this.onFocus(inc) }, categoryName(inc.category)),
        el("span", { class: `status status-${inc.status}` }, term("status", inc.status)),
        el("button", { class: "icon-btn", type: "button", title: t("unit.close"),
          onclick: () => store.select("incident", null) }, "×")),
      el("div", { class: "muted" }, `${inc.id} · ${t("incident.received", { t: formatClock(inc.received_at) })} · `,
        el("span", { class: "age" }, t("incident.age", { d: age }))),
      inc.summary && el("div", { class: "summary" }, inc.summary),
      inc.address && el("div", { class: "muted" }, inc.address),
      el("div", { class: "muted" }, t("incident.zone", { r: Math.round(inc.arrival_radius_m || 100) })));
  }

  actions(inc) {
    const reached = (name) => inc.milestones && inc.milestones[name];
    const post = (path, body, done) => async (ev) => {
      const button = ev.currentTarget;
      button.disabled = true;
      try {
        const view = await api(`/api/v1/incidents/${encodeURIComponent(inc.id)}/${path}`, { method: "POST", body });
        if (view && view.id === inc.id && view.sla) store.putIncident(view); else await this.refetch(inc.id);
        toast(done, "info");
      } catch {
        button.disabled = false;  // shown by api()
      }
    };
    return el("div", { class: "actions" },
      el("button", { class: "btn", type: "button", dataset: { testid: "manual-contacted" }, disabled: !!reached("contacted"),
        onclick: post("events", { type: "contacted" }, t("toast.saved")) }, t("incident.contacted")),
      el("button", { class: "btn", type: "button", dataset: { testid: "manual-supported" }, disabled: !!reached("supported"),
        onclick: post("events", { type: "supported" }, t("toast.saved")) }, t("incident.supported")),
      el("button", { class: "btn", type: "button", dataset: { testid: "divert-btn" },
        onclick: post("divert", {}, t("status.diverted")) }, t("incident.divert")),
      el("button", { class: "btn btn-danger", type: "button", dataset: { testid: "close-btn" },
        onclick: post("close", {}, t("toast.closed", { id: inc.id })) }, t("incident.close")));
  }

  assignments(inc, act) {
    const list = inc.assignments || [];
    if (!list.length) return el("div", { class: "empty" }, t("unit.noAssignment"));
    return el("div", { class: "assignments" }, list.map((a) => {
      const unit = store.units.get(a.unit_id);
      const steps = ASSIGNMENT_STEPS.filter((s) => a[s] != null).map((s) => el("span", {
        class: "step", dataset: { testid: "assignment-step", milestone: s, source: (a.sources && a.sources[s]) || "" },
        title: `${term("ms", s)} ${formatClock(a[s])}${a.sources && a.sources[s] ? ` · ${term("src", a.sources[s])}` : ""}`,
      }, `${term("ms", s)} +${formatCountdown(a[s] - inc.received_at)}`));
      return el("div", { class: "assignment", dataset: { testid: "assignment", unitId: a.unit_id, status: a.status } },
        el("div", { class: "rec-main" },
          el("button", { class: "link", type: "button", onclick: () => store.select("unit", a.unit_id) },
            unit ? unit.name : a.unit_id),
          el("span", { class: `status status-${a.status}` }, term("status", a.status)),
          act && store.isActiveAssignment(a) && el("button", {
            class: "link small danger", type: "button", dataset: { testid: "cancel-btn" },
            onclick: async () => {
              try {
                await api(`/api/v1/incidents/${encodeURIComponent(inc.id)}/cancel`, { method: "POST", body: { unit_id: a.unit_id } });
                await this.refetch(inc.id);
              } catch { /* shown by api() */ }
            },
          }, t("incident.cancel"))),
        el("div", { class: "steps" }, steps));
    }));
  }

  timeline(inc) {
    const ms = inc.milestones || {};
    return el("ol", { class: "timeline" }, TIMELINE.map((name) => {
      const m = ms[name];
      if (!m) return el("li", { class: "timeline-pending" }, el("span", { class: "tl-name" }, term("ms", name)),
        el("span", { class: "muted" }, t("incident.none")));
      return el("li", { dataset: { testid: "timeline-item", milestone: name, source: m.source } },
        el("span", { class: "tl-name" }, term("ms", name)),
        el("span", { class: "tl-time" }, formatClock(m.ts)),
        el("span", { class: "tl-offset" }, name === "received" ? "" : `+${formatCountdown(m.ts - inc.received_at)}`),
        el("span", { class: `src src-${m.source}` }, term("src", m.source)),
        m.unit_id && el("span", { class: "muted" }, m.unit_id));
    }));
  }

  log(inc, act) {
    const entries = (inc.log || []).slice(-30).reverse().map((e) => el("li", null,
      el("span", { class: "tl-time" }, formatClock(e.ts)),
      el("span", { class: "tl-name" }, term("log", e.type)),
      el("span", { class: "muted" }, [e.unit_id, e.to_unit_id && `→ ${e.to_unit_id}`].filter(Boolean).join(" ")),
      (e.text || e.reason) && el("span", { class: "log-text" }, e.text || e.reason)));
    const note = act && el("form", {
      class: "note-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        const input = ev.currentTarget.elements.note;
        const text = input.value.trim();
        if (!text) return;
        try {
          await api(`/api/v1/incidents/${encodeURIComponent(inc.id)}/events`, { method: "POST", body: { type: "note", text } });
          input.value = "";
          await this.refetch(inc.id);
        } catch { /* shown by api() */ }
      },
    }, el("input", { name: "note", maxlength: "4000", placeholder: t("incident.note") }),
    el("button", { class: "btn", type: "submit" }, t("incident.addNote")));
    return el("div", null, note, el("ol", { class: "log" }, entries));
  }

  /** Once a second: countdowns and the age. */
  tick() {
    if (!this.shown || !this.node) return;
    tickChips(this.chipsNode, this.shown);
    const age = this.node.querySelector(".age");
    if (age) age.textContent = t("incident.age", { d: formatDuration(serverNow() - this.shown.received_at) });
  }
}
