// The views a dispatcher works with, wired to the store: incidents on the map and in the list, the
// incident, unit and drone panels, drones on the map, alerts, heatmap, overlays, filters, search, creating an incident by a
// click, and the dashboard behind its tab. Loaded by main.js right after the first-paint path (map,
// units, live feed), so that the snapshot does not wait for them.

import { AlertViews } from "./alerts.js";
import { loadOverlays } from "./base-map.js";
import { CreateIncident } from "./create-incident.js";
import { byTestId } from "./dom.js";
import { DroneLayer, dronePoint } from "./drone-layer.js";
import { DronePanel } from "./drone-panel.js";
import { HeatmapLayer } from "./heatmap-layer.js";
import { onLangChange } from "./i18n.js";
import { IncidentLayer } from "./incident-layer.js";
import { IncidentList } from "./incident-list.js";
import { IncidentPanel } from "./incident-panel.js";
import { MapControls } from "./map-controls.js";
import { Search } from "./search.js";
import { canAct } from "./session.js";
import * as store from "./store.js";
import { UnitPanel } from "./unit-panel.js";

const FOCUS_ZOOM = 16;
const INCIDENT_ZOOM = 15;

/** Build the views around `map` and `unitLayer`; returns `refresh()` (the language or the role changed). */
export function wireCommandViews(map, unitLayer) {
  const focusIncident = (id) => {
    store.select("incident", id);
    const inc = store.incidents.get(id);
    if (inc) map.setView([inc.lat, inc.lon], Math.max(map.getZoom(), INCIDENT_ZOOM));
  };
  const focusUnit = (id) => {
    store.select("unit", id);
    const u = store.units.get(id);
    if (u && u.position) map.setView([u.position.lat, u.position.lon], Math.max(map.getZoom(), FOCUS_ZOOM));
  };
  const focusDrone = (id) => {
    store.select("drone", id);
    const d = store.drones.get(id);
    const at = d && dronePoint(d);
    if (at) map.setView(at, Math.max(map.getZoom(), FOCUS_ZOOM));
  };
  const droneLayer = new DroneLayer(map, { onSelect: (id) => store.select("drone", id) });
  const incidentLayer = new IncidentLayer(map, { onSelect: (id) => store.select("incident", id) });
  const heatmap = new HeatmapLayer(map);
  const alertViews = new AlertViews(map, document.querySelector(".alert-list"), {
    focus: (a) => {
      if (a.incident_id) focusIncident(a.incident_id);
      else if (a.unit_id) focusUnit(a.unit_id);
      else if (a.lat != null) map.setView([a.lat, a.lon], Math.max(map.getZoom(), INCIDENT_ZOOM));
    },
  });
  const overlays = { group: null };
  loadOverlays().then((group) => { overlays.group = group; if (store.layers.overlays) group.addTo(map); });

  const controls = new MapControls(document.querySelector(".toolbar"), {
    onLayer: (name, on) => {
      if (name === "units" || name === "trails") unitLayer.setVisible(name, on);
      if (name === "incidents") incidentLayer.setVisible(on);
      if (name === "drones") droneLayer.setVisible(on);
      if (name === "heatmap") heatmap.setVisible(on);
      if (name === "alerts") { alertViews.setVisible(on); document.body.classList.toggle("hide-alerts", !on); }
      if (name === "overlays" && overlays.group) { if (on) overlays.group.addTo(map); else overlays.group.remove(); }
    },
    onFilter: () => {
      unitLayer.setFilter(store.drawnAsUnit); incidentLayer.sync(); incidentList.render(); droneLayer.sync();
    },
    onHeatWindow: (name) => heatmap.setWindow(name),
  });

  const incidentList = new IncidentList(byTestId("incident-list"), document.querySelector(".incident-count"),
    { pick: focusIncident });
  const incidentPanel = new IncidentPanel(document.querySelector(".incident-panel-host"), {
    onHighlight: (ids) => unitLayer.setHighlighted(ids),
    onFocus: (inc) => map.setView([inc.lat, inc.lon], Math.max(map.getZoom(), INCIDENT_ZOOM)),
  });
  const unitPanel = new UnitPanel(document.querySelector(".unit-panel-host"), map);
  const dronePanel = new DronePanel(document.querySelector(".drone-panel-host"), map);
  const creator = new CreateIncident(document.querySelector(".new-incident-host"), map);
  new Search(byTestId("search"), document.querySelector(".search-results"), {
    pick: (kind, id) => ({ unit: focusUnit, drone: focusDrone }[kind] || focusIncident)(id),
  });

  map.on("click", (e) => {
    if (dronePanel.takeClick(e.latlng)) return;  // the point a drone was told to go to
    const unitId = store.layers.units ? unitLayer.pick(e.containerPoint) : null;
    if (unitId) { store.select("unit", unitId); return; }
    if (canAct()) creator.open(e.latlng);  // viewers look; a click creates nothing
  });
  map.on("mousemove", (e) => {
    const over = store.layers.units && unitLayer.pick(e.containerPoint);
    map.getContainer().classList.toggle("over-unit", !!over);
  });

  store.subscribe("units", () => {
    unitPanel.render(); controls.learn();
    if (store.filters.status || store.filters.kind) droneLayer.sync();  // a drone's unit may pass the filters now
  });
  // The unit canvas leaves out drones with a drone view: redraw it when that set changes.
  let droneIds = "";
  store.subscribe("drones", () => {
    droneLayer.sync(); dronePanel.render();
    const ids = [...store.drones.keys()].join("\n");
    if (ids !== droneIds) { droneIds = ids; unitLayer.setFilter(store.drawnAsUnit); }
  });
  store.subscribe("incidents", () => {
    incidentList.render(); incidentLayer.sync(); incidentPanel.update(); unitPanel.render(); controls.learn();
    alertViews.syncMarks();
  });
  store.subscribe("alerts", () => alertViews.render());
  store.subscribe("selection", () => {
    unitLayer.setSelected(store.selection.unit);
    incidentList.render(); incidentLayer.sync(); incidentPanel.update(); unitPanel.update();
    dronePanel.update(); droneLayer.sync();
  });
  setInterval(() => {
    incidentList.tick(); incidentPanel.tick(); unitPanel.tick(); incidentLayer.tick(); dronePanel.tick();
  }, 1000);
  // Language or role changed: every view that shows words or buttons renders again.
  const refresh = () => {
    controls.render(); incidentList.render(); alertViews.render();
    unitPanel.parts = null; unitPanel.render(); dronePanel.parts = null; dronePanel.render(); droneLayer.sync();
    incidentPanel.shown = null; incidentPanel.update(); incidentPanel.recommendations.rerender();
  };
  onLangChange(refresh);
  wireViewSwitch(map);
  // The store may have filled before these views existed (the snapshot comes early): show it.
  refresh();
  for (const topic of ["units", "incidents", "alerts", "drones", "selection"]) store.notify(topic);
  return refresh;
}

/** The map and dashboard tabs; the dashboard's module (and Chart.js) load on its first opening. */
function wireViewSwitch(map) {
  let dashboard = null;
  const show = async (view) => {
    const dash = view === "dashboard";
    document.body.classList.toggle("view-dashboard", dash);
    byTestId("dashboard").hidden = !dash;
    byTestId("view-map").classList.toggle("active", !dash);
    byTestId("view-dashboard").classList.toggle("active", dash);
    if (!dash) { map.invalidateSize(); return; }
    if (!dashboard) {
      const { Dashboard } = await import("./dashboard.js");
      dashboard = dashboard || new Dashboard(byTestId("dashboard"));
      onLangChange(() => { if (!byTestId("dashboard").hidden) dashboard.render(); });
    }
    dashboard.show();
  };
  byTestId("view-map").addEventListener("click", () => show("map"));
  byTestId("view-dashboard").addEventListener("click", () => show("dashboard"));
}
