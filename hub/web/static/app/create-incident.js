// Creating an incident where it happens: a dispatcher clicks the spot on the map, picks category and
// priority, writes a line, and the new incident opens with its recommended units. Viewers never get here.

import { api } from "./api.js";
import { el, fill } from "./dom.js";
import { KNOWN_CATEGORIES, categoryName, t } from "./i18n.js";
import * as store from "./store.js";
import { toast } from "./toast.js";

export class CreateIncident {
  constructor(host, map) {
    this.host = host;
    this.map = map;
    this.pin = null;
    this.at = null;
  }

  open(latlng) {
    this.at = latlng;
    if (this.pin) this.pin.setLatLng(latlng);
    else {
      this.pin = L.marker(latlng, { interactive: false, keyboard: false,
        icon: L.divIcon({ className: "new-pin", html: "<span></span>", iconSize: [22, 22] }) }).addTo(this.map);
    }
    const lastCategory = this.host.querySelector("[data-testid=new-category]");
    const keep = lastCategory ? lastCategory.value : "theft";
    const form = el("form", { class: "new-incident card", dataset: { testid: "new-incident" },
      onsubmit: (ev) => { ev.preventDefault(); this.submit(form); },
      onkeydown: (ev) => { if (ev.key === "Escape") this.close(); } },
    el("h3", null, t("new.title")),
    el("div", { class: "muted" }, t("new.where", { lat: latlng.lat.toFixed(5), lon: latlng.lng.toFixed(5) })),
    el("label", null, t("new.category"),
      el("select", { name: "category", dataset: { testid: "new-category" } },
        KNOWN_CATEGORIES.map((c) => el("option", { value: c, selected: c === keep }, categoryName(c))))),
    el("label", null, t("new.priority"),
      el("select", { name: "priority", dataset: { testid: "new-priority" } },
        [1, 2, 3, 4].map((p) => el("option", { value: String(p), selected: p === 2 }, t(`prio.name.${p}`))))),
    el("label", null, t("new.summary"),
      el("input", { name: "summary", maxlength: "4000", dataset: { testid: "new-summary" }, autocomplete: "off" })),
    el("label", null, t("new.address"), el("input", { name: "address", maxlength: "500", autocomplete: "off" })),
    el("div", { class: "actions" },
      el("button", { class: "btn btn-primary", type: "submit", dataset: { testid: "new-submit" } }, t("new.submit")),
      el("button", { class: "btn", type: "button", onclick: () => this.close() }, t("new.cancel"))));
    fill(this.host, form);
    this.host.hidden = false;
    form.elements.summary.focus();
  }

  close() {
    fill(this.host);
    this.host.hidden = true;
    if (this.pin) { this.pin.remove(); this.pin = null; }
  }

  async submit(form) {
    const button = form.querySelector("[data-testid=new-submit]");
    button.disabled = true;
    const body = {
      category: form.elements.category.value,
      priority: Number(form.elements.priority.value),
      lat: Math.round(this.at.lat * 1e7) / 1e7,
      lon: Math.round(this.at.lng * 1e7) / 1e7,
      summary: form.elements.summary.value.trim(),
      address: form.elements.address.value.trim(),
    };
    try {
      const view = await api("/api/v1/incidents", { method: "POST", body });
      this.close();
      store.putIncident(view);
      store.select("incident", view.id);
      toast(t("new.created", { id: view.id }), "info");
    } catch {
      button.disabled = false;  // shown by api(); the form keeps what was typed
    }
  }
}
