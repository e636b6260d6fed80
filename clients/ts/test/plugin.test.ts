// End-to-end tests of the TypeScript plugin SDK (src/plugin.ts) against the real Nexus server:
// two external plugins on the SDK exchange a message and an event through the host, answer
// health checks, take a configuration change, use the key-value store and discovery, and stop
// gracefully when the host disables them.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { connect, createServer, type AddressInfo, type Socket } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createNexusClient, type NexusClient } from "../src/index.js";
import { PermanentError, PluginError, runPlugin, type IncomingEvent, type PluginSession } from "../src/plugin.js";
import { ADMIN_TOKEN, STARTUP_TIMEOUT_MS, STOP_GRACE_MS, serverBin, startServer, stopServer, type RunningServer } from "./harness.js";

let server: RunningServer | undefined;
let admin: NexusClient;

/** Installs and enables an external plugin with this manifest; returns a plugin token for it. */
async function externalPlugin(manifest: Record<string, unknown>): Promise<string> {
  assert.ok(server);
  const id = manifest.id as string;
  const dir = join(server.tmp, "pkg-" + id);
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(dir, "plugin.json"),
    JSON.stringify({ name: id, version: "1.0.0", category: "testing", external: true, nexus_version: ">=1.0.0", ...manifest }),
  );
  const pkg = join(server.tmp, id + ".tar.gz");
  execFileSync(serverBin, ["package", dir, "-o", pkg]);
  await admin.plugins.installPlugin({ source: "file", packageData: await readFile(pkg) });
  await admin.plugins.enablePlugin({ pluginId: id });
  return execFileSync(serverBin, ["token", "create", "--data-dir", server.dataDir, "--role", "plugin", "--plugin", id, "--name", id], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"], // the token on stdout; its notice on stderr
  }).trim();
}

/** Polls cond until it holds (at most 10 s). */
async function eventually(what: string, cond: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`${what} did not happen within 10 s`);
    await sleep(50);
  }
}

/** Runs a server (with extra flags) and an admin client for the suite it is called in. */
function useServer(prefix: string, extraArgs: string[] = []): void {
  before(
    async () => {
      await startServer((s) => (server = s), prefix, extraArgs);
      admin = createNexusClient({ baseUrl: server!.baseUrl, token: ADMIN_TOKEN, defaultTimeoutMs: 10_000 });
    },
    { timeout: STARTUP_TIMEOUT_MS + 5_000 },
  );
  after(
    async () => {
      admin?.close();
      if (server) await stopServer(server);
      server = undefined;
    },
    { timeout: STOP_GRACE_MS + 10_000 },
  );
}

describe("plugins on the TypeScript SDK", { timeout: 90_000 }, () => {
  useServer("nexus-ts-plugin-");

  test("messages, events, health, configuration, key-value, discovery and a graceful stop", async () => {
    assert.ok(server);
    const echoToken = await externalPlugin({
      id: "ts-echo",
      permissions: ["events:subscribe", "database:read", "database:write"],
      message_types: [{ type: "echo" }, { type: "fail" }],
      services: ["echo"],
      events: { subscribes: [{ type: "ts.*" }] },
      configuration: { greeting: { type: "string", default: "hi" } },
    });
    const callerToken = await externalPlugin({ id: "ts-caller", permissions: ["messages:send", "events:emit"] });

    const events: IncomingEvent[] = [];
    const configs: string[] = [];
    let shutdownReason = "";
    let echoSession: PluginSession | undefined;
    const echoStopped = runPlugin(
      {
        version: "1.0.0",
        services: ["echo"],
        messageTypes: ["echo", "fail"],
        onStart: (s) => {
          echoSession = s;
        },
        onMessage: async (m, ctx) => {
          if (m.type === "fail") throw new Error("asked to fail");
          return { ...m.data, echoed: true, from: m.source, greeting: ctx.session.config.greeting ?? null };
        },
        onEvent: async (e) => {
          if (e.data.poison) throw new PermanentError("cannot handle poison");
          events.push(e);
        },
        onHealthCheck: () => [{ name: "queue", status: "pass", value: events.length, threshold: 100, unit: "events" }],
        onConfigChange: (c) => {
          if (c.config.greeting === "forbidden") throw new Error("that greeting is not allowed");
          configs.push(String(c.config.greeting));
        },
        onShutdown: (reason) => {
          shutdownReason = reason;
        },
      },
      { host: server.baseUrl, token: echoToken, pluginId: "ts-echo", handleSignals: false },
    );

    const stopCaller = new AbortController();
    let caller: PluginSession | undefined;
    const callerStopped = runPlugin(
      { version: "2.0.0", onStart: (s) => void (caller = s) },
      { host: server.baseUrl, token: callerToken, pluginId: "ts-caller", signal: stopCaller.signal, handleSignals: false },
    );
    await eventually("both plugins to connect", () => caller !== undefined && echoSession !== undefined);
    assert.ok(caller && echoSession);
    assert.deepEqual(echoSession.config, { greeting: "hi" });
    assert.ok(echoSession.grantedPermissions.includes("events:subscribe"));

    // A message and its reply, through the host; a handler's error is the reply's status.
    const r = await caller.send("ts-echo", "echo", { n: 1, text: "héllo" });
    assert.equal(r.status, "success");
    assert.deepEqual(r.data, { n: 1, text: "héllo", echoed: true, from: "ts-caller", greeting: "hi" });
    const failed = await caller.send("ts-echo", "fail", {});
    assert.equal(failed.status, "error");
    // A refusal of the host is a PluginError with the API's code.
    await assert.rejects(caller.send("no-such-plugin", "echo", {}), (e: unknown) => e instanceof PluginError && e.code === "PLUGIN_NOT_FOUND");
    await assert.rejects(echoSession.emit("ts.x", {}), (e: unknown) => e instanceof PluginError && e.code === "PLUGIN_PERMISSION_DENIED");

    // An event, delivered once; a poison one dead-lettered.
    const eventId = await caller.emit("ts.created", { order: 7 });
    await caller.emit("ts.created", { poison: true });
    await eventually("the event to arrive", () => events.some((e) => e.id === eventId));
    assert.equal(events.find((e) => e.id === eventId)?.data.order, 7);
    await eventually("the poison event to be dead-lettered", async () => {
      const dl = await admin.messaging.listDeadLetters({ pluginId: "ts-echo" });
      return dl.deadLetters.some((d) => d.reason.includes("cannot handle poison"));
    });

    // Health, asked by the host now.
    const health = await admin.plugins.getPluginHealth({ pluginId: "ts-echo", refresh: true });
    assert.equal(health.health?.status, "healthy");
    assert.ok(health.health?.checks.some((c) => c.name === "queue" && c.status === "pass"));

    // A configuration change, accepted then refused (the refusal reaches the admin).
    await admin.plugins.updatePluginConfig({ pluginId: "ts-echo", config: { greeting: "hello" } });
    await eventually("the change to reach the plugin", () => configs.includes("hello"));
    assert.equal(echoSession.config.greeting, "hello");
    await assert.rejects(admin.plugins.updatePluginConfig({ pluginId: "ts-echo", config: { greeting: "forbidden" } }), /not allowed/);
    assert.equal(echoSession.config.greeting, "hello");

    // Key-value, with compare-and-set, and discovery.
    await echoSession.kv.put("count", 1);
    const got = await echoSession.kv.get("count");
    assert.equal(got?.value, 1);
    assert.equal(await echoSession.kv.put("count", 2, { expectedVersion: got!.version + 5n }), false);
    assert.equal(await echoSession.kv.put("count", 2, { expectedVersion: got!.version }), true);
    assert.deepEqual((await echoSession.kv.list("co")).items.map((i) => [i.key, i.value]), [["count", 2]]);
    const providers = await caller.discover({ service: "echo" });
    assert.deepEqual(providers.map((p) => p.pluginId), ["ts-echo"]);

    // Disabling the plugin asks it to stop: runPlugin resolves after onShutdown.
    await admin.plugins.disablePlugin({ pluginId: "ts-echo", reason: "test over" });
    await echoStopped;
    assert.match(shutdownReason, /test over|disabled/);
    // The caller stops with its signal.
    stopCaller.abort();
    await callerStopped;
  });

  test("HTTP endpoints: a path parameter and query, a large body both ways, a stream, a failing handler", async () => {
    assert.ok(server);
    const token = await externalPlugin({
      id: "ts-web",
      api_endpoints: [
        { path: "/api/v1/tsweb/hello/{name}", methods: ["GET"], auth: "public" },
        { path: "/api/v1/tsweb/echo", methods: ["POST"], auth: "token" },
        { path: "/api/v1/tsweb/ticks", methods: ["GET"], auth: "public" },
        { path: "/api/v1/tsweb/fail", methods: ["GET"], auth: "public" },
      ],
    });
    const stop = new AbortController();
    let started = false;
    const stopped = runPlugin(
      {
        version: "1.0.0",
        onStart: () => void (started = true),
        http: async (req, ctx) => {
          const url = new URL(req.url);
          switch (ctx.pattern) {
            case "GET /api/v1/tsweb/hello/{name}":
              return Response.json({ hello: ctx.params.name, q: url.searchParams.get("q"), authenticated: ctx.caller.authenticated });
            case "POST /api/v1/tsweb/echo": {
              const body = new Uint8Array(await req.arrayBuffer());
              return new Response(body, { headers: { "content-type": "application/octet-stream", "x-caller-role": ctx.caller.role } });
            }
            case "GET /api/v1/tsweb/ticks": {
              let n = 0;
              const stream = new ReadableStream<Uint8Array>({
                async pull(ctrl) {
                  await sleep(100);
                  ctrl.enqueue(new TextEncoder().encode(`data: tick ${++n}\n\n`));
                  if (n === 3) ctrl.close();
                },
              });
              return new Response(stream, { headers: { "content-type": "text/event-stream" } });
            }
          }
          throw new Error("no such endpoint");
        },
      },
      { host: server.baseUrl, token, pluginId: "ts-web", signal: stop.signal, handleSignals: false },
    );
    try {
      await eventually("the plugin to connect", () => started);
      const hello = await fetch(`${server.baseUrl}/api/v1/tsweb/hello/ada?q=x%20y`);
      assert.equal(hello.status, 200);
      assert.deepEqual(await hello.json(), { hello: "ada", q: "x y", authenticated: false });

      const big = new Uint8Array(1 << 20).map((_, i) => i % 251); // four windows' worth
      const echo = await fetch(`${server.baseUrl}/api/v1/tsweb/echo`, { method: "POST", body: big, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.equal(echo.status, 200);
      assert.equal(echo.headers.get("x-caller-role"), "admin");
      assert.deepEqual(new Uint8Array(await echo.arrayBuffer()), big);
      const anonymous = await fetch(`${server.baseUrl}/api/v1/tsweb/echo`, { method: "POST", body: "x" });
      assert.equal(anonymous.status, 401);

      const ticks = await fetch(`${server.baseUrl}/api/v1/tsweb/ticks`);
      assert.equal(ticks.headers.get("content-type"), "text/event-stream");
      const reader = ticks.body!.getReader();
      const first = new TextDecoder().decode((await reader.read()).value); // before the stream ends
      assert.match(first, /tick 1/);
      assert.doesNotMatch(first, /tick 3/, "the stream reached the caller only at its end");
      let rest = "";
      for (let r = await reader.read(); !r.done; r = await reader.read()) rest += new TextDecoder().decode(r.value);
      assert.match(rest, /tick 3/);

      const fail = await fetch(`${server.baseUrl}/api/v1/tsweb/fail`);
      assert.equal(fail.status, 500);
      await fail.arrayBuffer();
    } finally {
      stop.abort();
      await stopped;
    }
  });

  test("a broken connection is opened again, with a new session", async () => {
    assert.ok(server);
    const token = await externalPlugin({ id: "ts-flaky", message_types: [{ type: "ping" }] });
    // The plugin reaches the host through a proxy whose connections the test cuts.
    const target = new URL(server.baseUrl);
    const sockets = new Set<Socket>();
    const proxy = createServer((client) => {
      const upstream = connect(Number(target.port), target.hostname);
      client.pipe(upstream).pipe(client);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on("error", () => {});
        s.on("close", () => sockets.delete(s));
      }
    });
    await new Promise<void>((res) => proxy.listen(0, "127.0.0.1", res));
    const port = (proxy.address() as AddressInfo).port;
    const sessions: string[] = [];
    const stop = new AbortController();
    const stopped = runPlugin(
      { version: "1.0.0", messageTypes: ["ping"], onStart: (s) => void sessions.push(s.sessionId), onMessage: () => ({ pong: true }) },
      { host: `http://127.0.0.1:${port}`, token, pluginId: "ts-flaky", signal: stop.signal, handleSignals: false, backoff: { initialMs: 50, maxMs: 200 } },
    );
    try {
      await eventually("the first session", () => sessions.length === 1);
      for (const s of sockets) s.destroy();
      await eventually("a second session after the cut", () => sessions.length === 2);
      assert.notEqual(sessions[0], sessions[1]);
      const reply = await admin.messaging.sendMessage({ pluginId: "ts-caller", targetPlugin: "ts-flaky", messageType: "ping" });
      assert.equal(reply.response?.data?.pong, true);
    } finally {
      stop.abort();
      await stopped;
      proxy.close();
    }
  });

  test("a refused token fails runPlugin instead of retrying for ever", async () => {
    assert.ok(server);
    await assert.rejects(
      runPlugin({ version: "1.0.0" }, { host: server.baseUrl, token: "nxt_not-a-token", pluginId: "ts-echo", handleSignals: false }),
      /unauthenticated|UNAUTHENTICATED|token/i,
    );
  });
});

describe("a slow event handler on the TypeScript SDK", { timeout: 60_000 }, () => {
  // A processing timeout of 1 s: a handler that takes longer must extend its delivery.
  useServer("nexus-ts-slow-", ["--processing-timeout", "1s"]);

  test("keeps its delivery while it works (no redelivery, no dead letter)", async () => {
    assert.ok(server);
    const token = await externalPlugin({ id: "ts-slow", permissions: ["events:subscribe"], events: { subscribes: [{ type: "slow.*" }] } });
    const attempts = new Map<string, number[]>();
    let done = 0;
    const stop = new AbortController();
    let session: PluginSession | undefined;
    const stopped = runPlugin(
      {
        version: "1.0.0",
        onStart: (s) => void (session = s),
        onEvent: async (e) => {
          attempts.set(e.id, [...(attempts.get(e.id) ?? []), e.attempt]);
          await sleep(2_500); // 2.5 processing timeouts
          done++;
        },
      },
      { host: server.baseUrl, token, pluginId: "ts-slow", signal: stop.signal, handleSignals: false },
    );
    try {
      await eventually("the plugin to connect", () => session !== undefined);
      assert.equal(session!.processingTimeoutMs, 1000);
      const { eventId } = await admin.messaging.emitEvent({ type: "slow.job", data: {} });
      await eventually("the slow handler to finish", () => done === 1);
      await sleep(1_500); // past another processing timeout: a redelivery would show now
      assert.deepEqual(attempts.get(eventId), [1]);
      const dl = await admin.messaging.listDeadLetters({ pluginId: "ts-slow" });
      assert.equal(dl.deadLetters.length, 0);
    } finally {
      stop.abort();
      await stopped;
    }
  });
});
