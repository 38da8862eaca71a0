// Copies the browser libraries the one-map uses from node_modules (installed by `npm ci` from
// package-lock.json) into hub/web/static/vendor, which the hub serves at /static/vendor. Run by
// scripts/setup.sh; nothing is fetched at run time.
import { cpSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const out = join(here, "..", "hub", "web", "static", "vendor");

const files = [
  ["leaflet/dist/leaflet.js", "leaflet/leaflet.js"],
  ["leaflet/dist/leaflet.css", "leaflet/leaflet.css"],
  ["leaflet/dist/images", "leaflet/images"],
  ["leaflet/LICENSE", "leaflet/LICENSE"],
  ["chart.js/dist/chart.umd.js", "chart.js/chart.umd.js"],
  ["chart.js/LICENSE.md", "chart.js/LICENSE.md"],
];

rmSync(out, { recursive: true, force: true });
for (const [from, to] of files) {
  const source = join(modules, from);
  if (!existsSync(source)) {
    console.error(`vendor: ${source} is missing: run npm ci in web/ first`);
    process.exit(1);
  }
  mkdirSync(dirname(join(out, to)), { recursive: true });
  cpSync(source, join(out, to), { recursive: true });
}
console.log(`vendor: ${files.length} items copied to ${out}`);
