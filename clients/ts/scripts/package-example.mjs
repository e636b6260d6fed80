// Packages the example TypeScript plugin (examples/greeter-plugin) with `nexus package`:
//   node scripts/package-example.mjs NEXUS_BIN OUT.tar.gz
// after `npm run build`. The package holds plugin.json, bin/greeter-plugin (a shell script
// that runs node), and app/: the compiled SDK, generated code and example, with the runtime
// dependencies (@bufbuild/protobuf, @connectrpc/connect, @connectrpc/connect-node) from
// node_modules. The host runs it with the node on its PATH (Node 20+).

import { execFileSync } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const [nexusBin, out] = process.argv.slice(2);
if (!nexusBin || !out) {
  console.error("usage: node scripts/package-example.mjs NEXUS_BIN OUT.tar.gz");
  process.exit(2);
}
const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const stage = join(root, "dist", "stage", "greeter-plugin");
rmSync(stage, { recursive: true, force: true });
mkdirSync(join(stage, "bin"), { recursive: true });
cpSync(join(root, "examples", "greeter-plugin", "plugin.json"), join(stage, "plugin.json"));
for (const d of ["src", "gen", join("examples", "greeter-plugin")]) {
  cpSync(join(root, "dist", d), join(stage, "app", d), { recursive: true, filter: (f) => !f.endsWith(".map") && !f.endsWith(".d.ts") });
}
for (const d of ["@bufbuild/protobuf", "@connectrpc/connect", "@connectrpc/connect-node"]) {
  cpSync(join(root, "node_modules", d), join(stage, "app", "node_modules", d), { recursive: true });
}
writeFileSync(join(stage, "app", "package.json"), JSON.stringify({ type: "module", private: true }) + "\n");
const entry = join(stage, "bin", "greeter-plugin");
writeFileSync(entry, '#!/bin/sh\nexec node "$(dirname "$0")/../app/examples/greeter-plugin/greeter.js" "$@"\n');
chmodSync(entry, 0o755);
execFileSync(resolve(nexusBin), ["package", stage, "-o", resolve(out)], { stdio: "inherit" });
