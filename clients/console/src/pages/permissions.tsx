// The Permissions tab: what the plugin asked for, was granted and was denied, how the host
// confines it (security level, sandbox, resource limits, each mechanism's state on this
// host), and, for a token that may, granting and revoking permissions and changing the
// security settings with UpdatePluginPermissions.
import { useState } from "preact/hooks";
import type {
  ConfinementState,
  GetPluginPermissionsResponse,
} from "../../gen/nexus/plugin/v1/plugin_pb.js";
import { fieldProblems, toApiError, type ApiError } from "../api.js";
import { ActionButton, Badge, Dialog, closeDialog, ErrorNote, notices, useLoad } from "../ui.js";
import type { TabProps } from "./plugin.js";
import "./config.css";

type View = GetPluginPermissionsResponse;
/** What an UpdatePluginPermissions request changes; what is absent stays as it is. */
interface Change {
  grant?: string[];
  revoke?: string[];
  securityLevel?: string;
  sandboxEnabled?: boolean;
  /** All three at once: the request replaces the limits together. */
  resourceLimits?: { memoryMb: number; cpuPercent: number; fileHandles: number };
}

/** The syntax UpdatePluginPermissions accepts for a permission (from the proto's rule). */
const PERMISSION_RE = /^([a-z][a-z0-9_-]*|\*):([a-z][a-z0-9_.-]*|\*)$/;

/** Whether the permission pattern covers perm, as the host matches them (package permission). */
function matches(pattern: string, perm: string): boolean {
  const [pr, pa] = pattern.split(":");
  const [r, a] = perm.split(":");
  if (pr === undefined || pa === undefined || r === undefined || a === undefined) return false;
  const part = (p: string, s: string) => p === "*" || (p.endsWith("*") ? s.startsWith(p.slice(0, -1)) : p === s);
  return part(pr, r) && part(pa, a);
}

/**
 * Why granting perm deserves a second thought. The API does not rate permissions, so this
 * follows the host's own rules: its default install policy denies `http:external` and the
 * system, admin and tokens resources, a permission it denied at install was denied for a
 * reason, a wildcard covers more than it names, and `http:external` also lifts the network
 * confinement at the plugin's next start.
 */
function risksOf(perm: string, denied: string[]): string[] {
  const out: string[] = [];
  const [resource] = perm.split(":");
  if (denied.includes(perm)) out.push("The host's install policy denied it when the plugin was installed.");
  if (perm.includes("*")) out.push("It is a wildcard: it covers every permission it matches, including ones the plugin never asked for.");
  if (resource === "system" || resource === "admin" || resource === "tokens" || resource === "*") {
    out.push(`It reaches the host's ${resource === "*" ? "every" : resource} resource, which the default policy never grants to plugins.`);
  }
  if (matches(perm, "http:external")) {
    out.push("It lets the plugin reach the network outside this host: from its next start, the host no longer confines its network to loopback.");
  }
  return out;
}

const mechanismText: Record<string, string> = {
  identity: "Own user and group",
  no_new_privs: "No privilege gain",
  filesystem: "Filesystem",
  network: "Network",
  syscalls: "System calls",
  ipc: "Signals and sockets",
  memory: "Memory limit",
  cpu: "CPU limit",
  processes: "Process limit",
  file_handles: "Open files limit",
};

/** The security levels and what each asks of the host (sandbox.Profile). */
const levels: { value: string; text: string }[] = [
  { value: "low", text: "Its own user, no privilege gain, and the network confined to loopback unless it holds http:external." },
  { value: "medium", text: "Low, plus filesystem, system call and signal confinement." },
  { value: "high", text: "Medium, and nothing it writes can be executed." },
  { value: "critical", text: "High, and the plugin does not start unless every mechanism is enforced." },
];

export function PermissionsTab({ session, plugin, reload }: TabProps) {
  const id = plugin.id;
  const perms = useLoad((signal) => session.api.plugins.getPluginPermissions({ pluginId: id }, { signal }), [id]);
  const canEdit = session.can("UpdatePluginPermissions");
  const [error, setError] = useState<ApiError>();
  const [result, setResult] = useState<string>();
  const [confirm, setConfirm] = useState<{ perm: string; risks: string[] }>();
  // What this page last set the sandbox to. The API reports the running plugin's confinement,
  // not the stored setting, so until the plugin restarts only this says what was asked for.
  const [sandboxSet, setSandboxSet] = useState<{ id: string; on: boolean }>();

  const view: View | undefined = perms.data;

  /**
   * Sends a change and resolves to the server's refusal, if any. A form that places the
   * refusal on its own fields says so with ownError; otherwise it is shown above the table.
   */
  const update = async (change: Change, done: string, ownError = false): Promise<ApiError | undefined> => {
    setError(undefined);
    setResult(undefined);
    try {
      await session.api.plugins.updatePluginPermissions({ pluginId: id, ...change });
      if (change.sandboxEnabled !== undefined) setSandboxSet({ id, on: change.sandboxEnabled });
      setResult(done);
      notices.say(done);
      perms.reload();
      reload();
      return undefined;
    } catch (err) {
      const e = toApiError(err);
      if (!ownError) setError(e);
      return e;
    }
  };

  const grant = (perm: string) => update({ grant: [perm] }, `Granted ${perm} to ${id}.`);
  const revoke = (perm: string) => update({ revoke: [perm] }, `Revoked ${perm} from ${id}.`);
  /** Grants at once, or after a confirmation when the grant is risky. */
  const askGrant = async (perm: string): Promise<ApiError | undefined> => {
    const risks = risksOf(perm, view?.permissions?.denied ?? []);
    if (risks.length > 0) {
      setConfirm({ perm, risks });
      return undefined;
    }
    return grant(perm);
  };

  if (perms.error && !view) return <ErrorNote error={perms.error} title="Could not load the permissions" />;
  if (!view) return <p aria-busy="true">Loading the permissions…</p>;

  const set = view.permissions;
  const requested = set?.requested ?? [];
  const granted = set?.granted ?? [];
  const denied = set?.denied ?? [];
  const all = [...new Set([...requested, ...granted, ...denied])].sort();
  const running = plugin.enabled && plugin.status === "active";

  return (
    <div class="perms">
      <h2>Security</h2>
      <p>
        <strong>Enforced</strong> means this host applies the mechanism to the plugin's process itself, so the operating
        system refuses what it forbids whatever the plugin's code does. Confinement and limits are applied when the plugin
        starts, so a change to them takes effect at its next start; permissions are checked by the host each time the
        plugin calls it.
      </p>
      <p>
        An <strong>external</strong> plugin is started elsewhere and only connects to the host: the host cannot confine it
        or limit its resources, and only its permissions bound what it may ask the host to do.{" "}
        {view.hostLaunched ? "This plugin is launched by this host." : <strong>This plugin is external.</strong>}
      </p>
      <dl class="facts">
        <dt>Security level</dt>
        <dd>
          <strong>{view.securityLevel || "not set"}</strong>
        </dd>
        <dt>Launched</dt>
        <dd>{view.hostLaunched ? "by this host" : "externally: the host cannot confine it"}</dd>
        <dt>Sandbox</dt>
        <dd>
          {view.sandboxEnabled ? (
            <>
              <span class="badge good">complete</span> every mechanism its security level asks for is enforced.
            </>
          ) : !view.hostLaunched ? (
            <>
              <span class="badge warn">none</span> an external plugin runs outside the host's reach.
            </>
          ) : (
            <>
              <span class="badge warn">incomplete</span> the sandbox is turned off, or a mechanism it asks for is
              unavailable on this host (see below).
            </>
          )}
        </dd>
      </dl>

      {result && (
        <p class="note" role="status">
          {result} {running && "Grants and revokes apply to the plugin's next call to the host; confinement changes apply at its next start."}
        </p>
      )}
      <ErrorNote error={error} />

      <h2>Permissions</h2>
      {!canEdit && <p class="note">Your token may read the permissions but not change them (it is not allowed to call UpdatePluginPermissions).</p>}
      {all.length === 0 ? (
        <p class="empty">The plugin asked for no permission and holds none.</p>
      ) : (
        <div class="table-wrap" tabIndex={0} role="region" aria-label="Permissions">
          <table>
            <thead>
              <tr>
                <th scope="col">Permission</th>
                <th scope="col">State</th>
                {canEdit && <th scope="col">Change</th>}
              </tr>
            </thead>
            <tbody>
              {all.map((p) => {
                const isGranted = granted.includes(p);
                const cover = isGranted ? [] : granted.filter((g) => g !== p && matches(g, p));
                const isDenied = denied.includes(p);
                return (
                  <tr key={p}>
                    <th scope="row">
                      <code>{p}</code>
                      <div class="sub">{requested.includes(p) ? "asked for by the plugin" : "not asked for: added by an administrator"}</div>
                    </th>
                    <td>
                      {isGranted ? (
                        <span class="badge good">granted</span>
                      ) : cover.length > 0 ? (
                        <>
                          <span class="badge good">granted</span> <span class="sub">through {cover.join(", ")}</span>
                        </>
                      ) : isDenied ? (
                        <span class="badge bad">denied</span>
                      ) : (
                        <span class="badge muted">not granted</span>
                      )}
                    </td>
                    {canEdit && (
                      <td>
                        {isGranted ? (
                          <ActionButton label={`Revoke ${p}`} run={() => revoke(p)} onError={setError}>
                            Revoke
                          </ActionButton>
                        ) : cover.length > 0 ? (
                          <span class="sub">revoke {cover.join(", ")} to take it away</span>
                        ) : (
                          <ActionButton label={`Grant ${p}`} run={() => askGrant(p)} onError={setError}>
                            Grant{risksOf(p, denied).length > 0 ? "…" : ""}
                          </ActionButton>
                        )}
                      </td>
                    )}
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {canEdit && <GrantForm onGrant={askGrant} />}

      <Dialog open={confirm !== undefined} title={`Grant ${confirm?.perm ?? ""}?`} onClose={() => setConfirm(undefined)}>
        {confirm && (
          <ConfirmGrant
            perm={confirm.perm}
            plugin={id}
            risks={confirm.risks}
            onGrant={async () => {
              // The dialog closes either way: the result or the refusal is shown on the page.
              await grant(confirm.perm);
              setConfirm(undefined);
            }}
          />
        )}
      </Dialog>

      <h2>Confinement on this host</h2>
      {view.confinement.length === 0 ? (
        <p class="muted">The server reported no confinement mechanism.</p>
      ) : (
        <ConfinementTable rows={view.confinement} />
      )}

      <h2>Resource limits</h2>
      <LimitsTable view={view} />

      {canEdit && (
        <SecurityForm
          key={`${view.securityLevel}/${view.sandboxEnabled}/${sandboxSet?.on}/${view.resourceLimits?.memoryMb}/${view.resourceLimits?.cpuPercent}/${view.resourceLimits?.fileHandles}`}
          view={view}
          sandboxSet={sandboxSet?.id === id ? sandboxSet.on : undefined}
          onSave={(change) => update(change, `Security settings of ${id} saved; they apply at its next start.`, true)}
        />
      )}
      {result && canEdit && running && session.can("RestartPlugin") && (
        <RestartHint
          session={session}
          id={id}
          reload={() => {
            // The confinement shown is the running process's: after a restart it is the new one.
            perms.reload();
            reload();
          }}
        />
      )}
    </div>
  );
}

function ConfinementTable({ rows }: { rows: ConfinementState[] }) {
  return (
    <div class="table-wrap perm-conf" tabIndex={0} role="region" aria-label="Confinement mechanisms">
      <table>
        <thead>
          <tr>
            <th scope="col">Mechanism</th>
            <th scope="col">State, and how or why not</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((c) => (
            <tr key={c.mechanism}>
              <th scope="row">
                {mechanismText[c.mechanism] ?? c.mechanism}
                <div class="sub">
                  <code>{c.mechanism}</code>
                </div>
              </th>
              <td>
                <Badge value={c.state} />
                {c.detail && <div class="perm-detail">{c.detail}</div>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function LimitsTable({ view }: { view: View }) {
  const l = view.resourceLimits;
  const e = view.limitsEnforcement;
  const how: Record<string, string> = {
    rlimit: "rlimit: the kernel refuses more",
    cgroup: "cgroup: the kernel caps the plugin's processes together",
    monitor: "monitor: the host watches the usage and stops the plugin over its limit",
  };
  const rows = [
    { name: "Memory", value: l?.memoryMb ?? 0, unit: "MiB", by: e?.memoryMb ?? "" },
    { name: "CPU", value: l?.cpuPercent ?? 0, unit: "% of one CPU", by: e?.cpuPercent ?? "" },
    { name: "Open files", value: l?.fileHandles ?? 0, unit: "files", by: e?.fileHandles ?? "" },
  ];
  return (
    <div class="table-wrap" tabIndex={0} role="region" aria-label="Resource limits">
      <table>
        <thead>
          <tr>
            <th scope="col">Limit</th>
            <th scope="col" class="num">
              Value
            </th>
            <th scope="col">Enforced by</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.name}>
              <th scope="row">{r.name}</th>
              <td class="num">{r.value > 0 ? `${r.value} ${r.unit}` : "no limit"}</td>
              <td>
                {r.value === 0 ? (
                  <span class="muted">nothing to enforce</span>
                ) : r.by ? (
                  how[r.by] ?? r.by
                ) : (
                  <>
                    <span class="badge bad">not enforced</span> this host cannot enforce it
                    {view.hostLaunched ? "" : " (an external plugin)"}
                  </>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** Grants a permission the plugin did not ask for. */
function GrantForm({ onGrant }: { onGrant: (perm: string) => Promise<ApiError | undefined> }) {
  const [perm, setPerm] = useState("");
  const [problem, setProblem] = useState<string>();
  const [busy, setBusy] = useState(false);
  return (
    <form
      class="filters"
      noValidate
      onSubmit={async (e) => {
        e.preventDefault();
        const p = perm.trim();
        // The syntax is checked here because a typo would otherwise come back as "grant[0]".
        if (!PERMISSION_RE.test(p)) {
          setProblem("must be resource:action in lower case, such as users:read or events:*");
          (e.currentTarget.elements.namedItem("perm") as HTMLInputElement | null)?.focus();
          return;
        }
        setBusy(true);
        const err = await onGrant(p);
        setBusy(false);
        const bad = err?.fields.find((f) => f.field.startsWith("grant"));
        if (bad) setProblem(`${bad.description}`);
        else if (!err) {
          setProblem(undefined);
          setPerm("");
        }
      }}
    >
      <div>
        <label for="perm-new">Grant another permission</label>
        <input
          id="perm-new"
          name="perm"
          value={perm}
          placeholder="resource:action"
          autoComplete="off"
          spellcheck={false}
          aria-invalid={problem ? "true" : undefined}
          aria-describedby={problem ? "perm-new-hint perm-new-error" : "perm-new-hint"}
          onInput={(e) => (setPerm(e.currentTarget.value), setProblem(undefined))}
        />
        <p class="hint" id="perm-new-hint">
          resource:action, with * as a wildcard (users:read, events:*).
        </p>
        {problem && (
          <p class="field-error" id="perm-new-error">
            The permission {problem}
          </p>
        )}
      </div>
      <div>
        <button type="submit" disabled={busy} aria-busy={busy}>
          Grant
        </button>
      </div>
    </form>
  );
}

function ConfirmGrant(props: { perm: string; plugin: string; risks: string[]; onGrant: () => Promise<void> }) {
  const [busy, setBusy] = useState(false);
  return (
    <div>
      <p>
        Granting <code>{props.perm}</code> to {props.plugin} is a high-risk change:
      </p>
      <ul>
        {props.risks.map((r) => (
          <li key={r}>{r}</li>
        ))}
      </ul>
      <div class="buttons">
        <button
          type="button"
          class="danger"
          disabled={busy}
          aria-busy={busy}
          onClick={async () => {
            setBusy(true);
            await props.onGrant();
            setBusy(false);
          }}
        >
          Grant {props.perm}
        </button>
        <button type="button" onClick={closeDialog}>
          Cancel
        </button>
      </div>
    </div>
  );
}

/** Security level, sandbox and resource limits: applied at the plugin's next start. */
function SecurityForm({
  view,
  sandboxSet,
  onSave,
}: {
  view: View;
  /** The sandbox setting this page stored last, when it changed it. */
  sandboxSet: boolean | undefined;
  onSave: (c: Change) => Promise<ApiError | undefined>;
}) {
  const l = view.resourceLimits;
  const [level, setLevel] = useState(view.securityLevel);
  // The answer's sandbox_enabled says whether the confinement is complete, not whether it is
  // asked for; the identity mechanism is asked for exactly when the sandbox is on.
  const sandboxOn = sandboxSet ?? (view.confinement.find((c) => c.mechanism === "identity")?.state ?? "off") !== "off";
  const [sandbox, setSandbox] = useState(sandboxOn);
  const [memory, setMemory] = useState(String(l?.memoryMb ?? 0));
  const [cpu, setCpu] = useState(String(l?.cpuPercent ?? 0));
  const [files, setFiles] = useState(String(l?.fileHandles ?? 0));
  const [error, setError] = useState<ApiError>();
  const [busy, setBusy] = useState(false);
  const [confirmOff, setConfirmOff] = useState(false);

  const build = (): Change => {
    const change: Change = {};
    if (level !== view.securityLevel) change.securityLevel = level;
    if (sandbox !== sandboxOn && view.hostLaunched) change.sandboxEnabled = sandbox;
    const limits = { memoryMb: Number(memory), cpuPercent: Number(cpu), fileHandles: Number(files) };
    if (
      limits.memoryMb !== (l?.memoryMb ?? 0) ||
      limits.cpuPercent !== (l?.cpuPercent ?? 0) ||
      limits.fileHandles !== (l?.fileHandles ?? 0)
    ) {
      // The request replaces all three limits at once.
      change.resourceLimits = limits;
    }
    return change;
  };
  // A limit is a whole number, 0 for none: anything else (an emptied box, 1.5) is refused here,
  // on its field, rather than sent as 0 or as a number the request cannot carry.
  const [local, setLocal] = useState<Record<string, string>>({});
  const send = async () => {
    const bad: Record<string, string> = {};
    for (const [name, value] of [["memory_mb", memory], ["cpu_percent", cpu], ["file_handles", files]] as const) {
      if (!/^\d+$/.test(value.trim())) bad[name] = "must be a whole number (0 for no limit)";
    }
    setLocal(bad);
    const firstBad = Object.keys(bad)[0];
    if (firstBad) {
      document.getElementById(`sec-${firstBad}`)?.focus();
      return;
    }
    setBusy(true);
    const e = await onSave(build());
    setError(e);
    setBusy(false);
    if (e) {
      const first = ["memory_mb", "cpu_percent", "file_handles", "security_level", "sandbox_enabled"].find((n) => byFieldOf(e, n).length > 0);
      if (first) document.getElementById(`sec-${first}`)?.focus();
    }
  };

  const limitInput = (name: string, label: string, value: string, set: (v: string) => void, max: number) => {
    const problems = error ? byFieldOf(error, name) : [];
    if (local[name]) problems.push({ field: name, description: local[name] });
    return (
      <div>
        <label for={`sec-${name}`}>{label}</label>
        <input
          id={`sec-${name}`}
          type="number"
          min={0}
          max={max}
          step={1}
          value={value}
          aria-invalid={problems.length ? "true" : undefined}
          aria-describedby={`sec-limits-hint${problems.length ? ` sec-${name}-error` : ""}`}
          onInput={(e) => set(e.currentTarget.value)}
        />
        {problems.length > 0 && (
          <p class="field-error" id={`sec-${name}-error`}>
            {problems.map((p) => `${p.field} ${p.description}`).join("; ")}
          </p>
        )}
      </div>
    );
  };

  const changes = Object.keys(build()).length;
  return (
    <form
      class="perm-security"
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        if (changes === 0) {
          notices.say("Nothing to save: the security settings are unchanged.");
          return;
        }
        if (sandboxOn && !sandbox) setConfirmOff(true);
        else void send();
      }}
    >
      <h2>Change the security settings</h2>
      <p class="hint">They apply when the plugin next starts: a running plugin keeps the confinement it started with.</p>
      <label for="sec-security_level">Security level</label>
      <select
        id="sec-security_level"
        value={level}
        aria-describedby="sec-security_level-hint"
        onChange={(e) => setLevel(e.currentTarget.value)}
      >
        {levels.map((v) => (
          <option key={v.value} value={v.value}>
            {v.value}
          </option>
        ))}
      </select>
      <p class="hint" id="sec-security_level-hint">
        {levels.find((v) => v.value === level)?.text ?? ""}
      </p>
      {view.hostLaunched && (
        <div class="check">
          <input id="sec-sandbox_enabled" type="checkbox" checked={sandbox} onChange={(e) => setSandbox(e.currentTarget.checked)} />
          <label for="sec-sandbox_enabled">Confine the plugin (sandbox); off turns every confinement mechanism off, limits stay</label>
        </div>
      )}
      <fieldset>
        <legend>Resource limits (0 for no limit)</legend>
        <div class="filters">
          {limitInput("memory_mb", "Memory (MiB)", memory, setMemory, 1048576)}
          {limitInput("cpu_percent", "CPU (% of one CPU)", cpu, setCpu, 6400)}
          {limitInput("file_handles", "Open files", files, setFiles, 1048576)}
        </div>
        <p class="hint" id="sec-limits-hint">
          Memory up to 1048576 MiB, CPU up to 6400 %, open files up to 1048576.
        </p>
      </fieldset>
      <ErrorNote error={error && { ...error, fields: error.fields.filter((f) => !f.field.startsWith("resource_limits.")) }} />
      <div class="buttons">
        <button type="submit" class="primary" disabled={busy} aria-busy={busy}>
          Save security settings{changes > 0 ? ` (${changes} ${changes === 1 ? "change" : "changes"})` : ""}
        </button>
      </div>
      <Dialog open={confirmOff} title="Turn the sandbox off?" onClose={() => setConfirmOff(false)}>
        <p>
          With the sandbox off, the plugin runs at its next start without any confinement: it can read what the server's
          user can read, reach the network and make any system call. Only its resource limits stay.
        </p>
        <div class="buttons">
          <button
            type="button"
            class="danger"
            onClick={() => {
              setConfirmOff(false);
              void send();
            }}
          >
            Turn the sandbox off
          </button>
          <button type="button" onClick={() => setConfirmOff(false)}>
            Cancel
          </button>
        </div>
      </Dialog>
    </form>
  );
}

/** The violations of a security setting; limits are named `resource_limits.memory_mb`. */
function byFieldOf(e: ApiError, name: string) {
  return [...fieldProblems(e, name), ...fieldProblems(e, `resource_limits.${name}`)];
}

function RestartHint({ session, id, reload }: Pick<TabProps, "session" | "reload"> & { id: string }) {
  const [error, setError] = useState<ApiError>();
  return (
    <div>
      <p class="hint">To apply changed confinement or limits now, restart the plugin.</p>
      <div class="buttons">
        <ActionButton
          run={() => session.api.plugins.restartPlugin({ pluginId: id, reason: "apply security settings" })}
          onDone={() => {
            setError(undefined);
            notices.say(`${id} restarted`);
            reload();
          }}
          onError={setError}
        >
          Restart {id}
        </ActionButton>
      </div>
      <ErrorNote error={error} title="Could not restart" />
    </div>
  );
}
