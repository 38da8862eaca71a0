// The hub's HTTP API: bearer token, JSON in and out, errors of the contract turned into toasts.
// Errors are shown here, at the edge, so no caller can forget to; callers still get the rejection.

import { getToken, signOut } from "./session.js";
import { toast } from "./toast.js";
import { t } from "./i18n.js";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * api("/api/v1/incidents", {method: "POST", body: {...}})
 * Options: `optional: true` makes a 404 resolve to null quietly (an endpoint this hub does not have yet);
 * `quiet: true` leaves showing the error to the caller.
 */
export async function api(path, { method = "GET", body, optional = false, quiet = false } = {}) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (exc) {
    const err = new ApiError(0, "network", t("error.network", { m: exc.message }));
    if (!quiet) toast(err.message);
    throw err;
  }
  if (resp.status === 401) {
    signOut("bad");
    throw new ApiError(401, "unauthorized", t("login.bad"));
  }
  if (optional && resp.status === 404) return null;
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const e = data && data.error ? data.error : { code: `http_${resp.status}`, message: resp.statusText };
    const err = new ApiError(resp.status, e.code, e.message || e.code);
    if (!quiet) toast(`${method} ${path.split("?")[0]}: ${err.message}`);
    throw err;
  }
  return data;
}

/** "a=1&b=2" from an object, skipping null values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}
