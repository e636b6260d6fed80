// End-to-end tests of @nexus-platform/client against the real Nexus server binary.
//
// The binary is ../../bin/nexus relative to this package (override with NEXUS_BIN). Build it first:
//   cd /work/main && go build -o bin/nexus ./server/cmd/nexus
// A missing binary fails the run; it is never skipped.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { create, toBinary, toJson } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  ErrorCode,
  ErrorInfoSchema,
  ListPluginsResponseSchema,
  createNexusClient,
  errorCode,
  errorInfo,
  type NexusClient,
  type NexusProtocol,
} from "../src/index.js";

const ADMIN_TOKEN = "test-admin-token-0123456789abcdef";
const STARTUP_TIMEOUT_MS = 30_000;
const CALL_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 10_000;
const PROTOCOLS: NexusProtocol[] = ["connect", "connect-json", "grpc-web", "grpc"];

/** The directory of this package (the one whose package.json names @nexus-platform/client). */
function packageRoot(): string {
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

const serverBin = process.env.NEXUS_BIN ?? resolve(packageRoot(), "../../bin/nexus");

interface RunningServer {
  proc: ChildProcess;
  baseUrl: string;
  tmp: string;
  output: () => string;
}

let server: RunningServer | undefined;
const clients: NexusClient[] = [];

/** Creates a client against the test server and remembers it for closing; null token: none. */
function client(protocol: NexusProtocol, token: string | null = ADMIN_TOKEN): NexusClient {
  assert.ok(server, "server not started");
  const c = createNexusClient({
    baseUrl: server.baseUrl,
    protocol,
    defaultTimeoutMs: CALL_TIMEOUT_MS,
    ...(token !== null ? { token } : {}),
  });
  clients.push(c);
  return c;
}

async function startServer(): Promise<RunningServer> {
  if (!existsSync(serverBin)) {
    throw new Error(
      `Nexus server binary not found at ${serverBin}. Build it with ` +
        "`cd /work/main && go build -o bin/nexus ./server/cmd/nexus` (or set NEXUS_BIN).",
    );
  }
  const tmp = await mkdtemp(join(tmpdir(), "nexus-ts-client-"));
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
    ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--addr-file", addrFile, "--log-level", "warn"],
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
  const running: RunningServer = { proc, baseUrl: "", tmp, output: () => out };
  server = running; // so that after() stops it even if startup fails below

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

async function stopServer(s: RunningServer): Promise<void> {
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

/** Asserts that `p` rejects with a ConnectError of `code` carrying the Nexus error code `nexusCode`. */
async function assertNexusError(p: Promise<unknown>, code: Code, nexusCode: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    assert.equal(errorCode(err), nexusCode, `error code of ${err.message}`);
    assert.equal(Code[err.code], Code[code], `Connect code of ${err.message}`);
    assert.equal(errorInfo(err)?.domain, "nexus.dev");
    return true;
  });
}

describe("against a fresh server", { timeout: 60_000 }, () => {
  before(
    async () => {
      await startServer();
    },
    { timeout: STARTUP_TIMEOUT_MS + 5_000 },
  );

  after(
    async () => {
      for (const c of clients) c.close();
      if (server) await stopServer(server);
    },
    { timeout: STOP_GRACE_MS + 10_000 },
  );

  test("ListPlugins answers the same over connect, connect-json, grpc-web and grpc", async () => {
    const answers: unknown[] = [];
    for (const protocol of PROTOCOLS) {
      const res = await client(protocol).plugins.listPlugins({});
      assert.deepEqual(res.plugins, [], `${protocol}: plugins`);
      assert.ok(res.summary, `${protocol}: summary present`);
      assert.equal(res.summary.total, 0, `${protocol}: summary.total`);
      answers.push(toJson(ListPluginsResponseSchema, res, { alwaysEmitImplicit: true }));
    }
    for (let i = 1; i < answers.length; i++) {
      assert.deepEqual(answers[i], answers[0], `${PROTOCOLS[i]} differs from ${PROTOCOLS[0]}`);
    }
  });

  test("a call without a token fails with UNAUTHENTICATED", async () => {
    for (const protocol of PROTOCOLS) {
      await assertNexusError(
        client(protocol, null).plugins.listPlugins({}),
        Code.Unauthenticated,
        ErrorCode.UNAUTHENTICATED,
      );
    }
  });

  test("a call with a wrong token fails with UNAUTHENTICATED", async () => {
    await assertNexusError(
      client("connect", "not-the-token").plugins.listPlugins({}),
      Code.Unauthenticated,
      ErrorCode.UNAUTHENTICATED,
    );
  });

  test("GetPlugin of a missing plugin fails with PLUGIN_NOT_FOUND", async () => {
    for (const protocol of PROTOCOLS) {
      await assertNexusError(
        client(protocol).plugins.getPlugin({ pluginId: "no-such-plugin" }),
        Code.NotFound,
        ErrorCode.PLUGIN_NOT_FOUND,
      );
    }
  });

  test("an invalid plugin id fails with VALIDATION_ERROR", async () => {
    for (const protocol of PROTOCOLS) {
      await assertNexusError(
        client(protocol).plugins.getPlugin({ pluginId: "Bad_Id" }),
        Code.InvalidArgument,
        ErrorCode.VALIDATION_ERROR,
      );
    }
  });
});

describe("errorCode", () => {
  test("is undefined for values that are not Nexus errors", () => {
    assert.equal(errorCode(undefined), undefined);
    assert.equal(errorCode(new Error("boom")), undefined);
    assert.equal(errorCode(new ConnectError("no details", Code.Internal)), undefined);
  });

  test("reads the reason of a google.rpc.ErrorInfo detail from its wire bytes", () => {
    // Hand-encoded ErrorInfo{reason: "PLUGIN_NOT_FOUND", domain: "nexus.dev", metadata: {plugin_id: "x"}}.
    const text = (s: string) => [...new TextEncoder().encode(s)];
    const field = (tag: number, bytes: number[]) => [tag, bytes.length, ...bytes];
    const bytes = new Uint8Array([
      ...field(0x0a, text("PLUGIN_NOT_FOUND")),
      ...field(0x12, text("nexus.dev")),
      ...field(0x1a, [...field(0x0a, text("plugin_id")), ...field(0x12, text("x"))]),
    ]);
    const err = new ConnectError("not found", Code.NotFound);
    err.details.push({ type: "google.protobuf.Duration", value: new Uint8Array([8, 1]) });
    err.details.push({ type: "google.rpc.ErrorInfo", value: bytes });
    assert.equal(errorCode(err), "PLUGIN_NOT_FOUND");
    assert.deepEqual(errorInfo(err)?.metadata, { plugin_id: "x" });

    // The schema round-trips the same bytes.
    const info = create(ErrorInfoSchema, {
      reason: "PLUGIN_NOT_FOUND",
      domain: "nexus.dev",
      metadata: { plugin_id: "x" },
    });
    assert.deepEqual(toBinary(ErrorInfoSchema, info), bytes);
  });

  test("prefers the nexus.dev domain", () => {
    const other = toBinary(ErrorInfoSchema, create(ErrorInfoSchema, { reason: "OTHER", domain: "example.com" }));
    const ours = toBinary(ErrorInfoSchema, create(ErrorInfoSchema, { reason: "UNAUTHENTICATED", domain: "nexus.dev" }));
    const err = new ConnectError("denied", Code.Unauthenticated);
    err.details.push({ type: "google.rpc.ErrorInfo", value: other }, { type: "google.rpc.ErrorInfo", value: ours });
    assert.equal(errorCode(err), "UNAUTHENTICATED");
  });
});

describe("createNexusClient", () => {
  test("rejects gRPC over HTTP/1.1", () => {
    assert.throws(
      () => createNexusClient({ baseUrl: "http://127.0.0.1:1", protocol: "grpc", httpVersion: "1.1" }),
      /needs httpVersion "2"/,
    );
  });
});
