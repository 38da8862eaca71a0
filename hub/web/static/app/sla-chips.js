// Countdown chips for an incident's response targets (e.g. 1-2-3-5-8 minutes of `rapid_12358`):
// pending chips count down to their deadline, turn green when the milestone is met in time and red
// when the deadline passes or the milestone came late. They tick locally every second.

import { formatCountdown, serverNow } from "./clock.js";
import { el, fill } from "./dom.js";
import { t, term } from "./i18n.js";
import { targetClock, targetState } from "./sla.js";

/** Chips for `incident.sla` into `node`, keyed by milestone so a tick only rewrites text. */
export function renderChips(node, incident) {
  const targets = incident.sla || [];
  if (!targets.length) {
    fill(node, el("div", { class: "empty" }, t("incident.noSla")));
    return;
  }
  fill(node, targets.map((target) => el("div", {
    class: "sla-chip", dataset: { testid: "sla-chip", milestone: target.milestone },
    title: `${term("ms", target.milestone)} ≤ ${formatTarget(target.seconds)}`,
  },
  el("span", { class: "chip-name" }, term("ms", target.milestone)),
  el("span", { class: "chip-target" }, formatTarget(target.seconds)),
  el("span", { class: "chip-clock" }))));
  tickChips(node, incident);
}

export function tickChips(node, incident, now = serverNow()) {
  const byMilestone = new Map((incident.sla || []).map((target) => [target.milestone, target]));
  for (const chip of node.querySelectorAll(".sla-chip")) {
    const target = byMilestone.get(chip.dataset.milestone);
    if (!target) continue;
    const state = targetState(target, now);
    if (chip.dataset.state !== state) chip.dataset.state = state;
    const ms = targetClock(target, now);
    let text;
    if (state === "met") text = `✓ ${formatCountdown(target.actual - (target.deadline - target.seconds * 1000))}`;
    else if (state === "missed") text = target.actual != null
      ? `✗ ${formatCountdown(target.actual - (target.deadline - target.seconds * 1000))}`
      : `+${formatCountdown(ms)}`;
    else text = formatCountdown(ms);
    const clock = chip.querySelector(".chip-clock");
    if (clock.textContent !== text) clock.textContent = text;
    chip.setAttribute("aria-label", `${term("ms", target.milestone)} ${t(`chip.${state === "pending" ? "left" : state}`)} ${text}`);
  }
}

/** 60 -> 1′, 90 -> 1′30″, 86400 -> 24h. */
function formatTarget(seconds) {
  if (seconds >= 3600 && seconds % 3600 === 0) return `${seconds / 3600}h`;
  const m = Math.floor(seconds / 60), s = seconds % 60;
  return s ? `${m}′${s}″` : `${m}′`;
}
