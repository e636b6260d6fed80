// The configuration schema of a plugin as the server states it (pluginhost/configschema), and
// the pure logic of the configuration form: reading the schema, turning what the form holds
// into the patch UpdatePluginConfig takes, and placing the server's field violations.
//
// The dialect is not JSON Schema: a schema is a flat object mapping a field name to a spec
// with the keywords type (string, integer, number, boolean, array, object), default,
// required, secret, min, max, enum, pattern, description and restart_required. There are no
// nested properties or item schemas: array and object fields hold free-form JSON.
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";

/** What a set secret field reads as through the API (configschema.Hidden). */
export const HIDDEN = "***hidden***";

export type FieldType = "string" | "integer" | "number" | "boolean" | "array" | "object";

/** One field of a plugin's configuration schema. */
export interface FieldSpec {
  name: string;
  type: FieldType;
  /** The value the field takes when it is not set; undefined when there is none. */
  default?: JsonValue;
  required: boolean;
  /** Write-only through the API: the value is never shown, only whether it is set. */
  secret: boolean;
  /** Inclusive bounds: of the value for numbers, of the length in characters for strings, of the item count for arrays. */
  min?: number;
  max?: number;
  enum?: JsonValue[];
  /** An unanchored RE2 regular expression that string values must match. */
  pattern?: string;
  description: string;
  /** Changing the field needs a restart of the plugin to take effect. */
  restartRequired: boolean;
}

const types: FieldType[] = ["string", "integer", "number", "boolean", "array", "object"];

function isObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Reads a schema as the API returns it. The server has validated it; a spec that is not an
 * object or has an unknown type is still shown, as a JSON field, so no field disappears.
 * Required fields come first, then the others, each group by name.
 */
export function parseSchema(raw: JsonObject | undefined): FieldSpec[] {
  const out: FieldSpec[] = [];
  for (const [name, spec] of Object.entries(raw ?? {})) {
    const s: JsonObject = isObject(spec) ? spec : {};
    const type = types.find((t) => t === s.type) ?? "object";
    out.push({
      name,
      type,
      default: s.default === null ? undefined : s.default,
      required: s.required === true,
      secret: s.secret === true,
      min: typeof s.min === "number" ? s.min : undefined,
      max: typeof s.max === "number" ? s.max : undefined,
      enum: Array.isArray(s.enum) ? s.enum : undefined,
      pattern: typeof s.pattern === "string" ? s.pattern : undefined,
      description: typeof s.description === "string" ? s.description : "",
      restartRequired: s.restart_required === true,
    });
  }
  return out.sort((a, b) => Number(b.required) - Number(a.required) || a.name.localeCompare(b.name));
}

/** The value a field has now: its stored value, or its default when it is not set. */
export function effective(f: FieldSpec, current: JsonObject | undefined): JsonValue | undefined {
  const v = current?.[f.name];
  return v === undefined || v === null ? f.default : v;
}

/** Whether two JSON values are the same value (object keys in any order). */
export function jsonEqual(a: JsonValue | undefined, b: JsonValue | undefined): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => k in b && jsonEqual(a[k], b[k]));
  }
  return false;
}

/** A value for people: strings as they are, everything else as JSON. */
export function show(v: JsonValue | undefined): string {
  if (v === undefined || v === null) return "not set";
  if (typeof v === "string") return `"${v}"`;
  return JSON.stringify(v);
}

/**
 * What the form holds for a field the user changed. `text` is the control's raw value (the
 * checkbox's state for booleans, the option's index for enums) and `invalid` says why the
 * browser could not read it; `reset` asks for the
 * default (or for no value when there is none), which the API spells as null.
 */
export type Draft = { reset: true } | { reset: false; text: string | boolean; invalid?: string };

/** The form text that shows a value in a field's control. */
export function toText(f: FieldSpec, v: JsonValue | undefined): string | boolean {
  if (f.type === "boolean") return v === true;
  if (f.secret) return "";
  if (v === undefined || v === null) return "";
  if (f.enum) {
    const i = f.enum.findIndex((e) => jsonEqual(e, v));
    return i < 0 ? "" : String(i);
  }
  if (f.type === "array" || f.type === "object") return JSON.stringify(v, null, 2);
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

/** A draft read as the value to send: null for "reset", undefined for "send nothing". */
export type Parsed = { ok: true; value: JsonValue | undefined } | { ok: false; problem: string };

/**
 * Reads a draft as the value the patch carries. Only what cannot be sent at all (JSON that
 * does not parse) is a problem here: values that break the schema's rules are sent as they
 * are, so that the server judges them and its verdict is shown on the field.
 */
export function parseDraft(f: FieldSpec, d: Draft): Parsed {
  if (d.reset) return { ok: true, value: null };
  // What the browser itself cannot read (letters in a number box) has no value to send.
  if (d.invalid) return { ok: false, problem: d.invalid };
  const t = d.text;
  if (typeof t === "boolean") return { ok: true, value: t };
  // A secret is sent only when something was typed into it: an empty box means "keep it".
  if (f.secret) return { ok: true, value: t === "" ? undefined : t };
  if (f.enum) {
    if (t === "") return { ok: true, value: null };
    return { ok: true, value: f.enum[Number(t)] ?? null };
  }
  switch (f.type) {
    case "integer":
    case "number": {
      const s = t.trim();
      if (s === "") return { ok: true, value: null };
      const n = Number(s);
      // Text that is no number goes as text: the server answers "must be a number".
      return { ok: true, value: Number.isFinite(n) ? n : s };
    }
    case "array":
    case "object": {
      if (t.trim() === "") return { ok: true, value: null };
      try {
        return { ok: true, value: JSON.parse(t) as JsonValue };
      } catch (e) {
        return { ok: false, problem: `is not valid JSON (${(e as Error).message})` };
      }
    }
    default:
      return { ok: true, value: t };
  }
}

/** One change the form would send. */
export interface Change {
  field: FieldSpec;
  /** The value now (undefined when not set; a set secret reads as HIDDEN). */
  before: JsonValue | undefined;
  /** The value sent: null resets the field to its default, or unsets it when it has none. */
  after: JsonValue;
}

/**
 * The patch the drafts make: only the fields whose value would really change, so that a
 * field typed back to its current value is not sent. Fields whose draft cannot be sent are
 * returned as problems instead.
 */
export function diff(
  fields: FieldSpec[],
  current: JsonObject | undefined,
  drafts: Record<string, Draft>,
): { changes: Change[]; problems: Record<string, string> } {
  const changes: Change[] = [];
  const problems: Record<string, string> = {};
  for (const f of fields) {
    const d = drafts[f.name];
    if (!d) continue;
    const p = parseDraft(f, d);
    if (!p.ok) {
      problems[f.name] = p.problem;
      continue;
    }
    if (p.value === undefined) continue;
    const stored = current?.[f.name];
    const before = stored === null ? undefined : stored;
    if (p.value === null) {
      // A reset changes something only when the field holds a value other than its default.
      if (before === undefined || (f.default !== undefined && jsonEqual(before, f.default))) continue;
    } else if (!f.secret && jsonEqual(p.value, effective(f, current))) {
      continue;
    }
    changes.push({ field: f, before, after: p.value });
  }
  return { changes, problems };
}

/** The patch of a list of changes, as UpdatePluginConfigRequest.config. */
export function patchOf(changes: Change[]): JsonObject {
  const out: JsonObject = {};
  for (const c of changes) out[c.field.name] = c.after;
  return out;
}

/**
 * The form field a violation is about. The server names configuration fields by their own
 * name (`batch_size`), but a path may carry the request's prefix (`config.batch_size`) or
 * point inside a value (`servers[0]`, `limits.max`); field names may themselves contain
 * dots, so the longest name the path starts with wins. Undefined when none matches.
 */
export function fieldOfViolation(path: string, names: string[]): string | undefined {
  const candidates = [path, path.replace(/^(config|configuration)\./, "")];
  let best: string | undefined;
  for (const p of candidates) {
    for (const n of names) {
      if (p === n || p.startsWith(`${n}.`) || p.startsWith(`${n}[`)) {
        if (!best || n.length > best.length) best = n;
      }
    }
  }
  return best;
}

/** The rules of a field in words, for its hint. */
export function rulesOf(f: FieldSpec): string[] {
  const out: string[] = [];
  const noun = f.type === "string" ? "characters" : f.type === "array" ? "items" : "";
  if (f.type === "integer") out.push("A whole number.");
  if (f.min !== undefined && f.max !== undefined) {
    out.push(noun ? `From ${f.min} to ${f.max} ${noun}.` : `From ${f.min} to ${f.max}.`);
  } else if (f.min !== undefined) {
    out.push(noun ? `At least ${f.min} ${noun}.` : `At least ${f.min}.`);
  } else if (f.max !== undefined) {
    out.push(noun ? `At most ${f.max} ${noun}.` : `At most ${f.max}.`);
  }
  if (f.pattern) out.push(`Must match the pattern ${f.pattern}.`);
  if (f.type === "array") out.push("A JSON array.");
  if (f.type === "object") out.push("A JSON object.");
  if (f.restartRequired) out.push("A change takes effect when the plugin restarts.");
  return out;
}

/**
 * A pattern for the HTML pattern attribute with the schema's meaning, or undefined when the
 * browser's regular expressions cannot read it (RE2 and JavaScript differ at the edges). The
 * browser anchors its patterns and the schema does not, so the pattern is wrapped to match
 * anywhere. With the form's noValidate it only informs; the server decides.
 */
export function htmlPattern(pattern: string | undefined): string | undefined {
  if (!pattern) return undefined;
  const wrapped = `[\\s\\S]*(?:${pattern})[\\s\\S]*`;
  try {
    new RegExp(`^(?:${wrapped})$`, "v");
    return wrapped;
  } catch {
    return undefined;
  }
}
