// The example TypeScript plugin (examples/greeter-plugin), packaged with `nexus package`,
// installed and run by the host beside the Go example plugins (bin/packages, made by `make
// examples`): it gets user-management's user.login events and emits its own, and answers a
// message with what it asks analytics-plugin for.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createNexusClient, type Event, type NexusClient } from "../src/index.js";
import { ADMIN_TOKEN, STARTUP_TIMEOUT_MS, STOP_GRACE_MS, packageRoot, serverBin, startServer, stopServer, type RunningServer } from "./harness.js";

let server: RunningServer | undefined;
let admin: NexusClient;
const packages = resolve(packageRoot(), "../../bin/packages");

async function install(file: string): Promise<void> {
  await admin.plugins.installPlugin({ source: "file", packageData: await readFile(file) });
}

async function waitActive(id: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const p = (await admin.plugins.getPlugin({ pluginId: id })).plugin;
    if (p?.status === "active") return;
    if (Date.now() > deadline) {
      const logs = await admin.plugins.getPluginLogs({ pluginId: id, perPage: 20 });
      assert.fail(`${id} is ${p?.status} after 30 s; its log:\n${logs.logs.map((l) => `${l.level} ${l.message}`).join("\n")}`);
    }
    await sleep(100);
  }
}

describe("the example TypeScript plugin beside the Go examples", { timeout: 120_000 }, () => {
  before(
    async () => {
      for (const id of ["analytics-plugin", "user-management"]) {
        if (!existsSync(join(packages, id + ".tar.gz"))) {
          throw new Error(`${join(packages, id + ".tar.gz")} is missing: run make examples (make test-ts does)`);
        }
      }
      await startServer((s) => (server = s), "nexus-ts-example-");
      admin = createNexusClient({ baseUrl: server!.baseUrl, token: ADMIN_TOKEN, defaultTimeoutMs: 30_000, protocol: "grpc" });
    },
    { timeout: STARTUP_TIMEOUT_MS + 5_000 },
  );
  after(
    async () => {
      admin?.close();
      if (server) await stopServer(server);
    },
    { timeout: STOP_GRACE_MS + 20_000 },
  );

  test("greeter-plugin welcomes a login of user-management and greets with analytics-plugin's figures", async () => {
    assert.ok(server);
    const greeterPkg = join(server.tmp, "greeter-plugin.tar.gz");
    execFileSync(process.execPath, [join(packageRoot(), "scripts", "package-example.mjs"), serverBin, greeterPkg], { stdio: "pipe" });
    await install(join(packages, "analytics-plugin.tar.gz"));
    await install(join(packages, "user-management.tar.gz"));
    await install(greeterPkg);
    for (const id of ["analytics-plugin", "user-management", "greeter-plugin"]) {
      await admin.plugins.enablePlugin({ pluginId: id });
    }
    for (const id of ["analytics-plugin", "user-management", "greeter-plugin"]) await waitActive(id);

    // The feed of greeter's events, open before the login.
    const watch = new AbortController();
    const welcomed: Event[] = [];
    const feed = (async () => {
      try {
        for await (const res of admin.messaging.watchEvents({ patterns: ["greeter.*"] }, { signal: watch.signal, timeoutMs: 0 })) {
          if (res.event) welcomed.push(res.event);
        }
      } catch {
        // ended by the test
      }
    })();
    await sleep(200);

    // A login: user-management (Go) emits user.login; greeter (TypeScript) answers with
    // greeter.welcomed.
    const um = { pluginId: "user-management", targetPlugin: "user-management" };
    await admin.messaging.sendMessage({ ...um, messageType: "create_user", data: { user_id: "user_42", name: "Ada" } });
    const login = await admin.messaging.sendMessage({ ...um, messageType: "login", data: { user_id: "user_42" } });
    assert.equal(login.response?.status, "success", JSON.stringify(login.response));
    const deadline = Date.now() + 20_000;
    while (!welcomed.some((e) => e.data?.user_id === "user_42")) {
      if (Date.now() > deadline) {
        const logs = await admin.plugins.getPluginLogs({ pluginId: "greeter-plugin", perPage: 30 });
        assert.fail(`no greeter.welcomed event within 20 s (got ${JSON.stringify(welcomed.map((e) => e.data))}); greeter's log:\n` +
          logs.logs.map((l) => `${l.level} ${l.message} ${JSON.stringify(l.metadata)}`).join("\n"));
      }
      await sleep(50);
    }
    const ev = welcomed.find((e) => e.data?.user_id === "user_42")!;
    assert.equal(ev.source, "greeter-plugin");
    assert.equal(ev.data?.logins, 1);

    // A greeting: greeter asks analytics-plugin (Go) for the user's activity, which counted
    // the login.
    let reply: Record<string, unknown> = {};
    const until = Date.now() + 20_000;
    for (;;) {
      const res = await admin.messaging.sendMessage({ pluginId: "greeter-plugin", targetPlugin: "greeter-plugin", messageType: "greet", data: { user_id: "user_42" } });
      reply = (res.response?.data ?? {}) as Record<string, unknown>;
      const activity = reply.activity as Record<string, unknown> | null;
      if (activity && activity.total_sessions === 1) break;
      if (Date.now() > until) assert.fail(`greet answered ${JSON.stringify(res.response)}`);
      await sleep(200);
    }
    assert.equal(reply.text, "Hello, user_42!");
    assert.equal(reply.logins_seen, 1);

    // Its log came through the host, and it stops gracefully when disabled.
    const logs = await admin.plugins.getPluginLogs({ pluginId: "greeter-plugin", search: "Greeter started" });
    assert.ok(logs.logs.length >= 1, "the plugin's startup log line");
    watch.abort();
    await feed;
    await admin.plugins.disablePlugin({ pluginId: "greeter-plugin", reason: "test over" });
    const p = (await admin.plugins.getPlugin({ pluginId: "greeter-plugin" })).plugin;
    assert.equal(p?.status, "inactive");
  });
});
