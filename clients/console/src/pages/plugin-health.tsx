// The plugin's health: its overall state, each check it reports, and the figures of its
// report. It follows the event feed: any event about this plugin (enabled, disabled, error,
// health_changed, ...) loads the health again; "Check now" asks the plugin for fresh checks.
import { useEffect, useState } from "preact/hooks";
import type { GetPluginHealthResponse, HealthCheck } from "../../gen/nexus/plugin/v1/plugin_pb.js";
import type { ApiError } from "../api.js";
import { ActionButton, Badge, ErrorNote, FeedStatus, Time, notices, useEventFeed, useLoad, useSettled } from "../ui.js";
import { formatNumber } from "./chart.js";
import type { TabProps } from "./plugin.js";
import "./plugin-tabs.css";

export function HealthTab({ session, plugin }: TabProps) {
  const id = plugin.id;
  const loaded = useLoad((signal) => session.api.plugins.getPluginHealth({ pluginId: id }, { signal }), [id]);
  // The answer of "Check now" stands until the next load replaces it.
  const [checked, setChecked] = useState<GetPluginHealthResponse>();
  const [checkError, setCheckError] = useState<ApiError>();
  useEffect(() => setChecked(undefined), [loaded.data]);

  // Events come in bursts (a restart is several): load once they settle.
  const soon = useSettled(loaded.reload);
  const feed = useEventFeed(
    session,
    ["plugin.*"],
    (e) => {
      // plugin.health_changed carries {plugin_id, health}; it is handled like the others,
      // by loading the whole report again.
      if (e.data?.plugin_id === id) soon();
    },
    soon,
  );

  const health = (checked ?? loaded.data)?.health;
  const m = health?.metrics;
  return (
    <div>
      <div class="tab-head">
        {health && (
          <span class="big">
            Health <Badge value={health.status} />
          </span>
        )}
        {health && (
          <span>
            last checked <Time ts={health.lastCheck} />
          </span>
        )}
        {health && health.uptimeSeconds > 0 && <span>up {formatDuration(health.uptimeSeconds)}</span>}
        <FeedStatus feed={feed} label="Live updates" />
        <div class="buttons">
          {session.can("GetPluginHealth") && (
            <ActionButton
              run={async () => {
                setCheckError(undefined);
                setChecked(await session.api.plugins.getPluginHealth({ pluginId: id, refresh: true }));
              }}
              onDone={() => notices.say(`Health of ${id} checked`)}
              onError={setCheckError}
            >
              Check now
            </ActionButton>
          )}
        </div>
      </div>
      <ErrorNote error={checkError} title="The check failed" />
      <ErrorNote error={loaded.error} title="Could not load the health" />
      {!health && loaded.loading && <p class="muted">Loading the health…</p>}
      {health && (
        <>
          <h2>Checks</h2>
          {health.checks.length === 0 ? (
            <p class="empty">
              {plugin.enabled ? `${plugin.name} has not reported any checks yet.` : `${plugin.name} is disabled: it runs no checks.`}
            </p>
          ) : (
            <div class="table-wrap" tabIndex={0} role="region" aria-label="Health checks">
              {/* At phone width each check is a stacked card (CSS "stack"); the explicit roles
                  keep the table's semantics, which block layout would drop. */}
              <table class="stack" role="table">
                <thead role="rowgroup">
                  <tr role="row">
                    <th scope="col" role="columnheader">
                      Check
                    </th>
                    <th scope="col" role="columnheader">
                      Status
                    </th>
                    <th scope="col" role="columnheader">
                      Message
                    </th>
                    <th scope="col" role="columnheader" class="num">
                      Measured
                    </th>
                    <th scope="col" role="columnheader" class="num">
                      Took
                    </th>
                  </tr>
                </thead>
                <tbody role="rowgroup">
                  {health.checks.map((c) => (
                    <tr key={c.name} role="row">
                      <th scope="row" role="rowheader" data-label="Check">
                        <code>{c.name}</code>
                      </th>
                      <td role="cell" data-label="Status">
                        <Badge value={c.status} />
                      </td>
                      <td role="cell" data-label="Message">
                        {c.details ?? <span class="muted">—</span>}
                      </td>
                      <td role="cell" data-label="Measured" class="num">
                        {measured(c)}
                      </td>
                      <td role="cell" data-label="Took" class="num nowrap">
                        {c.responseTimeMs !== undefined ? `${formatNumber(c.responseTimeMs)} ms` : <span class="muted">—</span>}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          {m && (
            <>
              <h2 id="h-figures">Figures of the report</h2>
              <dl class="summary" aria-labelledby="h-figures">
                <div>
                  <dt>Requests per minute</dt>
                  <dd>{formatNumber(m.requestsPerMinute)}</dd>
                </div>
                <div>
                  <dt>Error rate</dt>
                  <dd>
                    {formatNumber(m.errorRate * 100)}
                    <span class="unit">%</span>
                  </dd>
                </div>
                <div>
                  <dt>Memory</dt>
                  <dd>
                    {formatNumber(m.memoryUsageMb)}
                    <span class="unit">MiB</span>
                  </dd>
                </div>
                <div>
                  <dt>CPU (of one core)</dt>
                  <dd>
                    {formatNumber(m.cpuUsagePercent)}
                    <span class="unit">%</span>
                  </dd>
                </div>
              </dl>
            </>
          )}
        </>
      )}
    </div>
  );
}

/**
 * A check's status. Checks say `pass`, `warning` or `fail`; the shared Badge knows `warn`
 * but not `warning`, so the warning tone is given here (the word is shown as sent).
 */

/** A check's value and its threshold, with the unit ("1 events (threshold 100 events)"). */
function measured(c: HealthCheck) {
  if (c.value === undefined) return <span class="muted">—</span>;
  const u = c.unit ? ` ${c.unit}` : "";
  return c.threshold !== undefined ? (
    <span>
      {formatNumber(c.value)}
      {u}{" "}
      <span class="muted">
        (threshold {formatNumber(c.threshold)}
        {u})
      </span>
    </span>
  ) : (
    `${formatNumber(c.value)}${u}`
  );
}

/** A duration in seconds as days, hours, minutes and seconds, the two largest parts. */
export function formatDuration(seconds: number): string {
  const s = Math.floor(seconds);
  const parts: [number, string][] = [
    [Math.floor(s / 86400), "d"],
    [Math.floor((s % 86400) / 3600), "h"],
    [Math.floor((s % 3600) / 60), "min"],
    [s % 60, "s"],
  ];
  const first = parts.findIndex(([n]) => n > 0);
  if (first < 0) return "0 s";
  return parts
    .slice(first, first + 2)
    .filter(([n]) => n > 0)
    .map(([n, u]) => `${n} ${u}`)
    .join(" ");
}
