// What the plugin could not process: the messages, broadcasts and events the host gave up
// delivering to it, newest first (ListDeadLetters; administrators and the plugin itself only,
// the plugin page hides the tab from others). The limit is kept in the URL (?limit=100).
import type { JsonObject } from "@bufbuild/protobuf";
import { setQuery } from "../router.js";
import { ErrorNote, Time, useLoad } from "../ui.js";
import type { TabProps } from "./plugin.js";
import "./plugin-tabs.css";

const limits = [10, 50, 100, 500, 1000];
const columns = ["Id", "Kind", "Type", "Source", "Attempts", "Reason", "Sent", "Dead-lettered"];
// The API's own default when no limit is sent.
const DEFAULT_LIMIT = 100;

export function DeadLettersTab({ session, plugin, route }: TabProps) {
  const asked = Number(route.query.get("limit"));
  const limit = limits.includes(asked) ? asked : DEFAULT_LIMIT;
  const list = useLoad((signal) => session.api.messaging.listDeadLetters({ pluginId: plugin.id, limit }, { signal }), [plugin.id, limit]);
  const letters = list.data?.deadLetters ?? [];
  return (
    <div>
      <p>
        Deliveries to {plugin.name} that the host gave up on after its retries, newest first. Nothing here is delivered again
        on its own.
      </p>
      <form class="filters" aria-label="Dead letters" onSubmit={(e) => e.preventDefault()}>
        <div>
          <label for="dl-limit">Show at most</label>
          <select id="dl-limit" value={String(limit)} onChange={(e) => setQuery({ limit: e.currentTarget.value === String(DEFAULT_LIMIT) ? undefined : e.currentTarget.value })}>
            {limits.map((l) => (
              <option key={l} value={String(l)}>
                {l}
              </option>
            ))}
          </select>
        </div>
        <div class="buttons">
          <button type="button" onClick={list.reload} disabled={list.loading} aria-busy={list.loading}>
            Reload
            {list.loading && <span class="spinner" aria-hidden="true" />}
          </button>
        </div>
      </form>
      <ErrorNote error={list.error} title="Could not list the dead letters" />
      {!list.data && list.loading && <p class="muted">Loading the dead letters…</p>}
      {list.data && letters.length === 0 && <p class="empty">No dead letters: {plugin.name} has processed everything delivered to it.</p>}
      {letters.length > 0 && (
        <>
          <p role="status" class="muted">
            {letters.length === limit ? `The newest ${limit} dead letters (there may be more).` : `${letters.length} dead letter${letters.length === 1 ? "" : "s"}.`}
          </p>
          <div class="table-wrap" tabIndex={0} role="region" aria-label="Dead letters">
            {/* At phone width each letter is a stacked card (CSS), labelled from data-label;
                the explicit roles keep the table's semantics, which block layout would drop. */}
            <table class="dead-letters stack" role="table">
              <thead role="rowgroup">
                <tr role="row">
                  {columns.map((c) => (
                    <th key={c} scope="col" role="columnheader" class={c === "Attempts" ? "num" : undefined}>
                      {c}
                    </th>
                  ))}
                </tr>
              </thead>
              {/* One body per letter: its facts, then its data across the whole width. */}
              {letters.map((d) => (
                <tbody key={`${d.kind}:${d.id}`} role="rowgroup">
                  <tr role="row">
                    <th scope="row" role="rowheader" data-label="Id">
                      <code>{d.id}</code>
                    </th>
                    <td role="cell" data-label="Kind">
                      {d.kind}
                    </td>
                    <td role="cell" data-label="Type">
                      <code>{d.type}</code>
                    </td>
                    <td role="cell" data-label="Source">
                      {d.source}
                    </td>
                    <td role="cell" data-label="Attempts" class="num">
                      {d.attempts}
                    </td>
                    <td role="cell" data-label="Reason" class="reason">
                      {d.reason}
                    </td>
                    <td role="cell" data-label="Sent" class="nowrap">
                      <Time ts={d.sentAt} />
                    </td>
                    <td role="cell" data-label="Dead-lettered" class="nowrap">
                      <Time ts={d.deadLetteredAt} />
                    </td>
                  </tr>
                  <tr class="payload-row" role="row">
                    <td colSpan={columns.length} class="payload" role="cell">
                      <Payload id={d.id} data={d.data} />
                    </td>
                  </tr>
                </tbody>
              ))}
            </table>
          </div>
        </>
      )}
    </div>
  );
}

function Payload({ id, data }: { id: string; data?: JsonObject }) {
  const n = data ? Object.keys(data).length : 0;
  if (!data || n === 0) return <span class="muted">No data.</span>;
  return (
    <details>
      <summary>
        Data<span class="visually-hidden"> of {id}</span> ({n} field{n === 1 ? "" : "s"})
      </summary>
      <pre>{JSON.stringify(data, null, 2)}</pre>
    </details>
  );
}
