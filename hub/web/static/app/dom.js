// Building DOM nodes without innerHTML: text from the hub (summaries, names) never becomes markup.

/**
 * el("div", {class: "x", dataset: {testid: "y"}, onclick: fn}, child, "text", [more])
 * Attributes: `class`, `dataset` (object), `on<event>` (listener), `hidden`/`disabled`/`checked`/`value`
 * (properties), `style` (through the CSSOM: the page's CSP refuses style attributes), anything else via
 * setAttribute; null/undefined/false values are skipped.
 */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value == null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "style") node.style.cssText = value;
      else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else if (key === "hidden" || key === "disabled" || key === "checked" || key === "value") node[key] = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** Replace the children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export const byTestId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

/** Text made safe for the few places that insist on an HTML string (Leaflet tooltips and divIcons). */
export function escapeHtml(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
