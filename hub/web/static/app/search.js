// Finding a unit, a drone or an incident by id, name, category, summary or address; picking a result
// opens its panel and brings it into view. A drone the hub describes as one is listed as a drone only.

import { el, fill } from "./dom.js";
import { categoryName, t, term } from "./i18n.js";
import * as store from "./store.js";

const MAX_PER_KIND = 8;

export class Search {
  constructor(input, resultsNode, { pick }) {
    this.input = input;
    this.node = resultsNode;
    this.pick = pick;
    input.addEventListener("input", () => this.render());
    input.addEventListener("focus", () => this.render());
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") { this.hide(); input.blur(); }
      if (ev.key === "Enter") {
        const first = this.node.querySelector("[data-testid=search-result]");
        if (first) first.click();
      }
    });
    document.addEventListener("mousedown", (ev) => {
      if (!this.node.contains(ev.target) && ev.target !== input) this.hide();
    });
  }

  hide() { this.node.hidden = true; }

  render() {
    const q = this.input.value.trim().toLowerCase();
    if (!q) { this.hide(); return; }
    const hits = [...this.drones(q), ...this.units(q), ...this.incidents(q)];
    fill(this.node, hits.length ? hits : el("div", { class: "empty" }, t("search.none")));
    this.node.hidden = false;
  }

  units(q) {
    const out = [];
    for (const u of store.units.values()) {
      if (store.drones.has(u.unit_id) || !`${u.unit_id} ${u.name || ""}`.toLowerCase().includes(q)) continue;
      out.push(this.result("unit", u.unit_id, u.name || u.unit_id, `${u.unit_id} · ${term("status", u.status)}`));
      if (out.length >= MAX_PER_KIND) break;
    }
    return out;
  }

  drones(q) {
    const out = [];
    for (const d of store.drones.values()) {
      if (!`${d.drone_id} ${d.name || ""}`.toLowerCase().includes(q)) continue;
      out.push(this.result("drone", d.drone_id, d.name || d.drone_id, `${d.drone_id} · ${term("droneState", d.state)}`));
      if (out.length >= MAX_PER_KIND) break;
    }
    return out;
  }

  incidents(q) {
    const out = [];
    for (const inc of store.incidents.values()) {
      const text = [inc.id, inc.category, categoryName(inc.category), inc.summary, inc.address].join(" ").toLowerCase();
      if (!text.includes(q)) continue;
      out.push(this.result("incident", inc.id, `${categoryName(inc.category)} ${inc.id}`,
        `${term("status", inc.status)} · ${inc.summary || inc.address || ""}`));
      if (out.length >= MAX_PER_KIND) break;
    }
    return out;
  }

  result(kind, id, title, sub) {
    return el("button", {
      class: `search-result kind-${kind}`, type: "button", dataset: { testid: "search-result", kind, id },
      onclick: () => { this.hide(); this.input.value = ""; this.pick(kind, id); },
    }, el("span", { class: "result-kind" }, { unit: "◆", drone: "✜" }[kind] || "▲"), el("span", { class: "result-title" }, title),
    el("span", { class: "muted" }, sub));
  }
}
