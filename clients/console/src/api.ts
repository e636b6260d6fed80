// The console's only way to the server: the generated Connect clients over the Connect
// protocol (binary), on the page's own origin, with the signed-in token on every call.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AccessService, type WhoAmIResponse } from "../gen/nexus/plugin/v1/access_pb.js";
import { ClusterService } from "../gen/nexus/plugin/v1/cluster_pb.js";
import { MessagingService } from "../gen/nexus/plugin/v1/messaging_pb.js";
import { PluginService } from "../gen/nexus/plugin/v1/plugin_pb.js";
import { RepositoryService } from "../gen/nexus/plugin/v1/repository_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";

/** The API's clients, one per service. */
export interface Api {
  plugins: Client<typeof PluginService>;
  repos: Client<typeof RepositoryService>;
  messaging: Client<typeof MessagingService>;
  cluster: Client<typeof ClusterService>;
  access: Client<typeof AccessService>;
}

/** Makes the clients for a token. */
export function createApi(token: string, baseUrl = location.origin): Api {
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("Authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createConnectTransport({ baseUrl, useBinaryFormat: true, interceptors: [bearer] });
  return {
    plugins: createClient(PluginService, transport),
    repos: createClient(RepositoryService, transport),
    messaging: createClient(MessagingService, transport),
    cluster: createClient(ClusterService, transport),
    access: createClient(AccessService, transport),
  };
}

/** A field the server refused, in the request's words (e.g. `config.max_events`). */
export interface FieldProblem {
  field: string;
  description: string;
}

/** The problems of an error that concern field (or a part of it: field.x, field[0]). */
export function fieldProblems(error: ApiError | undefined, field: string): FieldProblem[] {
  return (error?.fields ?? []).filter((f) => f.field === field || f.field.startsWith(`${field}.`) || f.field.startsWith(`${field}[`));
}

/** An API error as the console shows it: the reference's code, the message, the bad fields. */
export interface ApiError {
  /** The API error code (PLUGIN_NOT_FOUND, VALIDATION_ERROR, ...), or the transport's code. */
  code: string;
  message: string;
  fields: FieldProblem[];
  /** True when the token is missing, unknown, revoked or expired: sign in again. */
  unauthenticated: boolean;
  /** True when the call was aborted by the page (navigation away, a closed feed). */
  aborted: boolean;
}

const NEXUS_ERROR_DOMAIN = "nexus.dev";

/** Reads any thrown value as an ApiError. */
export function toApiError(err: unknown): ApiError {
  const ce = ConnectError.from(err);
  const infos = ce.findDetails(ErrorInfoSchema);
  const info = infos.find((i) => i.domain === NEXUS_ERROR_DOMAIN) ?? infos[0];
  const fields: FieldProblem[] = [];
  for (const br of ce.findDetails(BadRequestSchema)) {
    for (const v of br.fieldViolations) fields.push({ field: v.field, description: v.description });
  }
  const code = info?.reason || transportCode(ce.code);
  return {
    code,
    message: ce.rawMessage || ce.message,
    fields,
    unauthenticated: ce.code === Code.Unauthenticated,
    aborted: ce.code === Code.Canceled,
  };
}

function transportCode(code: Code): string {
  switch (code) {
    case Code.Unavailable:
      return "UNAVAILABLE";
    case Code.DeadlineExceeded:
      return "TIMEOUT";
    case Code.Canceled:
      return "CANCELED";
    case Code.Unauthenticated:
      return "UNAUTHENTICATED";
    case Code.PermissionDenied:
      return "PERMISSION_DENIED";
    default:
      return Code[code]?.toUpperCase() ?? "UNKNOWN";
  }
}

/** What the signed-in token is, and what it may call. */
export class Session {
  readonly api: Api;
  readonly me: WhoAmIResponse;
  private readonly allowed: Set<string>;

  constructor(readonly token: string, api: Api, me: WhoAmIResponse) {
    this.api = api;
    this.me = me;
    this.allowed = new Set(me.allowedProcedures.map((p) => p.slice(p.lastIndexOf("/") + 1)));
  }

  /** Whether the token may call the method (by its short name, such as "InstallPlugin"). */
  can(method: string): boolean {
    return this.allowed.has(method);
  }
}

// The token lives in sessionStorage: it ends with the browser tab, is never written to
// localStorage, a cookie or a URL, and is sent only in the Authorization header.
const TOKEN_KEY = "nexus.console.token";

/** Checks a token with the server and makes a session of it (rejects with an ApiError). */
export async function signIn(token: string): Promise<Session> {
  const api = createApi(token);
  try {
    const me = await api.access.whoAmI({});
    sessionStorage.setItem(TOKEN_KEY, token);
    return new Session(token, api, me);
  } catch (err) {
    throw toApiError(err);
  }
}

/** The session kept by this tab, if its token still works. */
export async function resumeSession(): Promise<Session | undefined> {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return undefined;
  try {
    return await signIn(token);
  } catch (err) {
    // A token the server no longer takes is forgotten; any other failure (the server is
    // down) is shown, and the token is kept for the next try.
    if ((err as ApiError).unauthenticated) {
      sessionStorage.removeItem(TOKEN_KEY);
      return undefined;
    }
    throw err;
  }
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}
