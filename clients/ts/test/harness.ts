// The test harness: the real Nexus server binary, started on a free loopback port with a data
// directory of its own, and stopped (SIGTERM, then SIGKILL) when the tests end.
//
// The binary is ../../bin/nexus relative to this package (override with NEXUS_BIN). Build it first:
//   cd /work/main && go build -o bin/nexus ./server/cmd/nexus
// A missing binary fails the run; it is never skipped.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

export const ADMIN_TOKEN = "test-admin-token-0123456789abcdef";
export const STARTUP_TIMEOUT_MS = 30_000;
export const STOP_GRACE_MS = 10_000;

/** The directory of this package (the one whose package.json names @nexus-platform/client). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = join(dir, "package.json");
    if (existsSync(pj) && JSON.parse(readFileSync(pj, "utf8")).name === "@nexus-platform/client") {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) {
      throw new Error("cannot find the @nexus-platform/client package root above " + fileURLToPath(import.meta.url));
    }
    dir = parent;
  }
}

export const serverBin = process.env.NEXUS_BIN ?? resolve(packageRoot(), "../../bin/nexus");

export interface RunningServer {
  proc: ChildProcess;
  baseUrl: string;
  tmp: string;
  /** The server's data directory (its database, for `nexus token create`). */
  dataDir: string;
  output: () => string;
}


/**
 * Starts the server; `started` gets it as soon as its process runs, so that the caller can
 * stop it even when the startup fails.
 */
export async function startServer(started: (s: RunningServer) => void, prefix = "nexus-ts-", extraArgs: string[] = []): Promise<RunningServer> {
  if (!existsSync(serverBin)) {
    throw new Error(
      `Nexus server binary not found at ${serverBin}. Build it with ` +
        "`cd /work/main && go build -o bin/nexus ./server/cmd/nexus` (or set NEXUS_BIN).",
    );
  }
  const tmp = await mkdtemp(join(tmpdir(), prefix));
  const dataDir = join(tmp, "data");
  const addrFile = join(tmp, "addr");
  // Only our own NEXUS_* settings: anything inherited (NEXUS_CONFIG ...) could change the server.
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("NEXUS_")) env[k] = v;
  }
  env.NEXUS_ADMIN_TOKEN = ADMIN_TOKEN;

  const proc = spawn(
    serverBin,
    ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--addr-file", addrFile, "--log-level", "warn", ...extraArgs],
    { env, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  const keep = (chunk: Buffer) => {
    out = (out + chunk.toString("utf8")).slice(-20_000);
  };
  proc.stdout?.on("data", keep);
  proc.stderr?.on("data", keep);
  let exited: string | undefined;
  proc.on("exit", (code, signal) => {
    exited = `exited with code ${code} signal ${signal}`;
  });
  proc.on("error", (err) => {
    exited = `failed to start: ${err.message}`;
  });
  const running: RunningServer = { proc, baseUrl: "", tmp, dataDir, output: () => out };
  started(running); // so that the caller stops it even if startup fails below

  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  const fail = (what: string) =>
    new Error(`Nexus server ${what} (binary ${serverBin}); its output:\n${out || "(none)"}`);

  let addr = "";
  while (addr === "") {
    if (exited) throw fail(exited);
    if (Date.now() > deadline) throw fail(`wrote no address to ${addrFile} within ${STARTUP_TIMEOUT_MS} ms`);
    try {
      const text = (await readFile(addrFile, "utf8")).trim();
      if (/^[^\s]+:\d+$/.test(text) && !text.endsWith(":0")) addr = text;
    } catch {
      // not written yet
    }
    if (addr === "") await sleep(50);
  }
  running.baseUrl = `http://${addr}`;

  for (;;) {
    if (exited) throw fail(exited);
    if (Date.now() > deadline) throw fail(`was not ready (GET /readyz) within ${STARTUP_TIMEOUT_MS} ms`);
    try {
      const res = await fetch(`${running.baseUrl}/readyz`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) return running;
    } catch {
      // not accepting connections yet
    }
    await sleep(100);
  }
}

export async function stopServer(s: RunningServer): Promise<void> {
  const { proc } = s;
  if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) {
    const exitedWithin = (ms: number) =>
      Promise.race([
        new Promise<boolean>((res) => proc.once("exit", () => res(true))),
        sleep(ms, false, { ref: false }),
      ]);
    proc.kill("SIGTERM");
    if (!(await exitedWithin(STOP_GRACE_MS))) {
      proc.kill("SIGKILL");
      await exitedWithin(5_000);
    }
  }
  await rm(s.tmp, { recursive: true, force: true, maxRetries: 3 });
}

