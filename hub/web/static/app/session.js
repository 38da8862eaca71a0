// Who is using the page: the token (from ?token= or the login form, kept in localStorage) and the role.
// A 401 anywhere clears the token and returns to the login.

import { byTestId } from "./dom.js";
import { t } from "./i18n.js";

const KEY = "fieldhub.token";
const ACTING_ROLES = new Set(["admin", "dispatcher"]);
const FLYING_ROLES = new Set(["admin", "drone_operator"]);               // goto, return, land
const SENDING_ROLES = new Set(["admin", "dispatcher", "drone_operator"]); // a drone to an incident

let token = null;
// `guessed`: the hub has no /me, the role is unknown; every action is offered and the hub refuses what it must.
export const who = { name: "", role: "unknown", guessed: false };

/** Take ?token=T into storage and out of the address bar (it is a secret; screenshots show the bar). */
export function loadToken() {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("token");
  if (fromUrl) {
    token = fromUrl;
    try { localStorage.setItem(KEY, fromUrl); } catch { /* still usable for this page */ }
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  } else {
    try { token = localStorage.getItem(KEY); } catch { token = null; }
  }
  return token;
}

export function getToken() { return token; }

export function setToken(value) {
  token = value || null;
  try {
    if (token) localStorage.setItem(KEY, token); else localStorage.removeItem(KEY);
  } catch { /* ignore: the in-memory token still works */ }
}

/** Dispatchers and admins act; viewers and everybody else only look. */
export function canAct() { return ACTING_ROLES.has(who.role); }

/** Drone operators and admins fly drones (goto, return, land). */
export function canFly() { return who.guessed || FLYING_ROLES.has(who.role); }

/** Dispatchers, drone operators and admins send a drone to an incident. */
export function canSendDrone() { return who.guessed || SENDING_ROLES.has(who.role); }

/** Show the login form; resolves with the token typed in. */
export function askForToken(message) {
  const box = byTestId("login");
  const input = byTestId("login-token");
  const note = box.querySelector(".login-error");
  note.textContent = message || "";
  box.hidden = false;
  document.body.classList.add("logged-out");
  input.value = "";
  input.focus();
  return new Promise((resolve) => {
    const form = box.querySelector("form");
    form.onsubmit = (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      box.hidden = true;
      document.body.classList.remove("logged-out");
      resolve(value);
    };
  });
}

/** A 401 from the hub: forget the token and start over at the login. */
export function signOut(reason) {
  setToken(null);
  const url = new URL(location.href);
  url.searchParams.set("signed_out", reason === "bad" ? "bad" : "1");
  location.replace(url);
}

export function signedOutMessage() {
  const params = new URLSearchParams(location.search);
  const flag = params.get("signed_out");
  if (!flag) return "";
  params.delete("signed_out");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  return flag === "bad" ? t("login.bad") : "";
}
