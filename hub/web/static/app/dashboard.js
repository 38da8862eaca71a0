// The response-time view: for a chosen period, the share of incidents meeting each milestone's target
// and the p50/p90 time to each milestone (from the reports API), as charts and a table; incidents
// diverted to the 12345 hotline are counted apart (they have no police targets).
// Chart.js is loaded the first time this view opens: the map does not pay for it.

import { api, query } from "./api.js";
import { formatCountdown } from "./clock.js";
import { byTestId, el, fill } from "./dom.js";
import { categoryName, t, term } from "./i18n.js";

const MILESTONES = ["dispatched", "acknowledged", "departed", "contacted", "supported", "arrived", "cleared"];
const DAY_MS = 86400000;
let chartLib = null;

function loadChartJs() {
  if (!chartLib) {
    chartLib = new Promise((resolve, reject) => {
      if (window.Chart) { resolve(window.Chart); return; }
      const script = document.createElement("script");
      script.src = "/static/vendor/chart.js/chart.umd.js";
      script.onload = () => resolve(window.Chart);
      script.onerror = () => { chartLib = null; reject(new Error("chart.js did not load")); };
      document.head.append(script);
    });
  }
  return chartLib;
}

const dateValue = (ms) => {
  const d = new Date(ms);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
};

export class Dashboard {
  constructor(root) {
    this.root = root;
    this.from = byTestId("dash-from", root);
    this.to = byTestId("dash-to", root);
    this.group = byTestId("dash-group", root);
    this.charts = {};
    this.report = null;
    this.setPeriod(7);
    root.querySelector(".dash-controls").addEventListener("submit", (ev) => { ev.preventDefault(); this.load(); });
    for (const input of [this.from, this.to, this.group]) input.addEventListener("change", () => this.load());
    for (const button of root.querySelectorAll("[data-days]")) {
      button.addEventListener("click", () => { this.setPeriod(Number(button.dataset.days)); this.load(); });
    }
  }

  /** The last `days` days, today included. */
  setPeriod(days) {
    const today = new Date();
    this.to.value = dateValue(today.getTime());
    this.from.value = dateValue(today.getTime() - (days - 1) * DAY_MS);
  }

  range() {
    // Whole local days: from the first day's midnight to the end of the last day.
    const from = new Date(`${this.from.value}T00:00:00`).getTime();
    const to = new Date(`${this.to.value}T00:00:00`).getTime() + DAY_MS - 1;
    return { from: Number.isFinite(from) ? from : Date.now() - 7 * DAY_MS, to: Number.isFinite(to) ? to : Date.now() };
  }

  async load() {
    const { from, to } = this.range();
    this.root.querySelector(".dash-status").textContent = t("dash.loading");
    let report;
    try {
      [report] = await Promise.all([
        api(`/api/v1/reports/response-times${query({ from, to, group_by: this.group.value })}`),
        loadChartJs(),
      ]);
    } catch (exc) {
      this.root.querySelector(".dash-status").textContent = exc.message;
      return;
    }
    this.report = report;
    this.render();
  }

  render() {
    const report = this.report;
    if (!report || !window.Chart) return;
    const overall = report.overall || { incidents: 0, milestones: {} };
    const ms = (name) => overall.milestones[name] || {};
    this.root.querySelector(".dash-status").textContent = overall.incidents ? "" : t("dash.empty");
    const total = report.diverted && report.diverted.total ? report.diverted.total : { count: 0, handed_over: 0 };
    fill(this.root.querySelector(".dash-cards"),
      this.card(t("dash.incidents"), String(overall.incidents)),
      this.card(t("dash.diverted"), String(total.count), t("dash.handedOver", { n: total.handed_over })),
      ...["dispatched", "arrived"].map((name) => this.card(`${term("ms", name)} ${t("dash.rate")}`,
        ms(name).compliance == null ? "—" : `${Math.round(ms(name).compliance * 100)}%`,
        ms(name).p50 == null ? "" : `p50 ${formatCountdown(ms(name).p50 * 1000)}`)));
    const labels = MILESTONES.map((name) => term("ms", name));
    this.chart("compliance", {
      type: "bar",
      data: { labels, datasets: [{ label: t("dash.rate"), data: MILESTONES.map((n) => ms(n).compliance == null ? null
        : Math.round(ms(n).compliance * 1000) / 10), backgroundColor: MILESTONES.map((n) => compColour(ms(n).compliance)) }] },
      options: { scales: { y: { min: 0, max: 100, ticks: { callback: (v) => `${v}%` } } }, plugins: { legend: { display: false } } },
    });
    // Seconds while every p90 is under 3 minutes (a fast centre's dispatch and acknowledgment), else minutes.
    const slowest = Math.max(0, ...MILESTONES.map((n) => ms(n).p90 || 0));
    const perUnit = slowest < 180 ? 1 : 60;
    const scaled = (v) => v == null ? null : Math.round((v / perUnit) * 100) / 100;
    this.chart("times", {
      type: "bar",
      data: { labels, datasets: [
        { label: "p50", data: MILESTONES.map((n) => scaled(ms(n).p50)), backgroundColor: "#3d8bfd", minBarLength: 2 },
        { label: "p90", data: MILESTONES.map((n) => scaled(ms(n).p90)), backgroundColor: "#a970ff", minBarLength: 2 }] },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: t(perUnit === 1 ? "dash.sec" : "dash.min") } } } },
    });
    this.table(report);
  }

  card(title, value, sub) {
    return el("div", { class: "dash-card" }, el("div", { class: "muted" }, title), el("div", { class: "big" }, value),
      sub && el("div", { class: "muted" }, sub));
  }

  chart(name, config) {
    const Chart = window.Chart;
    Chart.defaults.color = "#aab6c3";
    Chart.defaults.borderColor = "rgba(255,255,255,0.08)";
    config.options = { ...config.options, responsive: true, maintainAspectRatio: false, animation: false };
    if (this.charts[name]) this.charts[name].destroy();
    this.charts[name] = new Chart(byTestId(`chart-${name}`, this.root), config);
  }

  table(report) {
    const groups = Object.entries(report.groups || {}).sort((a, b) => b[1].incidents - a[1].incidents);
    const label = (key) => report.group_by === "category" ? categoryName(key) : key;
    const cell = (s) => !s || !s.count ? el("td", { class: "muted" }, "—") : el("td", null,
      s.compliance != null && el("b", null, `${Math.round(s.compliance * 100)}% `),  // null: no target for it
      el("span", { class: "muted" }, `${formatCountdown(s.p50 * 1000)} / ${formatCountdown(s.p90 * 1000)} · n=${s.count}`));
    const row = (name, g, cls) => el("tr", { class: cls }, el("th", null, name), el("td", null, String(g.incidents)),
      MILESTONES.map((m) => cell(g.milestones[m])));
    const diverted = (report.diverted && report.diverted.groups) || {};
    fill(this.root.querySelector(".dash-table"), el("table", { class: "report", dataset: { testid: "dash-table" } },
      el("thead", null, el("tr", null, el("th", null, t("dash.group.col")), el("th", null, t("dash.incidents")),
        MILESTONES.map((m) => el("th", null, term("ms", m))), el("th", null, t("dash.diverted")))),
      el("tbody", null,
        groups.map(([key, g]) => { const r = row(label(key), g); r.append(el("td", null, String(diverted[key] ? diverted[key].count : 0))); return r; }),
        (() => { const r = row(t("dash.overall"), report.overall, "total");
          r.append(el("td", null, String(report.diverted && report.diverted.total ? report.diverted.total.count : 0))); return r; })())));
  }

  /** The view became visible (or the language changed). */
  show() { if (this.report) this.render(); else this.load(); }
}

function compColour(c) {
  if (c == null) return "#5b6470";
  return c >= 0.9 ? "#2fbf71" : c >= 0.7 ? "#f2b233" : "#ff4d4f";
}
