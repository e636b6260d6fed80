// Copies the generated TypeScript (../../gen/ts, written by `make generate` from proto/) into
// ./gen of the package it is run from (clients/ts, or clients/console with the argument "gen"),
// which tsc or vite then compiles together with src/. The copy is what makes the generated code a
// part of this package: under clients/ts its files are ES modules ("type": "module" here) and
// their imports of @bufbuild/protobuf resolve from clients/ts/node_modules, both for tsc and for
// node at run time. ./gen is a build artefact (git-ignored); never edit it, edit the .proto files.
import { cpSync, existsSync, rmSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const from = resolve(here, "../../gen/ts");
// An argument names the destination, relative to the working directory (npm runs a script in
// its package's directory).
const to = process.argv[2] ? resolve(process.cwd(), process.argv[2]) : join(here, "gen");

if (!existsSync(from) || !statSync(from).isDirectory()) {
  console.error(`sync-gen: ${from} does not exist; run \`make generate\` in the repository root`);
  process.exit(1);
}
rmSync(to, { recursive: true, force: true });
cpSync(from, to, {
  recursive: true,
  filter: (src) => statSync(src).isDirectory() || src.endsWith(".ts"),
});
console.log(`sync-gen: copied ${from} -> ${to}`);
