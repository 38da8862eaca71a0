// One drone: state, and while it may not be sent the hub's reason in its own words with the fixes it offers
// (return to the dock, enable the link failsafe: buttons for drone operators and admins); flight mode, armed,
// altitude, speed, battery, link, signing (an "UNSIGNED" badge for a drone let in without MAVLink 2 signing),
// the link failsafe the autopilot will really apply, pre-arm health, telemetry set-up, home against the dock,
// the drone's clock offset and reboots, the mission's progress ("item 3/6"), the incident it flies for, and
// the autopilot's latest status texts (newest first, errors in red). For drone operators and admins its
// commands: go to a point picked on the map (at an altitude, 60 m unless changed), return to its dock, land
// where it is. Each command's answer (or the hub's refusal: link lost, drone refused, role) is a toast.

import { api } from "./api.js";
import { formatClock, formatDuration, serverNow } from "./clock.js";
import { el, fill } from "./dom.js";
import { droneColour, metres, needsAttention } from "./drone-layer.js";
import { categoryName, t, term } from "./i18n.js";
import { canFly } from "./session.js";
import * as store from "./store.js";
import { toast } from "./toast.js";
import { videoSlot } from "./video-wall.js";

const DEFAULT_ALT_M = 60;
const MIN_ALT_M = 5;
const MAX_ALT_M = 500;
const GOTO_REACHED_M = 15;   // the go-to pin goes once the drone is this near it
const ERROR_SEVERITY = 3;    // STATUSTEXT severity 0..3 (emergency..error) is shown in red
// The fixes the hub offers for a drone that may not be sent (view.actions) -> the endpoint under the drone.
const ACTION_PATHS = { return_to_dock: "return", enable_failsafe: "failsafe" };

export class DronePanel {
  constructor(host, map) {
    this.host = host;
    this.map = map;
    this.droneId = null;
    this.parts = null;       // the panel's nodes, built once per drone (buttons stay put under the pointer)
    this.picking = false;    // the next map click is the go-to point
    this.alt = DEFAULT_ALT_M;
    this.pin = null;         // where the last go-to sent the drone
    document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && this.picking) this.setPicking(false); });
  }

  update() {
    const id = store.selection.drone;
    if (id !== this.droneId) {
      this.setPicking(false);
      this.dropPin();
      this.droneId = id;
      this.parts = null;
    }
    this.render();
  }

  render() {
    const id = this.droneId;
    const view = id && store.drones.get(id);
    if (!view) { this.setPicking(false); fill(this.host); this.host.hidden = true; this.parts = null; return; }
    this.host.hidden = false;
    if (!this.parts || this.parts.id !== id || this.parts.lang !== document.documentElement.lang) this.build(id);
    const p = this.parts;
    const pos = view.position;
    Object.assign(p.section.dataset, { state: view.state || "", link: view.link || "unknown" });
    p.dot.style.background = droneColour(view);
    p.name.textContent = view.name || id;
    p.state.textContent = term("droneState", view.state);
    p.state.style.color = droneColour(view);
    p.unsigned.hidden = (view.signing || "signed") !== "unsigned";
    p.sub.textContent = `${id}${view.system_id != null ? ` · MAVLink ${view.system_id}` : ""} · ${term("kind", "drone")}`;
    p.reason.hidden = !view.reason;
    p.reason.textContent = view.reason || "";   // the hub's words, verbatim
    p.reason.classList.toggle("attention", needsAttention(view));
    this.renderActions(view);
    fill(p.facts, this.facts(view));
    this.renderTexts(view.texts);
    if (this.pin && pos && metres([pos.lat, pos.lon], [this.pin.getLatLng().lat, this.pin.getLatLng().lng]) < GOTO_REACHED_M) this.dropPin();
  }

  /** The panel's facts, as <dt>/<dd> pairs. */
  facts(view) {
    const id = view.drone_id;
    const pos = view.position;
    const badLink = view.link === "lost" || view.link === "signed_no_key" || String(view.link || "").startsWith("refused");
    const signing = view.signing || "signed";
    const incidentId = (view.mission && view.mission.incident_id) || (store.assignmentOf(id) || {}).id;
    const incident = incidentId && store.incidents.get(incidentId);
    const pct = view.battery_pct;
    const fact = (label, dd) => [el("dt", null, label), dd];
    return [
      fact(t("drone.link"), el("dd", { class: badLink ? "bad" : view.link === "ok" ? "ok" : "warn", dataset: { testid: "drone-link" } },
        term("droneLink", view.link || "unknown"),
        view.updated_at ? el("span", { class: "muted" }, ` · ${t("unit.ago", { d: formatDuration(serverNow() - view.updated_at) })}`) : "")),
      fact(t("drone.signing"), el("dd", { class: signing === "signed" ? "ok" : signing === "unsigned" ? "warn" : "bad",
        dataset: { testid: "drone-signing", signing }, title: signing === "unsigned" ? t("drone.unsignedHint") : "" },
        term("droneSigning", signing))),
      fact(t("drone.failsafe"), this.failsafe(view.failsafe)),
      fact(t("drone.prearm"), this.prearm(view.prearm)),
      fact(t("drone.telemetry"), this.telemetry(view.telemetry)),
      fact(t("drone.mode"), el("dd", null, view.mode || "—",
        view.landed ? el("span", { class: "muted" }, ` · ${term("landed", view.landed)}`) : "",
        el("span", { class: view.armed ? "warn" : "muted" }, ` · ${t(view.armed ? "drone.armed.yes" : "drone.armed.no")}`))),
      fact(t("drone.alt"), el("dd", { class: pos && pos.stale ? "muted" : "", dataset: { testid: "drone-alt", stale: pos && pos.stale ? "true" : "false" } },
        pos && pos.alt_m != null ? `${Math.round(pos.alt_m)} m` : t("unit.noFix"),
        pos && pos.stale ? ` · ${t("drone.staleFix")}` : "")),
      fact(t("unit.speed"), el("dd", null, pos && pos.speed != null
        ? `${pos.speed.toFixed(1)} m/s · ${Math.round(pos.speed * 3.6)} km/h` : "—",
      pos && pos.heading != null ? el("span", { class: "muted", title: t("unit.heading") }, ` · ${Math.round(pos.heading)}°`) : "")),
      fact(t("unit.battery"), el("dd", null, pct != null
        ? el("span", { class: `battery${pct < 25 ? " warn" : ""}`, dataset: { testid: "drone-battery" } },
          el("span", { class: "bar" }, el("i", { style: `width:${Math.max(0, Math.min(100, pct))}%` })), `${Math.round(pct)}%`)
        : "—")),
      fact(t("drone.dock"), el("dd", null, (view.dock && view.dock.name) || "—", " · ", this.home(view.home))),
      fact(t("drone.clock"), this.clock(view)),
      fact(t("drone.incident"), el("dd", { dataset: { testid: "drone-incident" } }, incidentId
        ? el("button", { class: "link", type: "button", onclick: () => store.select("incident", incidentId) },
          `${incident ? `${categoryName(incident.category)} ` : ""}${incidentId}`)
        : t("unit.noAssignment"))),
      view.mission && fact(t("drone.mission"), this.mission(view.mission)),
    ];
  }

  failsafe(f) {
    if (!f) return el("dd", { class: "muted" }, "—");
    const cls = f.ok ? "ok" : f.known ? "bad-text" : "warn";
    return el("dd", { class: `small ${cls}`, dataset: { testid: "drone-failsafe", ok: String(!!f.ok), known: String(!!f.known) } },
      f.text || (f.ok ? t("drone.failsafe.ok") : t("drone.failsafe.none")));
  }

  prearm(pa) {
    const ok = pa ? pa.ok : null;
    const words = ok === true ? t("drone.prearm.ok") : ok === false ? (pa.text || t("drone.prearm.failing"))
      : t("drone.prearm.unknown");
    return el("dd", { class: ok === true ? "ok" : ok === false ? "bad" : "muted",
      dataset: { testid: "drone-prearm", ok: ok == null ? "unknown" : String(ok) } }, words);
  }

  /** The hub's telemetry set-up: its problem in words, else how many of the requested messages arrive
   *  (each message's status in the tooltip). */
  telemetry(tm) {
    const problem = tm && tm.problem;
    const messages = tm && tm.messages ? Object.entries(tm.messages) : [];
    return el("dd", { class: problem ? "bad" : messages.length ? "ok" : "muted",
      dataset: { testid: "drone-telemetry", problem: problem ? "true" : "false" },
      title: messages.map(([name, status]) => `${name}: ${status}`).join("\n") },
    problem || (messages.length ? t("drone.telemetry.ok", {
      n: messages.filter(([, status]) => status === "ok").length, of: messages.length }) : "—"));
  }

  /** Where home (where RTL lands) is against the dock. */
  home(h) {
    if (!h) return el("span", { class: "muted", dataset: { testid: "drone-home" } }, t("drone.home.unknown"));
    const d = Math.round(h.dock_distance_m ?? NaN);
    return el("span", { class: h.at_dock ? "ok" : "warn", dataset: { testid: "drone-home", atDock: String(!!h.at_dock) } },
      h.at_dock ? t("drone.home.atDock") : Number.isFinite(d) ? t("drone.home.away", { d }) : t("drone.home.unknown"));
  }

  clock(view) {
    const offset = view.clock && view.clock.offset_ms;
    const text = offset == null ? "—" : `${offset > 0 ? "+" : offset < 0 ? "−" : "±"}${Math.abs(Math.round(offset))} ms`;
    return el("dd", { dataset: { testid: "drone-clock" } }, text,
      view.reboots ? el("span", { class: "warn" }, ` · ${t("drone.reboots", { n: view.reboots })}`) : "");
  }

  mission(m) {
    const pr = m.progress;
    return el("dd", { dataset: { testid: "drone-mission", kind: m.kind || "" } }, term("missionKind", m.kind || "dispatch"),
      pr && pr.total != null ? el("span", { class: "progress", dataset: { testid: "drone-progress" } },
        ` · ${t("drone.progress", { c: pr.current ?? 0, n: pr.total })}`) : "");
  }

  /** The autopilot's status texts (STATUSTEXT), newest first; errors and worse in red. */
  renderTexts(texts) {
    const list = Array.isArray(texts) ? [...texts].reverse() : [];
    const p = this.parts;
    p.textsHead.hidden = !list.length;
    fill(p.texts, list.map((x) => el("li", {
      class: `drone-text${x.severity != null && x.severity <= ERROR_SEVERITY ? " bad" : ""}`,
      dataset: { testid: "drone-text", severity: String(x.severity ?? "") } },
    el("span", { class: "muted" }, formatClock(x.ts)), el("span", null, x.text || ""))));
  }

  /** The fixes the hub offers (view.actions), for those who fly drones; rebuilt only when the offer changes. */
  renderActions(view) {
    const p = this.parts;
    const offered = canFly() && Array.isArray(view.actions) ? view.actions.filter((a) => ACTION_PATHS[a]) : [];
    const key = offered.join(" ");
    if (key === p.actionsKey) return;
    p.actionsKey = key;
    p.actions.hidden = !offered.length;
    fill(p.actions, offered.map((action) => el("button", { class: "btn btn-primary", type: "button",
      dataset: { testid: "drone-action", action }, onclick: (ev) => this.fix(action, ev.currentTarget) },
    t(`drone.action.${action}`))));
  }

  async fix(action, button) {
    const id = this.droneId;
    if (!id) return;
    const what = t(`drone.action.${action}`);
    button.disabled = true;
    try {
      const answer = await api(`/api/v1/drones/${encodeURIComponent(id)}/${ACTION_PATHS[action]}`,
        { method: "POST", body: {}, quiet: true });
      toast(t("drone.accepted", { id, c: what, r: (answer && answer.result) || "accepted" })
        + (answer && answer.failsafe ? ` — ${answer.failsafe}` : ""), "info");
    } catch (err) {
      if (err.status !== 401) toast(t("drone.refused", { id, c: what, m: err.message }));
    } finally {
      button.disabled = false;
    }
  }

  build(id) {
    const p = {
      id, lang: document.documentElement.lang,
      dot: el("span", { class: "drone-dot" }), state: el("span", { class: "status" }), sub: el("div", { class: "muted" }),
      unsigned: el("span", { class: "status warn", dataset: { testid: "drone-unsigned" }, title: t("drone.unsignedHint"),
        hidden: true }, t("drone.unsigned")),
      name: el("button", { class: "link title", type: "button", onclick: () => this.focus() }),
      reason: el("div", { class: "drone-reason", dataset: { testid: "drone-reason" }, hidden: true }),
      actions: el("div", { class: "actions drone-actions", dataset: { testid: "drone-actions" }, hidden: true }),
      actionsKey: null,
      facts: el("dl", { class: "facts" }),
      textsHead: el("h4", { hidden: true }, t("drone.texts")),
      texts: el("ul", { class: "drone-texts", dataset: { testid: "drone-texts" } }),
    };
    p.section = el("section", { class: "drone-panel unit-panel", dataset: { testid: "drone-panel", droneId: id } },
      el("header", { class: "panel-head" },
        el("div", { class: "head-line" }, p.dot, p.name, p.state, p.unsigned,
          el("button", { class: "icon-btn", type: "button", title: t("unit.close"), onclick: () => store.select("drone", null) }, "×")),
        p.sub),
      p.reason, p.actions,
      p.facts,
      p.textsHead, p.texts,
      videoSlot("unit", id),
      canFly() && this.commands(p));
    this.parts = p;
    fill(this.host, p.section);
    this.setPicking(this.picking);
  }

  commands(p) {
    p.alt = el("input", { type: "number", min: String(MIN_ALT_M), max: String(MAX_ALT_M), step: "5", value: String(this.alt),
      class: "alt-input", dataset: { testid: "drone-goto-alt" }, title: t("drone.gotoAlt"),
      onchange: () => { this.alt = this.altitude(); } });
    p.goto = el("button", { class: "btn btn-primary", type: "button", dataset: { testid: "drone-goto" },
      onclick: () => this.setPicking(!this.picking) }, t("drone.goto"));
    p.hint = el("div", { class: "pick-hint", dataset: { testid: "drone-goto-hint" }, hidden: true }, t("drone.pick"));
    return [
      el("h4", null, t("drone.commands")),
      el("div", { class: "actions" },
        p.goto, el("label", { class: "alt-label" }, p.alt, " m"),
        el("button", { class: "btn", type: "button", dataset: { testid: "drone-rtl" },
          onclick: (ev) => this.command("rtl", {}, ev.currentTarget) }, t("drone.rtl")),
        el("button", { class: "btn btn-danger", type: "button", dataset: { testid: "drone-land" },
          onclick: (ev) => this.command("land", {}, ev.currentTarget) }, t("drone.land"))),
      p.hint,
    ];
  }

  altitude() {
    const v = Number(this.parts && this.parts.alt ? this.parts.alt.value : this.alt);
    return Number.isFinite(v) && v > 0 ? Math.max(MIN_ALT_M, Math.min(MAX_ALT_M, v)) : DEFAULT_ALT_M;
  }

  /** Waiting (or not) for the map click that picks the go-to point. */
  setPicking(on) {
    this.picking = on && !!this.droneId;
    this.map.getContainer().classList.toggle("picking-point", this.picking);
    const p = this.parts;
    if (p && p.goto) { p.goto.classList.toggle("active", this.picking); p.hint.hidden = !this.picking; }
  }

  /** A click on the map: the go-to point while picking one (true: taken), else not this panel's. */
  takeClick(latlng) {
    if (!this.picking) return false;
    this.setPicking(false);
    const alt = this.altitude();
    const lat = Math.round(latlng.lat * 1e7) / 1e7, lon = Math.round(latlng.lng * 1e7) / 1e7;
    this.showPin([lat, lon]);
    this.command("goto", { lat, lon, alt }, this.parts && this.parts.goto, { lat, lon, alt });
    return true;
  }

  async command(name, body, button, at = null) {
    const id = this.droneId;
    if (!id) return;
    if (name !== "goto") this.dropPin();
    const what = t(`drone.cmd.${name}`);
    if (button) button.disabled = true;
    try {
      const answer = await api(`/api/v1/drones/${encodeURIComponent(id)}/${name}`, { method: "POST", body, quiet: true });
      const where = at ? ` (${at.lat.toFixed(5)}, ${at.lon.toFixed(5)}, ${Math.round(at.alt)} m)` : "";
      toast(t("drone.accepted", { id, c: what, r: (answer && answer.result) || "accepted" }) + where, "info");
    } catch (err) {
      if (name === "goto") this.dropPin();
      if (err.status !== 401) toast(t("drone.refused", { id, c: what, m: err.message }));
    } finally {
      if (button) button.disabled = false;
    }
  }

  showPin(latlng) {
    this.dropPin();
    this.pin = L.marker(latlng, { pane: "drones", interactive: false, keyboard: false,
      icon: L.divIcon({ className: "drone-goto-pin", html: "<span data-testid=\"drone-goto-point\"></span>", iconSize: [20, 20] }),
    }).addTo(this.map);
  }

  dropPin() { if (this.pin) { this.pin.remove(); this.pin = null; } }

  focus() {
    const view = store.drones.get(this.droneId);
    const p = view && view.position;
    if (p) this.map.panTo([p.lat, p.lon]);
  }

  /** Once a second: "updated … ago" moves on. */
  tick() { if (this.droneId) this.render(); }
}
