// Makes Durable Object classes of the Worker bundle RPC-capable: `node rpc-classes.mjs
// build/index.js ClusterObject…`.
//
// workerd exposes a Durable Object's methods over RPC only when its class extends
// `DurableObject` (from "cloudflare:workers"). worker-build exports each object as a Proxy
// over the wasm-bindgen class, which extends nothing; the Proxy traps only `construct`, so
// setting prototypes on it sets them on the class. This appends, for each named class, the
// two `Object.setPrototypeOf` calls worker-build itself emits for its other target.
import { readFileSync, writeFileSync } from "node:fs";

const [file, ...classes] = process.argv.slice(2);
let js = readFileSync(file, "utf8");
const exports = [...js.matchAll(/export\s*\{([^}]*)\}/g)].map((m) => m[1]).join(",");
const local = (name) => {
  for (const part of exports.split(",")) {
    const [inner, outer] = part.trim().split(/\s+as\s+/);
    if ((outer ?? inner) === name) return inner;
  }
  throw new Error(`${file} does not export ${name}`);
};
const marker = "/* berth: RPC-capable Durable Objects */";
if (!js.includes(marker)) {
  js += `\n${marker}\nimport { DurableObject as __BerthDurableObject } from "cloudflare:workers";\n`;
  for (const name of classes) {
    const cls = local(name);
    js += `Object.setPrototypeOf(${cls}.prototype, __BerthDurableObject.prototype);\n`;
    js += `Object.setPrototypeOf(${cls}, __BerthDurableObject);\n`;
  }
  writeFileSync(file, js);
}
