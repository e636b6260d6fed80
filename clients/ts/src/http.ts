// HTTP endpoints of plugins on the TypeScript SDK (see plugin.ts): the host carries each call
// to one of the plugin's declared `api_endpoints` over the plugin's stream; this module turns
// it into a Fetch API Request for the plugin's handler and streams the handler's Response
// back, both bodies in chunks under the protocol's flow-control window.

import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ConnectRequestSchema, type ConnectRequest, type HttpRequest } from "../gen/nexus/pluginhost/v1/pluginhost_pb.js";

/**
 * Each side may have WINDOW bytes of one call's body in flight beyond what the other side
 * granted, in chunks of at most CHUNK bytes (pluginhost.proto).
 */
const WINDOW = 256 << 10;
const CHUNK = 64 << 10;

/** Who called one of the plugin's HTTP endpoints, as the host authenticated them. */
export interface Caller {
  /** False for a call without a token to a public endpoint. */
  authenticated: boolean;
  tokenId: string;
  name: string;
  /** admin, user or plugin. */
  role: string;
  /** The plugin a plugin token belongs to. */
  pluginId: string;
}

/** What an HTTP handler gets besides the request. */
export interface HttpContext {
  /** Fires when the caller goes away, the host's deadline passes or the plugin stops. */
  signal: AbortSignal;
  caller: Caller;
  /** The endpoint pattern that matched, method included ("GET /api/v1/users/{id}"). */
  pattern: string;
  /** The pattern's wildcards and what they matched. */
  params: Record<string, string>;
  /** The client's address, as the host saw it. */
  remoteAddr: string;
}

/** Serves the plugin's HTTP endpoints. */
export type HttpHandler = (request: Request, ctx: HttpContext) => Response | Promise<Response>;

/** One HTTP call the host carries to this instance. */
export class HttpCall {
  readonly abort = new AbortController();
  private credit = WINDOW; // response body bytes this side may still send
  private creditWaiter: (() => void) | undefined;
  private chunks: Uint8Array[] = [];
  private bodyDone: boolean;
  private bodyWaiter: (() => void) | undefined;
  private unacked = 0; // request body bytes read and not granted back yet

  constructor(
    private readonly req: HttpRequest,
    private readonly write: (r: ConnectRequest) => void,
  ) {
    if (req.body.length > 0) this.chunks.push(req.body);
    this.bodyDone = req.bodyDone;
    if (req.deadline) {
      const ms = timestampDate(req.deadline).getTime() - Date.now();
      const t = setTimeout(() => this.abort.abort(new Error("the host's deadline for the call passed")), Math.max(0, ms));
      t.unref?.();
      this.abort.signal.addEventListener("abort", () => clearTimeout(t), { once: true });
    }
  }

  /** A chunk of the request body from the host. */
  pushBody(chunk: Uint8Array, done: boolean): void {
    if (chunk.length > 0) this.chunks.push(chunk);
    this.bodyDone ||= done;
    if (this.chunks.reduce((n, c) => n + c.length, 0) > WINDOW) {
      this.abort.abort(new Error("the host sent more request body than the window allows"));
    }
    this.bodyWaiter?.();
  }

  /** Response body credit from the host. */
  grant(bytes: number): void {
    this.credit += bytes;
    this.creditWaiter?.();
  }

  /** Waits until the function given to arm is called, or the call is aborted. */
  private until(arm: (wake: () => void) => void): Promise<void> {
    return new Promise<void>((res) => {
      const onAbort = () => res();
      this.abort.signal.addEventListener("abort", onAbort, { once: true });
      arm(() => {
        this.abort.signal.removeEventListener("abort", onAbort);
        res();
      });
    });
  }

  /** Runs the handler and sends its answer. */
  async serve(handler: HttpHandler | undefined): Promise<void> {
    let res: Response;
    try {
      if (!handler) {
        res = new Response("this plugin serves no HTTP endpoints\n", { status: 501 });
      } else {
        res = await handler(this.request(), {
          signal: this.abort.signal,
          caller: {
            authenticated: this.req.caller?.authenticated ?? false,
            tokenId: this.req.caller?.tokenId ?? "",
            name: this.req.caller?.name ?? "",
            role: this.req.caller?.role ?? "",
            pluginId: this.req.caller?.pluginId ?? "",
          },
          pattern: this.req.pattern,
          params: { ...this.req.pathParams },
          remoteAddr: this.req.remoteAddr,
        });
      }
    } catch (e) {
      res = new Response("the plugin's handler failed\n", { status: 500, headers: { "content-type": "text/plain; charset=utf-8" } });
    }
    await this.respond(res);
  }

  /** The Fetch API request of the call; its body is read from the host's chunks. */
  private request(): Request {
    const url = `http://${this.req.host || "plugin"}${this.req.path}${this.req.query ? "?" + this.req.query : ""}`;
    const headers = new Headers();
    for (const h of this.req.headers) for (const v of h.values) headers.append(h.name, v);
    const method = this.req.method;
    const hasBody = method !== "GET" && method !== "HEAD" && !(this.bodyDone && this.chunks.length === 0);
    const init: RequestInit & { duplex?: "half" } = { method, headers, signal: this.abort.signal };
    if (hasBody) {
      init.body = new ReadableStream<Uint8Array>({ pull: (ctrl) => this.pull(ctrl) }, { highWaterMark: 0 });
      init.duplex = "half";
    }
    return new Request(url, init);
  }

  private async pull(ctrl: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    while (this.chunks.length === 0 && !this.bodyDone && !this.abort.signal.aborted) {
      await this.until((wake) => (this.bodyWaiter = wake));
      this.bodyWaiter = undefined;
    }
    if (this.abort.signal.aborted) {
      ctrl.error(this.abort.signal.reason);
      return;
    }
    const chunk = this.chunks.shift();
    if (!chunk) {
      ctrl.close();
      return;
    }
    ctrl.enqueue(chunk);
    this.unacked += chunk.length;
    if (this.unacked >= WINDOW / 4 && !this.bodyDone) {
      this.write(create(ConnectRequestSchema, { frame: { case: "httpWindow", value: { requestId: this.req.requestId, bytes: BigInt(this.unacked) } } }));
      this.unacked = 0;
    }
  }

  /**
   * Sends the answer: status and headers with the first bytes, the rest in chunks within
   * the host's window. An answer whose body ends within one chunk goes in one frame with its
   * Content-Length; a body that is slow to start gets its headers sent first (Server-Sent
   * Events reach the caller as they are written).
   */
  private async respond(res: Response): Promise<void> {
    const id = this.req.requestId;
    const headers: { name: string; values: string[] }[] = [];
    res.headers.forEach((value, name) => {
      const h = headers.find((x) => x.name === name);
      if (h) h.values.push(value);
      else headers.push({ name, values: [value] });
    });
    const reader = res.body?.getReader();
    let sent = false;
    let pending: Uint8Array = new Uint8Array(0);
    let ended = !reader;
    const send = async (chunk: Uint8Array, done: boolean) => {
      while (this.credit < chunk.length && !this.abort.signal.aborted) {
        await this.until((wake) => (this.creditWaiter = wake));
        this.creditWaiter = undefined;
      }
      if (this.abort.signal.aborted) throw this.abort.signal.reason;
      this.credit -= chunk.length;
      if (!sent) {
        sent = true;
        this.write(create(ConnectRequestSchema, { frame: { case: "httpResponse", value: { requestId: id, status: res.status, headers, body: chunk, done } } }));
      } else {
        this.write(create(ConnectRequestSchema, { frame: { case: "httpResponseBody", value: { requestId: id, chunk, done } } }));
      }
    };
    try {
      // The first bytes: the whole body if it ends within a chunk.
      while (!ended && pending.length < CHUNK) {
        const first = !sent && pending.length === 0;
        const read = reader!.read();
        const r = first ? await Promise.race([read, delay(50).then(() => undefined)]) : await read;
        if (r === undefined) {
          await send(new Uint8Array(0), false); // headers now; the body follows as it comes
          const next = await read;
          if (next.done) ended = true;
          else pending = concat(pending, next.value);
          break;
        }
        if (r.done) ended = true;
        else pending = concat(pending, r.value);
      }
      if (ended && !sent && pending.length <= CHUNK && !res.headers.has("content-length") && res.status !== 204 && res.status !== 304) {
        headers.push({ name: "content-length", values: [String(pending.length)] });
      }
      for (;;) {
        while (pending.length > CHUNK) {
          await send(pending.subarray(0, CHUNK), false);
          pending = pending.subarray(CHUNK);
        }
        if (ended) {
          await send(pending, true);
          return;
        }
        const r = await reader!.read();
        if (r.done) {
          ended = true;
        } else {
          if (pending.length > 0) {
            await send(pending, false);
            pending = new Uint8Array(0);
          }
          pending = concat(pending, r.value);
          if (pending.length <= CHUNK) {
            await send(pending, false);
            pending = new Uint8Array(0);
          }
        }
      }
    } catch {
      await reader?.cancel().catch(() => {});
    }
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function delay(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms).unref?.());
}
