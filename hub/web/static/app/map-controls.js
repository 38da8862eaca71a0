// The bar over the map: layer switches, the heatmap's time window, filters (unit status and kind,
// incident category) and the legend. It writes the choices into the store and says what changed.

import { byTestId, el, fill } from "./dom.js";
import { KNOWN_CATEGORIES, categoryName, t, term } from "./i18n.js";
import * as store from "./store.js";
import { STATUSES, UNIT_KINDS, swatch } from "./unit-style.js";

export class MapControls {
  /** `onLayer(name, on)`, `onFilter()`, `onHeatWindow(name)`. */
  constructor(root, { onLayer, onFilter, onHeatWindow }) {
    this.root = root;
    this.kinds = new Set(UNIT_KINDS);
    this.categories = new Set(KNOWN_CATEGORIES);
    for (const box of root.querySelectorAll("[data-testid=layer-toggle]")) {
      box.checked = !!store.layers[box.dataset.layer];
      box.addEventListener("change", () => {
        store.layers[box.dataset.layer] = box.checked;
        onLayer(box.dataset.layer, box.checked);
      });
    }
    this.status = byTestId("filter-status", root);
    this.kind = byTestId("filter-kind", root);
    this.category = byTestId("filter-category", root);
    for (const [select, key] of [[this.status, "status"], [this.kind, "kind"], [this.category, "category"]]) {
      select.addEventListener("change", () => { store.filters[key] = select.value; onFilter(); });
    }
    this.heatWindow = root.querySelector(".heat-window");
    this.heatWindow.addEventListener("change", () => onHeatWindow(this.heatWindow.value));
    this.render();
  }

  /** New kinds or categories seen in the feed get into the filters (only when the set grew: an open select stays open). */
  learn() {
    let grew = false;
    for (const u of store.units.values()) if (u.kind && !this.kinds.has(u.kind)) { this.kinds.add(u.kind); grew = true; }
    for (const i of store.incidents.values()) {
      if (i.category && !this.categories.has(i.category)) { this.categories.add(i.category); grew = true; }
    }
    if (grew) this.render();
  }

  render() {
    const options = (select, all, values, label) => {
      const keep = select.value;
      fill(select, el("option", { value: "" }, t(all)), [...values].map((v) => el("option", { value: v }, label(v))));
      select.value = keep;
    };
    options(this.status, "filter.allStatus", STATUSES, (s) => term("status", s));
    options(this.kind, "filter.allKinds", this.kinds, (k) => term("kind", k));
    options(this.category, "filter.allCategories", this.categories, categoryName);
    for (const option of this.heatWindow.options) option.textContent = t(`window.${option.value}`);
    fill(this.root.querySelector(".legend"), STATUSES.filter((s) => s !== "out_of_service").map((s) =>
      el("span", { class: "legend-item" }, swatch(s, "foot", 12), term("status", s))),
    el("span", { class: "legend-item" }, swatch("available", "patrol", 12), term("kind", "patrol")),
    el("span", { class: "legend-item" }, swatch("available", "drone", 12), term("kind", "drone")));
  }
}
