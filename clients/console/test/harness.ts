// The browser tests' harness: the real Nexus server (../../bin/nexus, or NEXUS_BIN) on a free
// loopback port with the demo catalog (../../bin/demo-repo, `make demo-repo`), and Debian's
// Chromium (/usr/bin/chromium, or CHROMIUM) driven by playwright-core. A missing binary or
// browser fails the run; nothing is skipped.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { chromium, type Browser } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const serverBin = process.env.NEXUS_BIN ?? join(root, "bin/nexus");
const demoRepo = join(root, "bin/demo-repo");
export const ADMIN_TOKEN = "console-test-admin-token-0123456789";

export interface Server {
  proc: ChildProcess;
  url: string;
  dataDir: string;
  tmp: string;
  output: () => string;
}

function need(path: string, how: string): void {
  if (!existsSync(path)) throw new Error(`${path} is missing: ${how}`);
}

/** Starts a server with the demo repository; stop it with stopServer. */
export async function startServer(): Promise<Server> {
  need(serverBin, "build it with `make build` (or set NEXUS_BIN)");
  need(join(demoRepo, "index.json"), "build it with `make demo-repo`");
  const key = readFileSync(join(root, "bin/demo-repo.pub"), "utf8").trim();
  const tmp = await mkdtemp(join(tmpdir(), "nexus-console-"));
  const dataDir = join(tmp, "data");
  const addrFile = join(tmp, "addr");
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("NEXUS_")) env[k] = v;
  env.NEXUS_ADMIN_TOKEN = ADMIN_TOKEN;
  const proc = spawn(
    serverBin,
    ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--addr-file", addrFile, "--log-level", "warn",
      "--repository", `demo=file://${demoRepo};key=${key};description=Example plugins built from this checkout`],
    { env, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  const keep = (b: Buffer) => (out = (out + b.toString()).slice(-20_000));
  proc.stdout?.on("data", keep);
  proc.stderr?.on("data", keep);
  const server: Server = { proc, url: "", dataDir, tmp, output: () => out };
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) break;
    const addr = await readFile(addrFile, "utf8").catch(() => "");
    if (/^\S+:\d+$/.test(addr.trim()) && !addr.trim().endsWith(":0")) {
      server.url = `http://${addr.trim()}`;
      const ready = await fetch(`${server.url}/readyz`).then((r) => r.status === 200, () => false);
      if (ready) return server;
    }
    await sleep(100);
  }
  await stopServer(server);
  throw new Error(`the server did not start within 30 s; its output:\n${out}`);
}

export async function stopServer(s: Server): Promise<void> {
  if (s.proc.exitCode === null && s.proc.signalCode === null) {
    const exited = new Promise((r) => s.proc.once("exit", r));
    s.proc.kill("SIGTERM");
    await Promise.race([exited, sleep(10_000)]);
    if (s.proc.exitCode === null) s.proc.kill("SIGKILL");
  }
  await rm(s.tmp, { recursive: true, force: true, maxRetries: 3 });
}

/** Issues a token with the server's CLI. */
export function createToken(s: Server, role: "admin" | "user", name: string): string {
  return execFileSync(serverBin, ["token", "create", "--data-dir", s.dataDir, "--role", role, "--name", name], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  }).trim();
}

/** Launches Debian's Chromium headless, with the flags this machine's closed network needs. */
export async function launchBrowser(): Promise<Browser> {
  const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
  need(executablePath, "install Debian's chromium (apt-get install chromium) or set CHROMIUM");
  return chromium.launch({
    executablePath,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
