/**
 * `@nexus-platform/client`: a typed Node.js client for the Nexus plugin platform.
 *
 * ```ts
 * import { createNexusClient, errorCode } from "@nexus-platform/client";
 *
 * const nexus = createNexusClient({ baseUrl: "http://127.0.0.1:8080", token: process.env.NEXUS_TOKEN });
 * const { plugins, summary } = await nexus.plugins.listPlugins({});
 * ```
 *
 * Calls speak the Connect protocol (binary protobuf) by default; `protocol` selects Connect with
 * JSON, gRPC-Web or gRPC instead. The server answers all four on one port.
 *
 * @module
 */

import {
  createClient,
  type Client,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { PluginService } from "../gen/nexus/plugin/v1/plugin_pb.js";
import { RepositoryService } from "../gen/nexus/plugin/v1/repository_pb.js";
import { MessagingService } from "../gen/nexus/plugin/v1/messaging_pb.js";

export { ErrorCode, ErrorInfoSchema, NEXUS_ERROR_DOMAIN, errorCode, errorInfo } from "./errors.js";
export type { ErrorInfo } from "./errors.js";

// The public API messages and services (nexus.plugin.v1): message types, their *Schema values
// (for create(), toJson() ...), and the PluginService, RepositoryService and MessagingService
// descriptors.
export * from "../gen/nexus/plugin/v1/common_pb.js";
export * from "../gen/nexus/plugin/v1/plugin_pb.js";
export * from "../gen/nexus/plugin/v1/repository_pb.js";
export * from "../gen/nexus/plugin/v1/messaging_pb.js";
/** The plugin host protocol (nexus.pluginhost.v1), spoken by plugin processes. */
export * as pluginhostv1 from "../gen/nexus/pluginhost/v1/pluginhost_pb.js";

// Commonly needed companions, so users need not depend on connect directly for them.
export { Code, ConnectError } from "@connectrpc/connect";
export type { CallOptions, Client, Interceptor, Transport } from "@connectrpc/connect";

/**
 * Wire protocol of a {@link NexusClient}:
 * - `"connect"`: Connect protocol, binary protobuf (default);
 * - `"connect-json"`: Connect protocol, JSON;
 * - `"grpc-web"`: gRPC-Web, binary protobuf;
 * - `"grpc"`: gRPC (always HTTP/2; the server speaks cleartext h2c unless it has TLS).
 */
export type NexusProtocol = "connect" | "connect-json" | "grpc-web" | "grpc";

/** A bearer token, or a function that supplies one per call (e.g. to refresh it). */
export type TokenSource = string | (() => string | Promise<string>);

/** Options of {@link createNexusClient}. */
export interface NexusClientOptions {
  /** Server base URL, e.g. "http://127.0.0.1:8080" (no trailing path needed). */
  baseUrl: string;
  /** Bearer token sent as `Authorization: Bearer <token>` on every call. Omit for none. */
  token?: TokenSource;
  /** Wire protocol; default "connect". */
  protocol?: NexusProtocol;
  /**
   * HTTP version. Default "1.1" for "connect", "connect-json" and "grpc-web"; "2" (the only one
   * allowed) for "grpc". Streaming from client to server needs "2".
   */
  httpVersion?: "1.1" | "2";
  /** Timeout applied to every call that does not set its own `timeoutMs`. */
  defaultTimeoutMs?: number;
  /** Further interceptors, run after the bearer-token interceptor. */
  interceptors?: Interceptor[];
}

/** A Nexus API client: one typed Connect client per public service, sharing a transport. */
export interface NexusClient {
  /** nexus.plugin.v1.PluginService: install, list, configure and operate plugins. */
  readonly plugins: Client<typeof PluginService>;
  /** nexus.plugin.v1.RepositoryService: plugin repositories and search. */
  readonly repositories: Client<typeof RepositoryService>;
  /** nexus.plugin.v1.MessagingService: messages and broadcasts between plugins. */
  readonly messaging: Client<typeof MessagingService>;
  /** The underlying transport, to create clients for other services. */
  readonly transport: Transport;
  /**
   * Closes the HTTP/2 connection of the client, if it has one (it idles out on its own
   * otherwise, and never keeps the process alive while idle). Calls in flight are aborted.
   */
  close(): void;
}

/**
 * Returns an interceptor that sends `Authorization: Bearer <token>` with every request.
 * An empty token sends no header.
 */
export function bearerTokenInterceptor(token: TokenSource): Interceptor {
  return (next) => async (req) => {
    const value = typeof token === "function" ? await token() : token;
    if (value !== "") {
      req.header.set("Authorization", `Bearer ${value}`);
    }
    return next(req);
  };
}

/**
 * Creates a Nexus API client.
 *
 * ```ts
 * const nexus = createNexusClient({ baseUrl: "http://127.0.0.1:8080", token, protocol: "grpc" });
 * const res = await nexus.plugins.getPlugin({ pluginId: "auth-plugin" });
 * ```
 *
 * Errors are thrown as {@link ConnectError}; {@link errorCode} gives their Nexus error code.
 */
export function createNexusClient(options: NexusClientOptions): NexusClient {
  const protocol = options.protocol ?? "connect";
  const interceptors: Interceptor[] = [];
  if (options.token !== undefined) {
    interceptors.push(bearerTokenInterceptor(options.token));
  }
  interceptors.push(...(options.interceptors ?? []));

  let httpVersion = options.httpVersion;
  if (protocol === "grpc") {
    if (httpVersion === "1.1") {
      throw new Error('createNexusClient: protocol "grpc" needs httpVersion "2"');
    }
    httpVersion = "2";
  }
  let sessionManager: Http2SessionManager | undefined;
  const http =
    httpVersion === "2"
      ? { httpVersion: "2" as const, sessionManager: (sessionManager = new Http2SessionManager(options.baseUrl)) }
      : { httpVersion: "1.1" as const };
  const common = {
    baseUrl: options.baseUrl,
    interceptors,
    ...(options.defaultTimeoutMs !== undefined ? { defaultTimeoutMs: options.defaultTimeoutMs } : {}),
  };

  let transport: Transport;
  switch (protocol) {
    case "connect":
      transport = createConnectTransport({ ...common, ...http, useBinaryFormat: true });
      break;
    case "connect-json":
      transport = createConnectTransport({ ...common, ...http, useBinaryFormat: false });
      break;
    case "grpc-web":
      transport = createGrpcWebTransport({ ...common, ...http, useBinaryFormat: true });
      break;
    case "grpc":
      transport = createGrpcTransport({ ...common, sessionManager: sessionManager! });
      break;
    default:
      throw new Error(`createNexusClient: unknown protocol ${String(protocol satisfies never)}`);
  }

  return {
    plugins: createClient(PluginService, transport),
    repositories: createClient(RepositoryService, transport),
    messaging: createClient(MessagingService, transport),
    transport,
    close() {
      sessionManager?.abort();
    },
  };
}
