// GCJ-02 ("Mars coordinates") for the one-map: Chinese tile sets (AMap/Gaode style) draw streets in GCJ-02,
// a smooth offset of a few hundred metres from WGS-84, while every position in the hub is WGS-84. The page
// converts only for display. The same published formula as geo/gcj02.py (its from_wgs84 and to_wgs84, ported
// line by line; tests/web/test_tile_datum.py compares the two): two trigonometric polynomials of the offset
// from (105 E, 35 N), scaled with the radii of curvature of the Krasovsky 1940 ellipsoid. Outside the usual
// rectangle around China GCJ-02 is WGS-84. No Leaflet here: plain numbers in, [lat, lon] out.

export const DATUMS = ["wgs84", "gcj02"];

// Krasovsky 1940: semi-major axis (m), first eccentricity squared.
const A = 6378245.0;
const EE = 0.00669342162296594323;
// Outside this rectangle (degrees) GCJ-02 equals WGS-84.
const LON_MIN = 72.004, LON_MAX = 137.8347, LAT_MIN = 0.8293, LAT_MAX = 55.8271;
// The inverse stops once the forward image of its estimate is this close (degrees; about 0.1 mm).
const TOLERANCE_DEG = 1e-9;
const MAX_ITERATIONS = 30;
const RAD = Math.PI / 180, DEG = 180 / Math.PI;  // as Python's math.radians and math.degrees

/** Whether GCJ-02 shifts this point (borders included); false for anything not a finite number. */
export function inChina(lat, lon) {
  return LAT_MIN <= lat && lat <= LAT_MAX && LON_MIN <= lon && lon <= LON_MAX;
}

function periodic(u) {
  return (20.0 * Math.sin(6.0 * Math.PI * u) + 20.0 * Math.sin(2.0 * Math.PI * u)) * 2.0 / 3.0;
}

function latTerm(x, y) {
  let v = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
  v += periodic(x);
  v += (20.0 * Math.sin(Math.PI * y) + 40.0 * Math.sin(Math.PI * y / 3.0)) * 2.0 / 3.0;
  v += (160.0 * Math.sin(Math.PI * y / 12.0) + 320.0 * Math.sin(Math.PI * y / 30.0)) * 2.0 / 3.0;
  return v;
}

function lonTerm(x, y) {
  let v = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
  v += periodic(x);
  v += (20.0 * Math.sin(Math.PI * x) + 40.0 * Math.sin(Math.PI * x / 3.0)) * 2.0 / 3.0;
  v += (150.0 * Math.sin(Math.PI * x / 12.0) + 300.0 * Math.sin(Math.PI * x / 30.0)) * 2.0 / 3.0;
  return v;
}

/** The offset [degrees north, degrees east] at a WGS-84 point, regardless of the rectangle. */
function shift(lat, lon) {
  const x = lon - 105.0, y = lat - 35.0;
  const phi = lat * RAD;
  const w2 = 1.0 - EE * Math.sin(phi) ** 2;
  const meridional = A * (1.0 - EE) / (w2 * Math.sqrt(w2));
  const primeVertical = A / Math.sqrt(w2);
  return [latTerm(x, y) / meridional * DEG, lonTerm(x, y) / (primeVertical * Math.cos(phi)) * DEG];
}

/** The GCJ-02 [lat, lon] of a WGS-84 point (the point itself outside China). */
export function wgs84ToGcj02(lat, lon) {
  if (!inChina(lat, lon)) return [lat, lon];
  const [dlat, dlon] = shift(lat, lon);
  return [lat + dlat, lon + dlon];
}

/**
 * The WGS-84 [lat, lon] whose GCJ-02 image is (lat, lon) (the point itself outside China): fixed-point
 * iteration on the forward formula, as geo/gcj02.py does it; the best estimate if it does not converge.
 */
export function gcj02ToWgs84(lat, lon) {
  if (!inChina(lat, lon)) return [lat, lon];
  let estLat = lat, estLon = lon;
  let best = Infinity, bestLat = lat, bestLon = lon;
  for (let i = 0; i < MAX_ITERATIONS; i++) {
    const [dlat, dlon] = shift(estLat, estLon);
    const missLat = estLat + dlat - lat, missLon = estLon + dlon - lon;
    const miss = Math.max(Math.abs(missLat), Math.abs(missLon));
    if (miss < best) { best = miss; bestLat = estLat; bestLon = estLon; }
    if (miss <= TOLERANCE_DEG) break;
    estLat -= missLat; estLon -= missLon;
  }
  return [bestLat, bestLon];
}

/** A WGS-84 position as drawn on tiles of `datum` ("wgs84": unchanged). */
export function fromWgs84(lat, lon, datum) {
  return datum === "gcj02" ? wgs84ToGcj02(lat, lon) : [lat, lon];
}

/** A position on tiles of `datum` (a click) as WGS-84, the datum the hub takes. */
export function toWgs84(lat, lon, datum) {
  return datum === "gcj02" ? gcj02ToWgs84(lat, lon) : [lat, lon];
}
