// Short messages in a corner: API errors (never swallowed) and confirmations of actions.

import { el } from "./dom.js";

const SHOW_MS = { error: 8000, info: 3500 };

export function toast(message, kind = "error") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = el("div", { id: "toasts", class: "toasts", "aria-live": "polite" });
    document.body.append(box);
  }
  const item = el("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status",
    dataset: { testid: "toast", kind } }, message);
  item.addEventListener("click", () => item.remove());
  box.append(item);
  while (box.children.length > 5) box.firstElementChild.remove();
  setTimeout(() => item.remove(), SHOW_MS[kind] ?? SHOW_MS.error);
}
