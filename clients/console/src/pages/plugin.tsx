// One plugin: its details and state, the administrator's actions on it, and its tabs
// (health, metrics, logs, configuration, permissions, dead letters).
import { useEffect, useRef, useState } from "preact/hooks";
import type { PluginDetail } from "../../gen/nexus/plugin/v1/plugin_pb.js";
import { toApiError, type ApiError, type Session } from "../api.js";
import { href, navigate, type Route } from "../router.js";
import { ActionButton, Badge, Dialog, closeDialog, ErrorNote, FeedStatus, PageTitle, Time, notices, useEventFeed, useLoad, useSettled, webUrl } from "../ui.js";
import { HealthTab } from "./plugin-health.js";
import { MetricsTab } from "./plugin-metrics.js";
import { LogsTab } from "./plugin-logs.js";
import { DeadLettersTab } from "./plugin-deadletters.js";
import { ConfigTab } from "./config.js";
import { PermissionsTab } from "./permissions.js";

/** What every tab of the plugin page gets. */
export interface TabProps {
  session: Session;
  plugin: PluginDetail;
  /** Loads the plugin again (after a change the tab made). */
  reload: () => void;
  route: Route;
}

interface Tab {
  id: string;
  label: string;
  /** The method the token must be allowed to call for the tab to be offered. */
  needs: string;
  render: (p: TabProps) => preact.JSX.Element;
}

const tabs: Tab[] = [
  { id: "overview", label: "Overview", needs: "GetPlugin", render: (p) => <Overview {...p} /> },
  { id: "health", label: "Health", needs: "GetPluginHealth", render: (p) => <HealthTab {...p} /> },
  { id: "metrics", label: "Metrics", needs: "GetPluginMetrics", render: (p) => <MetricsTab {...p} /> },
  { id: "logs", label: "Logs", needs: "GetPluginLogs", render: (p) => <LogsTab {...p} /> },
  { id: "configuration", label: "Configuration", needs: "GetPluginConfig", render: (p) => <ConfigTab {...p} /> },
  { id: "permissions", label: "Permissions", needs: "GetPluginPermissions", render: (p) => <PermissionsTab {...p} /> },
  { id: "dead-letters", label: "Dead letters", needs: "ListDeadLetters", render: (p) => <DeadLettersTab {...p} /> },
];

export function PluginPage({ session, id, tab, route }: { session: Session; id: string; tab: string; route: Route }) {
  const plugin = useLoad((signal) => session.api.plugins.getPlugin({ pluginId: id }, { signal }), [id]);
  // This plugin's lifecycle events (enabled, disabled, updated, error, ...) change the page.
  const soon = useSettled(plugin.reload);
  const feed = useEventFeed(
    session,
    ["plugin.*"],
    (e) => {
      if (e.data?.plugin_id === id) soon();
    },
    soon,
  );
  const p = plugin.data?.plugin;
  // An action's button goes away with the change it made (Enable once enabled, Disable… once
  // disabled): the focus, left on nothing, goes to the plugin's state, which shows the change.
  const stateRow = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (document.activeElement === document.body || document.activeElement === null) stateRow.current?.focus();
  }, [plugin.data]);
  const visible = tabs.filter((t) => session.can(t.needs));
  const current = visible.find((t) => t.id === tab) ?? visible[0];
  return (
    <section class="plugin">
      <nav aria-label="Breadcrumb" class="crumbs">
        <a href={href("")}>Plugins</a> <span aria-hidden="true">›</span> <span>{p?.name ?? id}</span>
      </nav>
      <div class="title-row">
        <PageTitle>{p?.name ?? id}</PageTitle>
        <FeedStatus feed={feed} label="Updates" />
      </div>
      <ErrorNote error={plugin.error} title={`Could not load ${id}`} />
      {p && (
        <>
          {/* Focus comes here when the control that had it goes away (Enable after enabling). */}
          <div class="state-row" tabIndex={-1} ref={stateRow} role="group" aria-label="State">
            <Badge value={p.status} />
            {!p.enabled && <span class="badge muted">disabled</span>}
            <span>
              health <Badge value={p.health} />
            </span>
            <span>
              version <strong>{p.version}</strong>
            </span>
            {p.category && <span>category {p.category}</span>}
            <span>load order {p.loadOrder}</span>
          </div>
          {p.error && (
            <p class="error" role="note">
              <strong>Last error:</strong> {p.error}
            </p>
          )}
          <Actions session={session} plugin={p} reload={plugin.reload} />
          <nav aria-label="Plugin sections" class="tabs">
            <ul>
              {visible.map((t) => (
                <li key={t.id}>
                  <a
                    href={href(`plugins/${encodeURIComponent(id)}/${t.id}`)}
                    aria-current={t === current ? "page" : undefined}
                  >
                    {t.label}
                  </a>
                </li>
              ))}
            </ul>
          </nav>
          <div class="tab-body">{current?.render({ session, plugin: p, reload: plugin.reload, route })}</div>
        </>
      )}
    </section>
  );
}

type DialogKind = "disable" | "restart" | "update" | "rollback" | "uninstall" | undefined;

function Actions({ session, plugin, reload }: { session: Session; plugin: PluginDetail; reload: () => void }) {
  const [open, setOpen] = useState<DialogKind>();
  const [error, setError] = useState<ApiError>();
  const id = plugin.id;
  const done = (what: string) => () => {
    setError(undefined);
    notices.say(what);
    reload();
  };
  const any = ["EnablePlugin", "DisablePlugin", "RestartPlugin", "UpdatePlugin", "RollbackPlugin", "UninstallPlugin"].some((m) =>
    session.can(m),
  );
  if (!any) return null;
  return (
    <div class="actions" role="group" aria-label="Actions">
      {session.can("EnablePlugin") && !plugin.enabled && (
        <ActionButton
          kind="primary"
          run={() => session.api.plugins.enablePlugin({ pluginId: id })}
          onDone={done(`${id} enabled`)}
          onError={setError}
        >
          Enable
        </ActionButton>
      )}
      {session.can("EnablePlugin") && error?.code === "PLUGIN_DEPENDENCY_ERROR" && (
        <ActionButton
          run={() => session.api.plugins.enablePlugin({ pluginId: id, enableDependencies: true })}
          onDone={done(`${id} and its dependencies enabled`)}
          onError={setError}
        >
          Enable with its dependencies
        </ActionButton>
      )}
      {session.can("DisablePlugin") && plugin.enabled && (
        <button type="button" onClick={() => setOpen("disable")}>
          Disable…
        </button>
      )}
      {session.can("RestartPlugin") && plugin.enabled && (
        <button type="button" onClick={() => setOpen("restart")}>
          Restart…
        </button>
      )}
      {session.can("UpdatePlugin") && (
        <button type="button" onClick={() => setOpen("update")}>
          Update…
        </button>
      )}
      {session.can("RollbackPlugin") && (
        <button type="button" onClick={() => setOpen("rollback")}>
          Roll back…
        </button>
      )}
      {session.can("UninstallPlugin") && (
        <button type="button" class="danger" onClick={() => setOpen("uninstall")}>
          Uninstall…
        </button>
      )}
      <ErrorNote error={error} />
      <Dialog open={open === "disable"} title={`Disable ${id}`} onClose={() => setOpen(undefined)}>
        <DisableForm session={session} id={id} onDone={() => (setOpen(undefined), done(`${id} disabled`)())} />
      </Dialog>
      <Dialog open={open === "restart"} title={`Restart ${id}`} onClose={() => setOpen(undefined)}>
        <RestartForm session={session} id={id} onDone={() => (setOpen(undefined), done(`${id} restarted`)())} />
      </Dialog>
      <Dialog open={open === "update"} title={`Update ${id}`} onClose={() => setOpen(undefined)}>
        <UpdateForm session={session} plugin={plugin} onDone={(v) => (setOpen(undefined), done(`${id} updated to ${v}`)())} />
      </Dialog>
      <Dialog open={open === "rollback"} title={`Roll back ${id}`} onClose={() => setOpen(undefined)}>
        <RollbackForm session={session} id={id} onDone={(v) => (setOpen(undefined), done(`${id} rolled back to ${v}`)())} />
      </Dialog>
      <Dialog open={open === "uninstall"} title={`Uninstall ${id}`} onClose={() => setOpen(undefined)}>
        <UninstallForm
          session={session}
          id={id}
          onDone={() => {
            setOpen(undefined);
            notices.say(`${id} uninstalled`);
            navigate("");
          }}
        />
      </Dialog>
    </div>
  );
}

/** A dialog's form: runs submit, shows its error, and closes with Cancel. */
function DialogForm(props: {
  submit: () => Promise<void>;
  label: string;
  danger?: boolean;
  /** Nothing to submit (a rollback without backups). */
  disabled?: boolean;
  children: preact.ComponentChildren;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError>();
  return (
    <form
      method="dialog"
      onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        setError(undefined);
        try {
          await props.submit();
        } catch (err) {
          setError(toApiError(err));
        } finally {
          setBusy(false);
        }
      }}
    >
      {props.children}
      <ErrorNote error={error} />
      <div class="buttons">
        <button type="submit" class={props.danger ? "danger" : "primary"} disabled={busy || props.disabled} aria-busy={busy}>
          {props.label}
        </button>
        <button type="button" onClick={closeDialog}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function DisableForm({ session, id, onDone }: { session: Session; id: string; onDone: () => void }) {
  const [reason, setReason] = useState("");
  const [graceful, setGraceful] = useState(true);
  const [timeout, setTimeout_] = useState("30");
  const [timeoutProblem, setTimeoutProblem] = useState<string>();
  const [force, setForce] = useState(false);
  return (
    <DialogForm
      label="Disable"
      danger
      submit={async () => {
        // A whole number of seconds, or the request could not carry it; the server checks the range.
        const seconds = Number(timeout);
        if (graceful && !/^\d+$/.test(timeout.trim())) {
          setTimeoutProblem("must be a whole number of seconds");
          document.getElementById("d-timeout")?.focus();
          return;
        }
        setTimeoutProblem(undefined);
        await session.api.plugins.disablePlugin({
          pluginId: id,
          reason,
          gracefulShutdown: graceful,
          timeoutSeconds: graceful ? seconds : undefined,
          force,
        });
        onDone();
      }}
    >
      <label for="d-reason">Reason (kept in the audit log)</label>
      <input id="d-reason" value={reason} maxLength={1024} onInput={(e) => setReason(e.currentTarget.value)} />
      <div class="check">
        <input id="d-graceful" type="checkbox" checked={graceful} onChange={(e) => setGraceful(e.currentTarget.checked)} />
        <label for="d-graceful">Graceful: ask the plugin to shut down before stopping it</label>
      </div>
      <label for="d-timeout">Graceful shutdown timeout (seconds, 1 to 600)</label>
      <input
        id="d-timeout"
        type="number"
        min={1}
        max={600}
        value={timeout}
        disabled={!graceful}
        aria-invalid={timeoutProblem ? true : undefined}
        aria-describedby={timeoutProblem ? "d-timeout-error" : undefined}
        onInput={(e) => setTimeout_(e.currentTarget.value)}
      />
      {timeoutProblem && (
        <p class="field-error" id="d-timeout-error">
          {timeoutProblem}
        </p>
      )}
      <div class="check">
        <input id="d-force" type="checkbox" checked={force} onChange={(e) => setForce(e.currentTarget.checked)} />
        <label for="d-force">Force: disable even when active plugins depend on it</label>
      </div>
    </DialogForm>
  );
}

function RestartForm({ session, id, onDone }: { session: Session; id: string; onDone: () => void }) {
  const [reason, setReason] = useState("");
  return (
    <DialogForm
      label="Restart"
      submit={async () => {
        await session.api.plugins.restartPlugin({ pluginId: id, reason });
        onDone();
      }}
    >
      <label for="r-reason">Reason (kept in the audit log)</label>
      <input id="r-reason" value={reason} maxLength={1024} onInput={(e) => setReason(e.currentTarget.value)} />
    </DialogForm>
  );
}

function UpdateForm({ session, plugin, onDone }: { session: Session; plugin: PluginDetail; onDone: (version: string) => void }) {
  // The catalog's newest version of this plugin, offered first.
  const latest = useLoad(
    async (signal) => {
      if (!session.can("SearchPlugins")) return undefined;
      const res = await session.api.repos.searchPlugins({ query: plugin.id, perPage: 50 }, { signal });
      return res.plugins.find((c) => c.id === plugin.id);
    },
    [plugin.id],
  );
  const [version, setVersion] = useState("");
  const [backup, setBackup] = useState(true);
  const [restart, setRestart] = useState(true);
  const [updateConfig, setUpdateConfig] = useState(false);
  const offered = latest.data?.version;
  return (
    <DialogForm
      label="Update"
      submit={async () => {
        const res = await session.api.plugins.updatePlugin({
          pluginId: plugin.id,
          source: "repository",
          version: version.trim(),
          backupCurrent: backup,
          restartPlugin: restart,
          updateConfig,
        });
        onDone(res.update?.newVersion ?? version);
      }}
    >
      <p>
        Installed: <strong>{plugin.version}</strong>.{" "}
        {latest.loading ? "Looking in the catalog…" : offered ? <>The catalog offers <strong>{offered}</strong>.</> : "The catalog does not list it."}
      </p>
      <label for="u-version">Version (empty for the newest in the catalog)</label>
      <input id="u-version" value={version} placeholder={offered} maxLength={128} onInput={(e) => setVersion(e.currentTarget.value)} />
      <div class="check">
        <input id="u-backup" type="checkbox" checked={backup} onChange={(e) => setBackup(e.currentTarget.checked)} />
        <label for="u-backup">Back up the installed version first (for a rollback)</label>
      </div>
      <div class="check">
        <input id="u-restart" type="checkbox" checked={restart} onChange={(e) => setRestart(e.currentTarget.checked)} />
        <label for="u-restart">Restart the plugin on the new version</label>
      </div>
      <div class="check">
        <input id="u-config" type="checkbox" checked={updateConfig} onChange={(e) => setUpdateConfig(e.currentTarget.checked)} />
        <label for="u-config">Take the new version's configuration defaults</label>
      </div>
      <ErrorNote error={latest.error} title="Could not search the catalog" />
    </DialogForm>
  );
}

function RollbackForm({ session, id, onDone }: { session: Session; id: string; onDone: (version: string) => void }) {
  const backups = useLoad((signal) => session.api.plugins.listBackups({ pluginId: id }, { signal }), [id]);
  const [chosen, setChosen] = useState("");
  const list = backups.data?.backups ?? [];
  return (
    <DialogForm
      label="Roll back"
      disabled={list.length === 0}
      submit={async () => {
        const res = await session.api.plugins.rollbackPlugin({ pluginId: id, backupId: chosen || (list[0]?.backupId ?? "") });
        onDone(res.rollback?.toVersion ?? "the backup");
      }}
    >
      <ErrorNote error={backups.error} title="Could not list the backups" />
      {backups.data && list.length === 0 && <p>There are no backups of {id}. Updates and uninstalls make them.</p>}
      {list.length > 0 && (
        <fieldset>
          <legend>Backup to restore</legend>
          {list.map((b, i) => (
            <div class="check" key={b.backupId}>
              <input
                type="radio"
                name="backup"
                id={`b-${b.backupId}`}
                value={b.backupId}
                checked={chosen ? chosen === b.backupId : i === 0}
                onChange={() => setChosen(b.backupId)}
              />
              <label for={`b-${b.backupId}`}>
                {b.version} · <Time ts={b.createdAt} /> · {b.reason} · {(b.sizeBytes / 1024).toFixed(0)} KiB
              </label>
            </div>
          ))}
        </fieldset>
      )}
    </DialogForm>
  );
}

function UninstallForm({ session, id, onDone }: { session: Session; id: string; onDone: () => void }) {
  const [force, setForce] = useState(false);
  const [backup, setBackup] = useState(true);
  const [cleanup, setCleanup] = useState(false);
  return (
    <DialogForm
      label="Uninstall"
      danger
      submit={async () => {
        await session.api.plugins.uninstallPlugin({ pluginId: id, force, backup, cleanupData: cleanup });
        onDone();
      }}
    >
      <p>The plugin is stopped and removed.</p>
      <div class="check">
        <input id="x-backup" type="checkbox" checked={backup} onChange={(e) => setBackup(e.currentTarget.checked)} />
        <label for="x-backup">Keep a backup (it can be restored by a rollback after a reinstall)</label>
      </div>
      <div class="check">
        <input id="x-cleanup" type="checkbox" checked={cleanup} onChange={(e) => setCleanup(e.currentTarget.checked)} />
        <label for="x-cleanup">Remove its data (configuration, key-value store, data directory)</label>
      </div>
      <div class="check">
        <input id="x-force" type="checkbox" checked={force} onChange={(e) => setForce(e.currentTarget.checked)} />
        <label for="x-force">Force: uninstall even when other plugins depend on it</label>
      </div>
    </DialogForm>
  );
}

function Overview({ plugin: p }: TabProps) {
  const rt = p.runtime;
  return (
    <div class="overview">
      {p.description && <p>{p.description}</p>}
      <dl class="facts">
        <dt>Id</dt>
        <dd>
          <code>{p.id}</code>
        </dd>
        {p.author && (
          <>
            <dt>Author</dt>
            <dd>
              {p.author} {p.email && <a href={`mailto:${p.email}`}>{p.email}</a>}
            </dd>
          </>
        )}
        {p.homepage && (
          <>
            <dt>Homepage</dt>
            <dd>
              {webUrl(p.homepage) ? (
                <a href={webUrl(p.homepage)} rel="noopener noreferrer" target="_blank">
                  {p.homepage}
                </a>
              ) : (
                p.homepage
              )}
            </dd>
          </>
        )}
        {p.tags.length > 0 && (
          <>
            <dt>Tags</dt>
            <dd>{p.tags.join(", ")}</dd>
          </>
        )}
        <dt>Installed</dt>
        <dd>
          <Time ts={p.installedAt} />
        </dd>
        <dt>Last updated</dt>
        <dd>
          <Time ts={p.lastUpdated} />
        </dd>
        {p.manifest && (
          <>
            <dt>Entry point</dt>
            <dd>
              <code>{p.manifest.entryPoint}</code>
            </dd>
            <dt>Nexus version</dt>
            <dd>{p.manifest.nexusVersion}</dd>
            {p.manifest.license && (
              <>
                <dt>License</dt>
                <dd>{p.manifest.license}</dd>
              </>
            )}
          </>
        )}
        <dt>Depends on</dt>
        <dd>{p.dependencies.length ? p.dependencies.map((d) => <PluginLink key={d} id={d} />) : "nothing"}</dd>
        <dt>Needed by</dt>
        <dd>{p.dependents.length ? p.dependents.map((d) => <PluginLink key={d} id={d} />) : "nothing"}</dd>
      </dl>
      {rt && (
        <>
          <h2>Runtime</h2>
          <dl class="facts">
            <dt>Process</dt>
            <dd>{rt.pid ? rt.pid : "not running here"}</dd>
            <dt>Instances</dt>
            <dd>
              {rt.instances} connected{rt.desiredInstances ? ` of ${rt.desiredInstances} wanted` : ""}
            </dd>
            <dt>Restarts</dt>
            <dd>
              {rt.restarts}
              {rt.backoffSeconds > 0 && ` (next start in ${rt.backoffSeconds.toFixed(0)} s)`}
            </dd>
            <dt>Started</dt>
            <dd>
              <Time ts={rt.startedAt} />
            </dd>
          </dl>
        </>
      )}
      <h2>HTTP endpoints</h2>
      {p.apiEndpoints.length > 0 && (
        <p class="hint">Calls answered by this server since it started, refused callers included (4xx).</p>
      )}
      {p.apiEndpoints.length === 0 ? (
        <p class="muted">None declared.</p>
      ) : (
        <div class="table-wrap" tabIndex={0} role="region" aria-label="HTTP endpoints">
          <table>
            <thead>
              <tr>
                <th scope="col">Path</th>
                <th scope="col">Methods</th>
                <th scope="col">Description</th>
                <th scope="col" class="num">
                  Calls
                </th>
                <th scope="col" class="num">
                  4xx
                </th>
                <th scope="col" class="num">
                  5xx
                </th>
                <th scope="col" class="num">
                  Mean time
                </th>
              </tr>
            </thead>
            <tbody>
              {p.apiEndpoints.map((e) => (
                <tr key={e.path}>
                  <td>
                    <code>{e.path}</code>
                  </td>
                  <td>{e.methods.join(", ")}</td>
                  <td>{e.description}</td>
                  <td class="num">{e.stats?.requests ?? 0}</td>
                  <td class="num">{e.stats?.clientErrors ?? 0}</td>
                  <td class="num">{e.stats?.serverErrors ?? 0}</td>
                  <td class="num">{e.stats?.requests ? `${e.stats.averageResponseMs.toFixed(1)} ms` : "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <h2>Events</h2>
      <div class="two">
        <div>
          <h3>Emits</h3>
          <EventList items={p.events?.emits ?? []} />
        </div>
        <div>
          <h3>Subscribes to</h3>
          <EventList items={p.events?.subscribes ?? []} />
        </div>
      </div>
      <h2>Services and message types</h2>
      <div class="two">
        <div>
          <h3>Services it provides</h3>
          {p.services.length === 0 ? (
            <p class="muted">None.</p>
          ) : (
            <ul>
              {p.services.map((s) => (
                <li key={s}>
                  <code>{s}</code>
                </li>
              ))}
            </ul>
          )}
        </div>
        <div>
          <h3>Message types it handles</h3>
          {p.messageTypes.length === 0 ? (
            <p class="muted">None.</p>
          ) : (
            <ul>
              {p.messageTypes.map((m) => (
                <li key={m.type}>
                  <code>{m.type}</code> {m.description}
                  {m.requiredPermission && (
                    <span class="sub">
                      {" "}
                      (senders need <code>{m.requiredPermission}</code>)
                    </span>
                  )}
                </li>
              ))}
            </ul>
          )}
        </div>
      </div>
    </div>
  );
}

function EventList({ items }: { items: { type: string; description: string }[] }) {
  if (items.length === 0) return <p class="muted">None.</p>;
  return (
    <ul>
      {items.map((e) => (
        <li key={e.type}>
          <code>{e.type}</code> {e.description}
        </li>
      ))}
    </ul>
  );
}

function PluginLink({ id }: { id: string }) {
  return (
    <a class="chip" href={href(`plugins/${encodeURIComponent(id)}`)}>
      {id}
    </a>
  );
}
