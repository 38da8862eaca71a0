// The open incidents, most urgent first and then longest waiting, each with its next deadline ticking.
// Rows are kept by id and updated in place, so one under the pointer is never swapped out.

import { formatCountdown, formatDuration, serverNow } from "./clock.js";
import { el, fill } from "./dom.js";
import { PRIORITY_COLOURS } from "./incident-layer.js";
import { categoryName, t, term } from "./i18n.js";
import { missedTargets, nextPending, unackedAssignments } from "./sla.js";
import * as store from "./store.js";

export class IncidentList {
  constructor(listNode, countNode, { pick }) {
    this.node = listNode;
    this.pick = pick;
    this.countNode = countNode;
    this.rows = new Map();   // id -> {row, view}
  }

  render() {
    const open = store.openIncidents();
    this.countNode.textContent = t("incidents.count", { n: open.length });
    const keep = new Set(open.map((inc) => inc.id));
    for (const [id, item] of this.rows) if (!keep.has(id)) { item.row.remove(); this.rows.delete(id); }
    const empty = this.node.querySelector(".empty");
    if (!open.length) { if (!empty) fill(this.node, el("div", { class: "empty" }, t("incidents.empty"))); return; }
    if (empty) empty.remove();
    open.forEach((inc, i) => {
      let item = this.rows.get(inc.id);
      if (!item) {
        item = { row: el("button", { type: "button", class: "incident-item", onclick: () => this.pick(inc.id) }) };
        this.rows.set(inc.id, item);
      }
      if (item.view !== inc || item.lang !== document.documentElement.lang) this.fillRow(item, inc);
      item.row.classList.toggle("selected", store.selection.incident === inc.id);
      if (this.node.children[i] !== item.row) this.node.insertBefore(item.row, this.node.children[i] || null);
    });
    this.tick();
  }

  fillRow(item, inc) {
    item.view = inc;
    item.lang = document.documentElement.lang;
    const row = item.row;
    Object.assign(row.dataset, { testid: "incident-item", incidentId: inc.id, priority: String(inc.priority) });
    const units = (inc.assignments || []).filter(store.isActiveAssignment);
    fill(row,
      el("span", { class: "prio-badge", style: `background:${PRIORITY_COLOURS[inc.priority] || "#888"}` }, t(`prio.${inc.priority}`)),
      el("span", { class: "item-main" },
        el("span", { class: "item-title" }, categoryName(inc.category), el("span", { class: "muted" }, ` ${inc.id}`)),
        el("span", { class: "item-sub" }, inc.summary || inc.address || ""),
        el("span", { class: "item-units" }, units.map((a) => el("span", { class: `unit-tag status-${a.status}` },
          `${a.unit_id} · ${term("status", a.status)}`)))),
      el("span", { class: "item-side" }, el("span", { class: "age" }), el("span", { class: "next" })));
  }

  /** Once a second: ages, the next deadline, alarm looks. */
  tick() {
    const now = serverNow();
    for (const { row, view } of this.rows.values()) {
      if (!view) continue;
      row.querySelector(".age").textContent = formatDuration(now - view.received_at);
      const next = nextPending(view, now);
      const missed = missedTargets(view, now).length;
      const nextNode = row.querySelector(".next");
      nextNode.textContent = next ? `${term("ms", next.milestone)} ${formatCountdown(next.deadline - now)}`
        : missed ? `✗ ${missed}` : "";
      nextNode.dataset.state = next ? (next.deadline - now < 30000 ? "soon" : "pending") : missed ? "missed" : "done";
      row.classList.toggle("breach", missed > 0);
      row.classList.toggle("unacked", unackedAssignments(view, now).length > 0);
    }
  }
}
