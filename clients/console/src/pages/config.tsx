// The Configuration tab: a form generated from the plugin's configuration schema, the changes
// it would make, saving them with UpdatePluginConfig and showing the server's verdict on the
// fields it names, and what a saved change needs (a restart) to take effect.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { UpdatePluginConfigResponse } from "../../gen/nexus/plugin/v1/plugin_pb.js";
import { toApiError, type ApiError, type FieldProblem } from "../api.js";
import { ActionButton, ErrorNote, Time, notices, useLoad } from "../ui.js";
import type { TabProps } from "./plugin.js";
import {
  HIDDEN,
  diff,
  effective,
  fieldOfViolation,
  htmlPattern,
  parseSchema,
  patchOf,
  rulesOf,
  show,
  toText,
  type Change,
  type Draft,
  type FieldSpec,
} from "./schema.js";
import "./config.css";

/** The id of a field's control; the hint and the error hang off it. */
const idOf = (name: string) => `cfg-${name}`;

/** The server's refusal of a save, split into what belongs to a field and what does not. */
interface SaveError {
  error: ApiError;
  byField: Record<string, string[]>;
  unplaced: FieldProblem[];
}

/** A save the server accepted, with what the form asked for. */
interface Saved {
  res: UpdatePluginConfigResponse;
  sent: Change[];
  restartAsked: boolean;
}

export function ConfigTab({ session, plugin, reload }: TabProps) {
  const id = plugin.id;
  // Secrets are write-only: the console never asks for them in clear (include_secrets).
  const cfg = useLoad(
    (signal) => session.api.plugins.getPluginConfig({ pluginId: id, includeSchema: true, includeSecrets: false }, { signal }),
    [id],
  );
  const fields = useMemo(() => parseSchema(cfg.data?.schema), [cfg.data?.schema]);
  const current = cfg.data?.configuration;
  const canEdit = session.can("UpdatePluginConfig");

  const [drafts, setDrafts] = useState<Record<string, Draft>>({});
  const [restart, setRestart] = useState(false);
  const [busy, setBusy] = useState(false);
  const [saveError, setSaveError] = useState<SaveError>();
  const [clientProblems, setClientProblems] = useState<Record<string, string>>({});
  const [saved, setSaved] = useState<Saved>();
  // Bumped to move focus to the first field in trouble once the errors are on screen.
  const [focusTick, setFocusTick] = useState(0);

  const { changes, problems } = useMemo(() => diff(fields, current, drafts), [fields, current, drafts]);

  useEffect(() => {
    if (focusTick === 0) return;
    const bad = fields.find((f) => saveError?.byField[f.name] || clientProblems[f.name]);
    if (bad) document.getElementById(idOf(bad.name))?.focus();
    else document.getElementById("cfg-error")?.focus();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [focusTick]);

  const setDraft = (name: string, d: Draft | undefined) => {
    setDrafts((all) => {
      const next = { ...all };
      if (d) next[name] = d;
      else delete next[name];
      return next;
    });
    // A field edited since the server refused it is no longer the value it refused.
    setSaveError((e) => {
      if (!e?.byField[name]) return e;
      const byField = { ...e.byField };
      delete byField[name];
      return { ...e, byField };
    });
    setClientProblems((p) => {
      if (!(name in p)) return p;
      const next = { ...p };
      delete next[name];
      return next;
    });
  };

  const save = async (e: Event) => {
    e.preventDefault();
    if (!canEdit || busy) return;
    setSaved(undefined);
    setSaveError(undefined);
    setClientProblems(problems);
    if (Object.keys(problems).length > 0) {
      setFocusTick((t) => t + 1);
      return;
    }
    if (changes.length === 0) {
      notices.say("Nothing to save: no field differs from the current configuration.");
      return;
    }
    setBusy(true);
    try {
      const res = await session.api.plugins.updatePluginConfig({ pluginId: id, config: patchOf(changes), restart });
      setSaved({ res, sent: changes, restartAsked: restart });
      setDrafts({});
      notices.say(
        res.updatedFields.length ? `Configuration saved: ${res.updatedFields.join(", ")} changed.` : "Saved, but the server changed nothing.",
      );
      cfg.reload();
      reload();
    } catch (err) {
      const error = toApiError(err);
      const names = fields.map((f) => f.name);
      const byField: Record<string, string[]> = {};
      const unplaced: FieldProblem[] = [];
      for (const v of error.fields) {
        const name = fieldOfViolation(v.field, names);
        if (name) (byField[name] ??= []).push(v.description);
        else unplaced.push(v);
      }
      setSaveError({ error, byField, unplaced });
      setFocusTick((t) => t + 1);
    } finally {
      setBusy(false);
    }
  };

  if (cfg.error && !cfg.data) return <ErrorNote error={cfg.error} title="Could not load the configuration" />;
  if (!cfg.data) return <p aria-busy="true">Loading the configuration…</p>;

  const placed = saveError ? fields.filter((f) => saveError.byField[f.name]) : [];
  const restartFields = fields.filter((f) => f.restartRequired).map((f) => f.name);

  return (
    <div class="config">
      <h2>Configuration</h2>
      <p class="muted">
        Last changed <Time ts={cfg.data.lastUpdated} />. Secret values are write-only: the console shows whether one is set,
        never the value.
      </p>
      <ErrorNote error={cfg.error} title="Could not reload the configuration" />
      {!canEdit && (
        <p class="note">
          Read-only: your token may read this configuration but not change it (it is not allowed to call UpdatePluginConfig).
        </p>
      )}

      {saveError && (
        <div id="cfg-error" tabIndex={-1}>
          <ErrorNote error={{ ...saveError.error, fields: saveError.unplaced }} title="The server refused the configuration" />
          {placed.length > 0 && (
            <div class="cfg-summary">
              <p>
                {placed.length === 1 ? "One field was refused" : `${placed.length} fields were refused`}; each says why below:
              </p>
              <ul>
                {placed.map((f) => (
                  <li key={f.name}>
                    <a href={`#${idOf(f.name)}`} onClick={(e) => (e.preventDefault(), document.getElementById(idOf(f.name))?.focus())}>
                      {f.name}
                    </a>
                    : {saveError.byField[f.name]?.join("; ")}
                  </li>
                ))}
              </ul>
            </div>
          )}
        </div>
      )}

      {saved && <SaveResult saved={saved} fields={fields} {...{ session, plugin, reload }} />}

      {fields.length === 0 ? (
        <p class="empty">This plugin declares no configuration fields.</p>
      ) : (
        // noValidate: the browser does not stop a value the schema forbids; the server judges
        // it and its answer is shown on the field.
        <form class="cfg-form" noValidate onSubmit={save} aria-label={`Configuration of ${id}`}>
          <fieldset disabled={!canEdit} class="cfg-fields">
            <legend class="visually-hidden">Configuration fields</legend>
            {fields.map((f) => (
              <FieldControl
                key={f.name}
                f={f}
                current={current}
                draft={drafts[f.name]}
                onDraft={(d) => setDraft(f.name, d)}
                errors={[...(clientProblems[f.name] ? [clientProblems[f.name] as string] : []), ...(saveError?.byField[f.name] ?? [])]}
                editable={canEdit}
              />
            ))}
          </fieldset>

          {canEdit && (
            <>
              <section class="cfg-changes" aria-labelledby="cfg-changes-title">
                <h3 id="cfg-changes-title">Changes to save</h3>
                {changes.length === 0 ? (
                  <p class="muted">None: every field holds its current value.</p>
                ) : (
                  <ChangeList changes={changes} />
                )}
              </section>
              <div class="check">
                <input id="cfg-restart" type="checkbox" checked={restart} onChange={(e) => setRestart(e.currentTarget.checked)} />
                <label for="cfg-restart">Restart the plugin to apply changes that need a restart</label>
              </div>
              <p class="hint" id="cfg-restart-hint">
                {restartFields.length > 0
                  ? `Only a change of ${restartFields.join(", ")} needs one; a running plugin receives the other values at once.`
                  : "No field of this plugin needs a restart: a running plugin receives new values at once."}
              </p>
              <div class="buttons">
                <button type="submit" class="primary" disabled={busy} aria-busy={busy}>
                  Save {changes.length > 0 ? `${changes.length} ${changes.length === 1 ? "change" : "changes"}` : "changes"}
                  {busy && <span class="spinner" aria-hidden="true" />}
                </button>
                <button
                  type="button"
                  disabled={busy || Object.keys(drafts).length === 0}
                  onClick={() => {
                    setDrafts({});
                    setClientProblems({});
                    setSaveError(undefined);
                    notices.say("Changes discarded.");
                  }}
                >
                  Discard changes
                </button>
              </div>
            </>
          )}
        </form>
      )}

      <details class="cfg-raw">
        <summary>Raw JSON of the current configuration</summary>
        <p class="hint">As the API returns it: a set secret reads {HIDDEN}.</p>
        <pre>{JSON.stringify(current ?? {}, null, 2)}</pre>
        <p class="hint">The schema:</p>
        <pre>{JSON.stringify(cfg.data.schema ?? {}, null, 2)}</pre>
      </details>
    </div>
  );
}

/** A field name for people: `flush_interval` reads "Flush interval". */
function humanize(name: string): string {
  const s = name.replace(/[_.-]+/g, " ").trim();
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function FieldControl(props: {
  f: FieldSpec;
  current: JsonObject | undefined;
  draft: Draft | undefined;
  onDraft: (d: Draft | undefined) => void;
  errors: string[];
  editable: boolean;
}) {
  const { f, current, draft, onDraft, errors, editable } = props;
  const cid = idOf(f.name);
  const hintId = `${cid}-hint`;
  const errId = `${cid}-error`;
  const stored = current?.[f.name];
  const isSet = stored !== undefined && stored !== null;
  // What the control shows: the draft, or the field's value now (its default when unset).
  const shown = draft ? (draft.reset ? toText(f, f.default) : draft.text) : toText(f, effective(f, current));
  const invalid = errors.length > 0;
  const describedBy = [hintId, invalid ? errId : ""].filter(Boolean).join(" ");
  const common = {
    id: cid,
    name: f.name,
    "aria-describedby": describedBy,
    "aria-invalid": invalid ? ("true" as const) : undefined,
    "aria-required": f.required ? ("true" as const) : undefined,
  };
  const text = typeof shown === "string" ? shown : "";
  const setText = (t: string | boolean, bad?: string) => onDraft({ reset: false, text: t, invalid: bad });

  const label = (
    <label for={cid}>
      {humanize(f.name)} <code class="cfg-key">{f.name}</code>
      {f.required && <span class="cfg-req"> (required)</span>}
    </label>
  );

  let control: preact.JSX.Element;
  if (f.type === "boolean") {
    control = (
      <div class="check">
        <input {...common} type="checkbox" checked={shown === true} onChange={(e) => setText(e.currentTarget.checked)} />
        {label}
      </div>
    );
  } else if (f.secret) {
    control = (
      <>
        {label}
        <input
          {...common}
          type="password"
          autoComplete="new-password"
          value={draft && !draft.reset ? text : ""}
          placeholder={isSet ? "Type a new value to replace it" : "Type a value to set it"}
          onInput={(e) => {
            const v = e.currentTarget.value;
            onDraft(v === "" ? undefined : { reset: false, text: v });
          }}
        />
      </>
    );
  } else if (f.enum) {
    const enumValues = f.enum;
    control = (
      <>
        {label}
        <select {...common} value={text} onChange={(e) => setText(e.currentTarget.value)}>
          {(!f.required || text === "") && <option value="">{f.default !== undefined ? "(default)" : "(not set)"}</option>}
          {enumValues.map((v, i) => (
            <option key={i} value={String(i)}>
              {typeof v === "string" ? v : JSON.stringify(v)}
            </option>
          ))}
        </select>
      </>
    );
  } else if (f.type === "integer" || f.type === "number") {
    control = (
      <>
        {label}
        <input
          {...common}
          type="number"
          inputMode={f.type === "integer" ? "numeric" : "decimal"}
          min={f.min}
          max={f.max}
          step={f.type === "integer" ? 1 : "any"}
          value={text}
          onInput={(e) => {
            const el = e.currentTarget;
            // Text that is no number reads as "" in a number box: say so rather than send nothing.
            setText(el.value, el.validity.badInput ? "is not a number" : undefined);
          }}
        />
      </>
    );
  } else if (f.type === "array" || f.type === "object") {
    const rows = Math.min(12, Math.max(3, text.split("\n").length + 1));
    control = (
      <>
        {label}
        <textarea {...common} class="cfg-json" rows={rows} spellcheck={false} value={text} onInput={(e) => setText(e.currentTarget.value)} />
      </>
    );
  } else {
    // No maxLength: the browser counts UTF-16 units and would cut off text the server (which
    // counts characters) accepts, and it would stop a too-long value from reaching the server.
    control = (
      <>
        {label}
        <input
          {...common}
          type="text"
          minLength={f.min}
          pattern={htmlPattern(f.pattern)}
          value={text}
          onInput={(e) => setText(e.currentTarget.value)}
        />
      </>
    );
  }

  const changed = draft !== undefined;
  return (
    <div class={`cfg-field${changed ? " cfg-changed" : ""}`}>
      {control}
      <div class="hint" id={hintId}>
        {f.description && <p>{f.description}</p>}
        {rulesOf(f).length > 0 && <p>{rulesOf(f).join(" ")}</p>}
        {f.enum && <p>One of {f.enum.map((v) => show(v)).join(", ")}.</p>}
        {f.default !== undefined && <p>Default: {show(f.default)}.</p>}
        {f.secret && (
          <p>
            Secret, now{" "}
            <span class={`badge ${isSet ? "good" : "muted"}`}>{isSet ? "set" : "not set"}</span>
            {draft?.reset ? "— will be cleared on save." : isSet ? "— leave the box empty to keep it." : ""}
          </p>
        )}
        {!f.secret && f.default === undefined && !isSet && <p>Not set.</p>}
      </div>
      {invalid && (
        <p class="field-error" id={errId}>
          {f.name} {errors.join("; ")}
        </p>
      )}
      {editable && (
        <div class="cfg-field-actions">
          {f.default !== undefined && (
            <button type="button" aria-label={`Reset to default: ${f.name} becomes ${show(f.default)}`} onClick={() => onDraft({ reset: true })}>
              Reset to default
            </button>
          )}
          {f.default === undefined && isSet && (
            <button
              type="button"
              aria-label={f.secret ? `Clear the stored value of ${f.name}` : `Unset ${f.name}`}
              onClick={() => onDraft({ reset: true })}
            >
              {f.secret ? "Clear the stored value" : "Unset"}
            </button>
          )}
          {changed && (
            <button type="button" aria-label={`Undo: ${f.name} keeps its saved value`} onClick={() => onDraft(undefined)}>
              Undo
            </button>
          )}
        </div>
      )}
    </div>
  );
}

/** A value of a change in words; secrets never show. */
function valueText(f: FieldSpec, v: JsonValue | undefined, side: "before" | "after"): string {
  if (f.secret) {
    if (side === "before") return v === undefined ? "not set" : "set";
    return v === null ? "cleared" : "a new value";
  }
  if (side === "after" && v === null) return f.default !== undefined ? `its default, ${show(f.default)}` : "not set";
  return show(v === undefined ? f.default : v) + (v === undefined && f.default !== undefined ? " (default)" : "");
}

function ChangeList({ changes }: { changes: Change[] }) {
  return (
    <ul class="cfg-change-list">
      {changes.map((c) => (
        <li key={c.field.name}>
          <code>{c.field.name}</code>: {valueText(c.field, c.before, "before")} <span aria-hidden="true">→</span>
          <span class="visually-hidden">becomes</span> <strong>{valueText(c.field, c.after, "after")}</strong>
          {c.field.restartRequired && <span class="muted"> (needs a restart)</span>}
        </li>
      ))}
    </ul>
  );
}

function SaveResult({ saved, fields, session, plugin, reload }: { saved: Saved; fields: FieldSpec[] } & Pick<TabProps, "session" | "plugin" | "reload">) {
  const { res, sent, restartAsked } = saved;
  const [restartError, setRestartError] = useState<ApiError>();
  const [restarted, setRestarted] = useState(false);
  const box = useRef<HTMLElement>(null);
  const updated = res.updatedFields;
  const notUpdated = sent.map((c) => c.field.name).filter((n) => !updated.includes(n));
  const needRestart = fields.filter((f) => f.restartRequired && updated.includes(f.name)).map((f) => f.name);
  const running = plugin.enabled && plugin.status === "active";
  return (
    <section class="note cfg-result" role="status" aria-labelledby="cfg-result-title" tabIndex={-1} ref={box}>
      <h3 id="cfg-result-title">{updated.length > 0 ? "Saved" : "Nothing was saved"}</h3>
      {updated.length > 0 ? (
        <p>
          Changed: {updated.map((n, i) => (
            <span key={n}>
              {i > 0 && ", "}
              <code>{n}</code>
            </span>
          ))}{" "}
          (at <Time ts={res.updatedAt} />).
        </p>
      ) : (
        <p>The server accepted the request but changed no field.</p>
      )}
      {notUpdated.length > 0 && (
        // The server answered success without storing these; say so rather than pretend.
        <p class="error">
          Sent but not stored by the server: {notUpdated.join(", ")}. It answered without an error, so it gave no reason: check
          the value against the field's rules below and try again.
        </p>
      )}
      {res.restartRequired ? (
        restartAsked && running ? (
          <p>
            {needRestart.join(", ")} {needRestart.length === 1 ? "needs" : "need"} a restart to take effect, and you asked for one:
            the server restarted {plugin.id}, which now runs on the new values.
          </p>
        ) : restarted ? (
          <p>{plugin.id} was restarted and now runs on the new values.</p>
        ) : (
          <>
            <p>
              {needRestart.join(", ")} {needRestart.length === 1 ? "takes" : "take"} effect only when the plugin restarts.
              {running
                ? ` Until then ${plugin.id} keeps running on the old ${needRestart.length === 1 ? "value" : "values"}.`
                : ` ${plugin.id} is not running; it will use the new values when it starts.`}
            </p>
            {running && session.can("RestartPlugin") && (
              <div class="buttons">
                <ActionButton
                  run={() => session.api.plugins.restartPlugin({ pluginId: plugin.id, reason: "apply configuration change" })}
                  onDone={() => {
                    setRestartError(undefined);
                    setRestarted(true);
                    notices.say(`${plugin.id} restarted`);
                    // The button is gone: keep the keyboard user in the result rather than on the page's start.
                    box.current?.focus();
                    reload();
                  }}
                  onError={setRestartError}
                >
                  Restart {plugin.id} now
                </ActionButton>
              </div>
            )}
            <ErrorNote error={restartError} title="Could not restart" />
          </>
        )
      ) : (
        updated.length > 0 && (
          <p>
            No restart is needed:{" "}
            {running ? `${plugin.id} received the new values while running.` : `${plugin.id} will use them when it starts.`}
          </p>
        )
      )}
    </section>
  );
}
