// End-to-end tests of @nexus-platform/client against the real Nexus server binary (see
// harness.ts: a missing binary fails the run; it is never skipped).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
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
import { ADMIN_TOKEN, STARTUP_TIMEOUT_MS, STOP_GRACE_MS, startServer, stopServer, type RunningServer } from "./harness.js";

const CALL_TIMEOUT_MS = 10_000;
const PROTOCOLS: NexusProtocol[] = ["connect", "connect-json", "grpc-web", "grpc"];

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
      await startServer((s) => (server = s), "nexus-ts-client-");
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

  test("ErrorCode lists every code of the server's OpenAPI document", async () => {
    assert.ok(server);
    const res = await fetch(`${server.baseUrl}/openapi.json`);
    assert.equal(res.status, 200);
    const doc = (await res.json()) as { components: { schemas: { ErrorCode: { enum: string[] } } } };
    assert.deepEqual([...Object.values(ErrorCode)].sort(), [...doc.components.schemas.ErrorCode.enum].sort());
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
