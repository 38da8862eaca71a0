// The one-map page, composed in one place. This module holds the path to the first paint of the
// snapshot (sign-in, map, base layer, unit canvas, live feed); everything else (panels, lists,
// layers of incidents and alerts, dashboard) loads right after, from command-views.js. Test hooks live
// in `window.fieldhub` (web/CONTRACT.md).

import { api } from "./api.js";
import { createMap, loadBase } from "./base-map.js";
import { byTestId } from "./dom.js";
import { startFrameLoop } from "./frame-loop.js";
import { currentLang, onLangChange, setLang, t, translateStatic } from "./i18n.js";
import { LiveFeed } from "./live.js";
import { askForToken, canAct, loadToken, setToken, signOut, signedOutMessage, who } from "./session.js";
import * as store from "./store.js";
import { UnitLayer } from "./unit-layer.js";

const hooks = window.fieldhub = {
  ready: false, connected: false, role: "unknown", lang: currentLang(),
  stats: { fps: 0, drawsPerSecond: 0, snapshotMs: null, wsBytes: 0, wsMessages: 0, unitsDrawn: 0, lastFrameMs: 0 },
  map: null, units: store.units, incidents: store.incidents, drones: store.drones,
};
const frames = startFrameLoop(hooks.stats);

async function signIn() {
  translateStatic(document);
  if (loadToken()) return;
  setToken(await askForToken(signedOutMessage()));
}

/** The role decides whether action buttons exist. A hub without /me (older) cannot say: show the
 * actions and let the hub refuse what the token may not do (the refusal is shown). */
async function learnRole() {
  const me = await api("/api/v1/me", { optional: true }).catch(() => undefined);
  if (me === undefined) return;  // the error is on screen; stay view-only
  who.guessed = me === null;
  if (me === null) { who.role = "dispatcher"; who.name = ""; }
  else { who.role = me.role; who.name = me.name || ""; }
  hooks.role = me === null ? "unknown" : who.role;
  document.body.classList.toggle("can-act", canAct());
  document.querySelector(".who-name").textContent = who.name;
  document.querySelector(".role-badge").textContent = me === null ? "" : t(`role.${who.role}`);
}

function setConnection(state) {
  const node = byTestId("conn");
  node.dataset.state = state;
  node.querySelector(".conn-text").textContent = t(`conn.${state}`);
}

// Alarms (SOS, missed targets, unsigned dispatches) flash with this class, not with CSS animations
// (see app.css): two repaints a second instead of sixty.
const BLINK_MS = 500;

function wireChrome() {
  setInterval(() => document.body.classList.toggle("blink"), BLINK_MS);
  byTestId("lang-toggle").addEventListener("click", () => setLang(currentLang() === "zh-CN" ? "en" : "zh-CN"));
  document.querySelector(".logout").addEventListener("click", () => signOut());
  onLangChange((lang) => {
    hooks.lang = lang;
    setConnection(byTestId("conn").dataset.state);
    document.querySelector(".role-badge").textContent = hooks.role === "unknown" ? "" : t(`role.${hooks.role}`);
  });
}

async function main() {
  await signIn();
  document.body.classList.remove("booting");
  wireChrome();
  const map = createMap(byTestId("map"));
  hooks.map = map;
  const unitLayer = new UnitLayer({ stats: hooks.stats });
  unitLayer.setFilter(store.drawnAsUnit);  // drones with a drone view: drawn by the drone layer
  store.onUnitDeltas((views, replace) => unitLayer.apply(views, replace));
  map.whenReady(() => unitLayer.addTo(map));
  setInterval(() => unitLayer.markDirty(), 1000);  // time alone turns fixes stale

  // `ready` once the first snapshot is drawn and the views around it are wired.
  let drawn = false, wired = false;
  const settle = () => { if (drawn && wired) hooks.ready = true; };
  frames.add((now) => {
    const drew = unitLayer.frame(now);
    if (drew && !drawn && hooks.connected) {
      drawn = true;
      hooks.stats.snapshotMs = Math.round(performance.now());
      settle();
    }
    return drew;
  });
  const live = new LiveFeed(hooks, { onState: setConnection, onSnapshot: () => unitLayer.markDirty() });
  setConnection("connecting");
  live.connect();
  loadBase(map).catch((exc) => console.error("fieldhub: base map", exc));
  const role = learnRole();

  const { wireCommandViews } = await import("./command-views.js");
  const refresh = wireCommandViews(map, unitLayer);
  const { wireVideo } = await import("./video-wall.js");
  wireVideo(map, document.querySelector(".map-wrap"), hooks);
  role.then(refresh);
  wired = true;
  settle();
}

main();
