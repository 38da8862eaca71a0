// How a unit looks: fill by status, shape by kind, faded when its position can no longer be trusted.
// Shared by the canvas layer, the legend and the panels so a colour means the same thing everywhere.

export const STATUS_COLOURS = {
  available: "#2fbf71", dispatched: "#f2b233", acknowledged: "#f07c2e", en_route: "#3d8bfd",
  on_scene: "#a970ff", offline: "#7d8896", out_of_service: "#5b6470",
};
export const STATUSES = Object.keys(STATUS_COLOURS);
export const UNKNOWN_COLOUR = "#c9d1d9";

// A fix older than this is not where the unit is now: draw it hollow.
export const STALE_MS = 60000;

const SHAPE_BY_KIND = { patrol: 0, car: 0, vehicle: 0, motorbike: 0, van: 0, foot: 1, officer: 1, drone: 2, uav: 2 };
export const UNIT_KINDS = ["patrol", "foot", "drone"];

export function shapeIndex(kind) { return SHAPE_BY_KIND[kind] ?? 1; }

export function statusColour(status) { return STATUS_COLOURS[status] || UNKNOWN_COLOUR; }

export function isStale(view, now) {
  const p = view.position;
  return !view.online || !p || now - p.ts > STALE_MS;
}

/** Add one unit's outline to the current path of `ctx` (filled/stroked by the caller, in batches). */
export function traceShape(ctx, shape, x, y, r) {
  if (shape === 0) {
    ctx.rect(x - r, y - r, 2 * r, 2 * r);
  } else if (shape === 2) {
    const d = r + 1.5;
    ctx.moveTo(x, y - d); ctx.lineTo(x + d, y); ctx.lineTo(x, y + d); ctx.lineTo(x - d, y); ctx.closePath();
  } else {
    ctx.moveTo(x + r, y); ctx.arc(x, y, r, 0, 2 * Math.PI);
  }
}

/** A small swatch (legend, panels): a canvas with the unit's shape in its status colour. */
export function swatch(status, kind, size = 14) {
  const c = document.createElement("canvas");
  const dpr = window.devicePixelRatio || 1;
  c.width = c.height = size * dpr;
  c.style.width = c.style.height = `${size}px`;
  c.className = "swatch";
  const ctx = c.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.beginPath();
  traceShape(ctx, shapeIndex(kind), size / 2, size / 2, size / 2 - 3);
  ctx.fillStyle = statusColour(status);
  ctx.fill();
  ctx.lineWidth = 1;
  ctx.strokeStyle = "#0b0f14";
  ctx.stroke();
  return c;
}

/** Web Mercator at zoom 0 (256 px world), as Leaflet's EPSG3857 does it, without allocating LatLngs. */
const MAX_LAT = 85.0511287798;
export function worldX(lon) { return 256 * (lon + 180) / 360; }
export function worldY(lat) {
  const s = Math.sin(Math.max(-MAX_LAT, Math.min(MAX_LAT, lat)) * Math.PI / 180);
  return 256 * (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI));
}

/** `colour` mixed with the map's dark background: opaque, so thin lines need no blending. */
export function dimColour(colour, share = 0.5) {
  const n = parseInt(colour.slice(1), 16);
  const bg = [11, 16, 22];
  const rgb = [(n >> 16) & 255, (n >> 8) & 255, n & 255].map((v, i) => Math.round(v * share + bg[i] * (1 - share)));
  return `rgb(${rgb.join(",")})`;
}
