/**
 * The TypeScript plugin SDK: a Nexus plugin written for Node.js (20+).
 *
 * ```ts
 * import { runPlugin } from "@nexus-platform/client/plugin";
 *
 * await runPlugin({
 *   version: "1.0.0",
 *   messageTypes: ["greet"],
 *   onMessage: async (m) => ({ greeting: `hello ${m.data.name}` }),
 *   onEvent: async (e) => console.log("event", e.type, e.data),
 * });
 * ```
 *
 * A plugin process holds one long-lived bidirectional stream to the host
 * (`PluginHostService/Connect`, gRPC over HTTP/2): it says hello, gets its configuration and
 * grants in the welcome, then receives messages, events and broadcasts, health checks,
 * configuration changes and the shutdown request, and sends replies, acknowledgements, its
 * own messages, events, broadcasts, subscriptions, key-value and discovery requests, all on
 * that stream. The host, the token and the plugin id come from the environment the host
 * launches plugins with (`NEXUS_HOST`, `NEXUS_PLUGIN_TOKEN`, `NEXUS_PLUGIN_ID`), or from the
 * options. A stream that breaks is opened again with exponential backoff and jitter; SIGTERM
 * and SIGINT, the host's shutdown request and `signal` end the plugin gracefully.
 *
 * Handlers run concurrently, each with an AbortSignal that fires when the host cancels the
 * delivery (its sender gave up) or the plugin stops. A message handler's return value is the
 * reply; a thrown error replies with status "error". An event or broadcast handler that returns
 * acknowledges the delivery; one that throws leaves it to be delivered again after the
 * processing timeout, unless it throws {@link PermanentError}, which dead-letters it.
 *
 * @module
 */

import { connect as netConnect } from "node:net";
import { create, fromJson, toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { timestampDate, timestampNow, ValueSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  AckAction,
  ConnectRequestSchema,
  DeliveryKind,
  PluginHostService,
  type ConnectRequest,
  type ConnectResponse,
  type Deliver,
  type KvEntry,
  type RequestReply,
} from "../gen/nexus/pluginhost/v1/pluginhost_pb.js";
import type { ServiceProvider } from "../gen/nexus/plugin/v1/messaging_pb.js";
import { HttpCall, type HttpHandler } from "./http.js";

export type { Caller, HttpContext, HttpHandler } from "./http.js";

/** The SDK's name and version, sent in hello. */
export const SDK = "nexus-ts/0.1.0";

/** A message delivered to the plugin. */
export interface IncomingMessage {
  /** Stable across redeliveries. */
  id: string;
  /** The sending plugin's id, or "admin", "user" or "system". */
  source: string;
  type: string;
  data: JsonObject;
  /** 1 on first delivery. */
  attempt: number;
  /** When the sender stops waiting, if it said. */
  deadline?: Date;
}

/** An event or a broadcast delivered to the plugin. */
export interface IncomingEvent {
  id: string;
  source: string;
  /** The event type (for a broadcast, its message type). */
  type: string;
  data: JsonObject;
  attempt: number;
  /** "event" or "broadcast". */
  kind: "event" | "broadcast";
}

/** What a handler gets besides the delivery. */
export interface HandlerContext {
  /** Fires when the host cancels the delivery or the plugin stops. */
  signal: AbortSignal;
  session: PluginSession;
  /**
   * Keeps an event or broadcast from being redelivered for `seconds` more (default: the
   * processing timeout). The SDK already does so while the handler runs, every half
   * processing timeout; call it to ask for more at once. A no-op for messages, which their
   * reply settles.
   */
  extend(seconds?: number): void;
}

/** One health check of a report. */
export interface Check {
  name: string;
  status: "pass" | "warning" | "fail";
  responseTimeMs?: number;
  details?: string;
  value?: number;
  threshold?: number;
  unit?: string;
}

/** A configuration change pushed by the host. */
export interface ConfigChange {
  /** The whole new configuration. */
  config: JsonObject;
  updatedFields: string[];
  restartRequired: boolean;
}

/** A plugin: its identity and its handlers, all optional. */
export interface PluginDefinition {
  /** The plugin's own version (sent in hello). */
  version: string;
  /** Services it offers, for discovery. */
  services?: string[];
  /** Message types it handles. */
  messageTypes?: string[];
  /** Event type patterns to subscribe to beyond the manifest's (needs events:subscribe). */
  subscriptions?: string[];
  /** Called after each welcome (first connection and reconnections). */
  onStart?: (session: PluginSession) => void | Promise<void>;
  /** Answers a message; the returned object is the reply's data. */
  onMessage?: (message: IncomingMessage, ctx: HandlerContext) => JsonObject | void | Promise<JsonObject | void>;
  /** Handles an event. */
  onEvent?: (event: IncomingEvent, ctx: HandlerContext) => void | Promise<void>;
  /** Handles a broadcast; events' handler when absent. */
  onBroadcast?: (event: IncomingEvent, ctx: HandlerContext) => void | Promise<void>;
  /** Reports health when the host asks; one passing check when absent. */
  onHealthCheck?: (session: PluginSession) => Check[] | Promise<Check[]>;
  /** Accepts a configuration change, or throws to refuse it (the host keeps the old one). */
  onConfigChange?: (change: ConfigChange, session: PluginSession) => void | Promise<void>;
  /** Called once before the plugin stops (host's shutdown request, signal, SIGTERM). */
  onShutdown?: (reason: string) => void | Promise<void>;
  /**
   * Serves the plugin's HTTP endpoints (the manifest's `api_endpoints`), Fetch API style: the
   * host's call as a Request, the answer as a Response, both bodies streamed. A handler that
   * throws answers 500; without one the plugin answers 501.
   */
  http?: HttpHandler;
}

/** Options of {@link runPlugin}; the environment supplies what is left out. */
export interface RunOptions {
  /** The host's URL (`NEXUS_HOST`): http://host:port or unix:///path/to/socket. */
  host?: string;
  /** The plugin token (`NEXUS_PLUGIN_TOKEN`). */
  token?: string;
  /** The plugin id (`NEXUS_PLUGIN_ID`). */
  pluginId?: string;
  /** Names this instance; the host assigns one when empty. */
  instanceId?: string;
  /** Ends the plugin gracefully when aborted. */
  signal?: AbortSignal;
  /** Stop on SIGTERM and SIGINT (default true). */
  handleSignals?: boolean;
  /** Reconnection delays: from initialMs (500), doubling up to maxMs (30000), with jitter. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** How long a graceful shutdown may take for the handlers in flight (default 10000 ms). */
  shutdownTimeoutMs?: number;
  /** Where the SDK reports what it does (default: nothing). */
  logger?: (level: "debug" | "info" | "warn" | "error", message: string) => void;
}

/** A request the host refused: its Nexus error code and message. */
export class PluginError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = "PluginError";
  }
}

/** Thrown by an event or broadcast handler: the delivery can never succeed; dead-letter it. */
export class PermanentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PermanentError";
  }
}

/** The reply to a message the plugin sent. */
export interface SendResult {
  messageId: string;
  status: string;
  data: JsonObject;
}

/** A key-value entry of the plugin's store. */
export interface KvItem {
  key: string;
  value: JsonValue;
  version: bigint;
  expiresAt?: Date;
}

/** The plugin's side of one connection: what it can ask of the host. */
export class PluginSession {
  /** The configuration, updated when the plugin accepts a change. */
  config: JsonObject = {};
  grantedPermissions: string[] = [];
  sessionId = "";
  instanceId = "";
  hostVersion = "";
  /** How long an event or broadcast may stay unacknowledged before it is redelivered. */
  processingTimeoutMs = 0;

  private seq = 0;
  private readonly pending = new Map<string, { resolve: (r: RequestReply) => void; reject: (e: Error) => void }>();

  /** @internal `write` sends a frame on the open connection. */
  constructor(readonly write: (req: ConnectRequest) => void) {}

  /** Sends a message to another plugin and waits for its reply (needs messages:send). */
  async send(target: string, messageType: string, data: JsonObject = {}, opts: { timeoutSeconds?: number } = {}): Promise<SendResult> {
    const timeoutSeconds = opts.timeoutSeconds ?? 30;
    const r = await this.request(
      (requestId) => ({ case: "send", value: { requestId, targetPlugin: target, messageType, data, timeoutSeconds } }),
      (timeoutSeconds + 5) * 1000,
      (requestId) => this.write(create(ConnectRequestSchema, { frame: { case: "cancelSend", value: { requestId } } })),
    );
    return { messageId: r.messageId, status: r.status, data: r.data ?? {} };
  }

  /** Emits an event (needs events:emit); resolves with its id once the host stored it. */
  async emit(type: string, data: JsonObject = {}): Promise<string> {
    const r = await this.request((requestId) => ({ case: "emit", value: { requestId, type, data } }));
    return r.id;
  }

  /** Broadcasts a message to plugins, all or of some categories; resolves with the recipients. */
  async broadcast(messageType: string, data: JsonObject = {}, opts: { categories?: string[]; exclude?: string[] } = {}): Promise<string[]> {
    const r = await this.request((requestId) => ({
      case: "broadcast",
      value: { requestId, messageType, data, targetCategories: opts.categories ?? [], excludePlugins: opts.exclude ?? [] },
    }));
    return r.recipients;
  }

  /** Adds and removes event subscriptions at run time (needs events:subscribe). */
  async subscribe(add: string[], remove: string[] = []): Promise<void> {
    await this.request((requestId) => ({ case: "subscribe", value: { requestId, add, remove } }));
  }

  /** Finds the plugins that provide a service or handle a message type. */
  async discover(opts: { service?: string; messageType?: string } = {}): Promise<ServiceProvider[]> {
    const r = await this.request((requestId) => ({
      case: "discover",
      value: { requestId, service: opts.service ?? "", messageType: opts.messageType ?? "" },
    }));
    return r.providers;
  }

  /**
   * The plugin's key-value store (needs database:read / database:write). `owner` reads
   * another plugin's store, when it shared the key.
   */
  readonly kv = {
    get: async (key: string, opts: { owner?: string } = {}): Promise<KvItem | undefined> => {
      const r = await this.kvRequest({ case: "get", value: { key } }, opts.owner);
      return r.found && r.entries[0] ? kvItem(r.entries[0]) : undefined;
    },
    /** Writes; with expectedVersion (0: only if absent) only if the entry is at that version. */
    put: async (key: string, value: JsonValue, opts: { ttlSeconds?: number; expectedVersion?: bigint } = {}): Promise<boolean> => {
      const r = await this.kvRequest({
        case: "put",
        value: {
          key,
          value: fromJson(ValueSchema, value),
          ttlSeconds: opts.ttlSeconds ?? 0,
          ...(opts.expectedVersion !== undefined ? { expectedVersion: opts.expectedVersion } : {}),
        },
      });
      return opts.expectedVersion === undefined || r.swapped;
    },
    delete: async (key: string): Promise<boolean> => {
      const r = await this.kvRequest({ case: "delete", value: { key } });
      return r.found;
    },
    list: async (prefix = "", opts: { limit?: number; after?: string; owner?: string } = {}): Promise<{ items: KvItem[]; next: string }> => {
      const r = await this.kvRequest({ case: "list", value: { prefix, limit: opts.limit ?? 0, after: opts.after ?? "" } }, opts.owner);
      return { items: r.entries.map(kvItem), next: r.next };
    },
  };

  /** Sends a log entry to the host's log of the plugin. */
  log(level: "DEBUG" | "INFO" | "WARNING" | "ERROR", message: string, metadata?: JsonObject): void {
    this.write(create(ConnectRequestSchema, { frame: { case: "log", value: { timestamp: timestampNow(), level, message, metadata } } }));
  }

  /** @internal Resolves a pending request with the host's reply. */
  resolve(r: RequestReply): void {
    const p = this.pending.get(r.requestId);
    if (!p) return;
    this.pending.delete(r.requestId);
    if (r.errorCode) p.reject(new PluginError(r.errorCode, r.errorMessage));
    else p.resolve(r);
  }

  /** @internal Fails every pending request: the connection is gone. */
  failAll(why: string): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(new PluginError("PLUGIN_UNAVAILABLE", why));
    }
  }

  private async kvRequest(op: KvOp, owner = ""): Promise<NonNullable<RequestReply["kv"]>> {
    const r = await this.request((requestId) => ({ case: "kv", value: { requestId, owner, op } }));
    if (!r.kv) throw new PluginError("INTERNAL_ERROR", "the host's key-value answer is empty");
    return r.kv;
  }

  private request(
    frame: (requestId: string) => ConnectRequest["frame"] | { case: string; value: object },
    timeoutMs = 30_000,
    onTimeout?: (requestId: string) => void,
  ): Promise<RequestReply> {
    const requestId = `r${++this.seq}`;
    return new Promise<RequestReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(requestId)) {
          onTimeout?.(requestId);
          reject(new PluginError("PLUGIN_COMMUNICATION_TIMEOUT", `no answer from the host within ${timeoutMs} ms`));
        }
      }, timeoutMs);
      timer.unref?.();
      this.pending.set(requestId, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.write(create(ConnectRequestSchema, { frame: frame(requestId) as ConnectRequest["frame"] }));
    });
  }
}

/** A key-value operation as the SDK writes it (nested messages as plain objects). */
type KvOp = { case: "get" | "put" | "delete" | "list"; value: object };

function kvItem(e: KvEntry): KvItem {
  return {
    key: e.key,
    value: e.value === undefined ? null : toJson(ValueSchema, e.value),
    version: e.version,
    ...(e.expiresAt ? { expiresAt: timestampDate(e.expiresAt) } : {}),
  };
}

/** A push-based stream of requests: what the plugin sends on the open connection. */
class RequestQueue implements AsyncIterable<ConnectRequest> {
  private items: ConnectRequest[] = [];
  private waiter: (() => void) | undefined;
  private closed = false;

  push(r: ConnectRequest): void {
    if (this.closed) return;
    this.items.push(r);
    this.waiter?.();
  }

  close(): void {
    this.closed = true;
    this.waiter?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ConnectRequest> {
    for (;;) {
      while (this.items.length > 0) yield this.items.shift()!;
      if (this.closed) return;
      await new Promise<void>((res) => (this.waiter = res));
      this.waiter = undefined;
    }
  }
}

/**
 * Runs a plugin until it is told to stop (the host's shutdown request, `signal`, SIGTERM or
 * SIGINT), reconnecting when the stream breaks. It rejects when the host refuses the plugin
 * for good (an unknown or revoked token, a disabled or uninstalled plugin).
 */
export async function runPlugin(def: PluginDefinition, opts: RunOptions = {}): Promise<void> {
  const host = opts.host ?? process.env.NEXUS_HOST;
  const token = opts.token ?? process.env.NEXUS_PLUGIN_TOKEN;
  const pluginId = opts.pluginId ?? process.env.NEXUS_PLUGIN_ID;
  if (!host || !token || !pluginId) {
    throw new Error("runPlugin needs the host, the token and the plugin id: NEXUS_HOST, NEXUS_PLUGIN_TOKEN and NEXUS_PLUGIN_ID, or the options");
  }
  const log = opts.logger ?? (() => {});
  const stop = new AbortController();
  let stopReason = "stopped";
  const onAbort = () => {
    stopReason = "the plugin was asked to stop";
    stop.abort();
  };
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  const onSignal = (sig: string) => () => {
    stopReason = `received ${sig}`;
    stop.abort();
  };
  const sigterm = onSignal("SIGTERM");
  const sigint = onSignal("SIGINT");
  if (opts.handleSignals ?? true) {
    process.once("SIGTERM", sigterm);
    process.once("SIGINT", sigint);
  }
  if (opts.signal?.aborted) onAbort();

  const initialMs = opts.backoff?.initialMs ?? 500;
  const maxMs = opts.backoff?.maxMs ?? 30_000;
  let bound = 0;
  const { baseUrl, sessionManager } = transportTarget(host);
  const transport = createGrpcTransport({ baseUrl, sessionManager });
  const client = createClient(PluginHostService, transport);
  let shutdownCalled = false;
  const shutdown = async (reason: string) => {
    if (shutdownCalled) return;
    shutdownCalled = true;
    await def.onShutdown?.(reason);
  };
  try {
    while (!stop.signal.aborted) {
      const outcome = await runSession(def, client, token, pluginId, opts, stop.signal, log, shutdown);
      if (outcome.kind === "shutdown") return;
      if (outcome.kind === "refused") throw outcome.error;
      if (outcome.welcomed) bound = 0;
      if (stop.signal.aborted) break;
      bound = Math.min(maxMs, bound === 0 ? initialMs : bound * 2);
      const delay = bound / 2 + Math.random() * (bound / 2);
      log("warn", `plugin stream ended (${outcome.why}); reconnecting in ${Math.round(delay)} ms`);
      await new Promise<void>((res) => {
        const onStop = () => {
          clearTimeout(t);
          res();
        };
        const t = setTimeout(() => {
          stop.signal.removeEventListener("abort", onStop);
          res();
        }, delay);
        stop.signal.addEventListener("abort", onStop, { once: true });
      });
    }
    await shutdown(stopReason);
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
    process.removeListener("SIGTERM", sigterm);
    process.removeListener("SIGINT", sigint);
    sessionManager?.abort();
  }
}

/** Where the transport connects: an HTTP/2 base URL, through a Unix socket for unix:// hosts. */
function transportTarget(host: string): { baseUrl: string; sessionManager?: Http2SessionManager } {
  const u = new URL(host);
  if (u.protocol !== "unix:") return { baseUrl: host.replace(/\/+$/, "") };
  const path = decodeURIComponent(u.pathname);
  const baseUrl = "http://localhost";
  return { baseUrl, sessionManager: new Http2SessionManager(baseUrl, undefined, { createConnection: () => netConnect(path) }) };
}

type SessionOutcome =
  | { kind: "shutdown" }
  | { kind: "refused"; error: Error }
  | { kind: "broken"; why: string; welcomed: boolean };

/** Codes with which the host refuses a plugin for good: reconnecting would not help. */
const FINAL_CODES = new Set(["unauthenticated", "permission_denied", "failed_precondition", "invalid_argument", "not_found"]);

/** One connection: hello, welcome, then frames until it ends. */
async function runSession(
  def: PluginDefinition,
  client: ReturnType<typeof createClient<typeof PluginHostService>>,
  token: string,
  pluginId: string,
  opts: RunOptions,
  stop: AbortSignal,
  log: NonNullable<RunOptions["logger"]>,
  shutdown: (reason: string) => Promise<void>,
): Promise<SessionOutcome> {
  const queue = new RequestQueue();
  const conn = new AbortController();
  const onStop = () => queue.close(); // ends the request side: the host sees a goodbye
  stop.addEventListener("abort", onStop, { once: true });
  const session = new PluginSession((r) => queue.push(r));
  const handlers = new Map<string, AbortController>();
  const calls = new Map<string, HttpCall>();
  const inFlight = new Set<Promise<void>>();
  let welcomed = false;
  queue.push(
    create(ConnectRequestSchema, {
      frame: {
        case: "hello",
        value: {
          pluginId,
          instanceId: opts.instanceId ?? "",
          version: def.version,
          sdk: SDK,
          services: def.services ?? [],
          messageTypes: def.messageTypes ?? [],
          subscriptions: def.subscriptions ?? [],
        },
      },
    }),
  );
  const track = (p: Promise<void>) => {
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  };
  try {
    const responses = client.connect(queue, { headers: { authorization: `Bearer ${token}` }, signal: conn.signal });
    for await (const res of responses) {
      const f = res.frame;
      switch (f.case) {
        case "welcome": {
          const w = f.value;
          welcomed = true;
          session.config = w.config ?? {};
          session.grantedPermissions = w.grantedPermissions;
          session.sessionId = w.sessionId;
          session.instanceId = w.instanceId;
          session.hostVersion = w.hostVersion;
          session.processingTimeoutMs = w.processingTimeoutSeconds * 1000;
          log("info", `connected as ${pluginId}/${w.instanceId}`);
          if (def.onStart) track(Promise.resolve(def.onStart(session)).catch((e) => log("error", `onStart: ${String(e)}`)));
          break;
        }
        case "deliver":
          track(deliver(def, session, f.value, handlers, stop));
          break;
        case "reply":
          session.resolve(f.value);
          break;
        case "healthCheck": {
          const checkId = f.value.checkId;
          track(
            (async () => {
              let checks: Check[];
              try {
                checks = def.onHealthCheck ? await def.onHealthCheck(session) : [{ name: "plugin", status: "pass" }];
              } catch (e) {
                checks = [{ name: "plugin", status: "fail", details: String(e) }];
              }
              queue.push(create(ConnectRequestSchema, { frame: { case: "healthReport", value: { checkId, checks } } }));
            })(),
          );
          break;
        }
        case "configChanged": {
          const c = f.value;
          track(
            (async () => {
              const change: ConfigChange = { config: c.config ?? {}, updatedFields: c.updatedFields, restartRequired: c.restartRequired };
              let error = "";
              try {
                await def.onConfigChange?.(change, session);
                session.config = change.config;
              } catch (e) {
                error = e instanceof Error ? e.message : String(e);
              }
              queue.push(create(ConnectRequestSchema, { frame: { case: "configAck", value: { changeId: c.changeId, accepted: error === "", error } } }));
            })(),
          );
          break;
        }
        case "cancel":
          handlers.get(f.value.deliveryId)?.abort(new Error(`cancelled by the host: ${f.value.reason}`));
          break;
        case "httpRequest": {
          const call = new HttpCall(f.value, session.write);
          const id = f.value.requestId;
          calls.set(id, call);
          const onStop = () => call.abort.abort(new Error("the plugin is stopping"));
          stop.addEventListener("abort", onStop, { once: true });
          track(
            call.serve(def.http).finally(() => {
              calls.delete(id);
              stop.removeEventListener("abort", onStop);
            }),
          );
          break;
        }
        case "httpRequestBody":
          calls.get(f.value.requestId)?.pushBody(f.value.chunk, f.value.done);
          break;
        case "httpResponseWindow":
          calls.get(f.value.requestId)?.grant(Number(f.value.bytes));
          break;
        case "httpCancel":
          calls.get(f.value.requestId)?.abort.abort(new Error(`cancelled by the host: ${f.value.reason}`));
          break;
        case "shutdown": {
          const s = f.value;
          log("info", `the host asks the plugin to stop: ${s.reason}`);
          await drain(inFlight, s.timeoutSeconds > 0 ? s.timeoutSeconds * 1000 : (opts.shutdownTimeoutMs ?? 10_000));
          await shutdown(s.reason || "the host asked");
          queue.close();
          conn.abort();
          return { kind: "shutdown" };
        }
        default:
          log("debug", `frame ${String(f.case)} not handled by this SDK`);
      }
    }
    if (stop.aborted) {
      await drain(inFlight, opts.shutdownTimeoutMs ?? 10_000);
      return { kind: "shutdown" };
    }
    return { kind: "broken", why: "the host ended the stream", welcomed };
  } catch (e) {
    if (stop.aborted) return { kind: "shutdown" };
    const code = (e as { code?: unknown }).code;
    const codeName = typeof code === "number" ? connectCodeName(code) : "";
    if (!welcomed && FINAL_CODES.has(codeName)) {
      return { kind: "refused", error: e instanceof Error ? e : new Error(String(e)) };
    }
    return { kind: "broken", why: e instanceof Error ? e.message : String(e), welcomed };
  } finally {
    stop.removeEventListener("abort", onStop);
    for (const h of handlers.values()) h.abort(new Error("the connection ended"));
    for (const c of calls.values()) c.abort.abort(new Error("the connection ended"));
    session.failAll("the connection to the host ended");
    queue.close();
  }
}

function connectCodeName(code: number): string {
  // The Connect codes (connectrpc.com/docs/protocol#error-codes) by number.
  const names = ["ok", "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists",
    "permission_denied", "resource_exhausted", "failed_precondition", "aborted", "out_of_range", "unimplemented",
    "internal", "unavailable", "data_loss", "unauthenticated"];
  return names[code] ?? "";
}

/** Waits for the handlers in flight, at most ms. */
async function drain(inFlight: Set<Promise<void>>, ms: number): Promise<void> {
  if (inFlight.size === 0) return;
  let t: NodeJS.Timeout | undefined;
  await Promise.race([Promise.allSettled([...inFlight]), new Promise<void>((res) => (t = setTimeout(res, ms)))]);
  clearTimeout(t);
}

/** Runs a delivery's handler and settles it: a reply for a message, an ack for the rest. */
async function deliver(def: PluginDefinition, session: PluginSession, d: Deliver, handlers: Map<string, AbortController>, stop: AbortSignal): Promise<void> {
  const ac = new AbortController();
  const onStop = () => ac.abort(new Error("the plugin is stopping"));
  stop.addEventListener("abort", onStop, { once: true });
  handlers.set(d.deliveryId, ac);
  const out = session.write;
  const timeoutS = Math.max(1, Math.round(session.processingTimeoutMs / 1000));
  const isMessage = d.kind === DeliveryKind.MESSAGE;
  const extend = (seconds = timeoutS) => {
    if (isMessage) return;
    out(create(ConnectRequestSchema, {
      frame: { case: "ack", value: { deliveryId: d.deliveryId, action: AckAction.EXTEND, extendSeconds: Math.min(600, Math.max(1, Math.round(seconds))) } },
    }));
  };
  const ctx: HandlerContext = { signal: ac.signal, session, extend };
  // A handler that outlives half the processing timeout keeps its delivery: the host would
  // otherwise hand it to another instance (or to this one again) while it still works.
  const keepAlive = !isMessage && session.processingTimeoutMs > 0 ? setInterval(() => extend(), session.processingTimeoutMs / 2) : undefined;
  try {
    if (isMessage) {
      const msg: IncomingMessage = {
        id: d.id, source: d.source, type: d.type, data: d.data ?? {}, attempt: d.attempt,
        ...(d.deadline ? { deadline: timestampDate(d.deadline) } : {}),
      };
      try {
        if (!def.onMessage) throw new Error(`this plugin handles no messages (${d.type})`);
        const data = (await def.onMessage(msg, ctx)) ?? {};
        out(create(ConnectRequestSchema, { frame: { case: "reply", value: { deliveryId: d.deliveryId, status: "success", data } } }));
      } catch (e) {
        out(create(ConnectRequestSchema, {
          frame: { case: "reply", value: { deliveryId: d.deliveryId, status: "error", errorMessage: e instanceof Error ? e.message : String(e) } },
        }));
      }
      return;
    }
    const kind = d.kind === DeliveryKind.BROADCAST ? "broadcast" : "event";
    const ev: IncomingEvent = { id: d.id, source: d.source, type: d.type, data: d.data ?? {}, attempt: d.attempt, kind };
    const handler = kind === "broadcast" ? (def.onBroadcast ?? def.onEvent) : def.onEvent;
    try {
      await handler?.(ev, ctx);
      out(create(ConnectRequestSchema, { frame: { case: "ack", value: { deliveryId: d.deliveryId, action: AckAction.DONE } } }));
    } catch (e) {
      if (e instanceof PermanentError) {
        out(create(ConnectRequestSchema, { frame: { case: "ack", value: { deliveryId: d.deliveryId, action: AckAction.DEAD_LETTER, reason: e.message } } }));
      }
      // Any other failure is left unacknowledged: the host delivers it again after the
      // processing timeout.
    }
  } finally {
    clearInterval(keepAlive);
    handlers.delete(d.deliveryId);
    stop.removeEventListener("abort", onStop);
  }
}
