// The plugin's logs: one page of stored entries (GetPluginLogs) with every filter the API has
// (level, text, time range, page, page size), kept in the URL; and a live tail
// (TailPluginLogs, a server stream) behind "Follow live" that honours the level and text
// filters, keeps the newest lines, pauses, and reconnects with backoff when the stream breaks.
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { JsonValue } from "@bufbuild/protobuf";
import type { LogEntry } from "../../gen/nexus/plugin/v1/plugin_pb.js";
import { toApiError, type ApiError, type Session } from "../api.js";
import { setQuery } from "../router.js";
import { Badge, ErrorNote, Time, useLoad, type FeedState } from "../ui.js";
import type { TabProps } from "./plugin.js";
import "./plugin-tabs.css";

const levels = ["DEBUG", "INFO", "WARNING", "ERROR"];
const pageSizes = [25, 50, 100, 250, 500, 1000];
const DEFAULT_PER_PAGE = 100;
/** The most lines the live tail keeps on screen (and in its pause buffer). */
const MAX_LINES = 1000;
/** Stored entries the tail sends first, so that the live view starts with some context. */
const BACKLOG = 100;

export function LogsTab({ session, plugin, route }: TabProps) {
  const q = route.query;
  const level = levels.includes(q.get("level") ?? "") ? (q.get("level") as string) : "";
  const search = q.get("search") ?? "";
  const since = q.get("since") ?? "";
  const until = q.get("until") ?? "";
  const page = Math.max(1, Math.floor(Number(q.get("page")) || 1));
  const askedSize = Number(q.get("per_page"));
  const perPage = pageSizes.includes(askedSize) ? askedSize : DEFAULT_PER_PAGE;
  const live = q.get("live") === "1";

  // The text filter is typed freely and reaches the URL (and the server) once typing pauses:
  // each change restarts the tail, which should not happen per keystroke.
  const [text, setText] = useState(search);
  // Back and Forward change the URL's filter: the box follows it.
  useEffect(() => setText(search), [search]);
  useEffect(() => {
    if (text === search) return;
    const t = setTimeout(() => setQuery({ search: text.trim() === "" ? undefined : text, page: undefined }), 350);
    return () => clearTimeout(t);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [text]);

  const sinceDate = parseDate(since);
  const untilDate = parseDate(until);
  const rangeProblem = sinceDate && untilDate && untilDate < sinceDate ? "must not be before From" : undefined;

  const logs = useLoad(
    async (signal) => {
      // The live view reads the tail only; a range the server would refuse is not sent.
      if (live || rangeProblem) return undefined;
      return session.api.plugins.getPluginLogs(
        {
          pluginId: plugin.id,
          level,
          search,
          startTime: sinceDate ? timestampFromDate(sinceDate) : undefined,
          endTime: untilDate ? timestampFromDate(untilDate) : undefined,
          page,
          perPage,
        },
        { signal },
      );
    },
    [plugin.id, level, search, since, until, page, perPage, live, rangeProblem],
  );

  const filtered = level !== "" || search !== "" || since !== "" || until !== "";
  const pg = logs.data?.pagination;
  const pages = pg ? Math.max(1, Math.ceil(pg.total / pg.perPage)) : 1;
  return (
    <div>
      <form class="filters" role="search" aria-label="Filter the logs" onSubmit={(e) => e.preventDefault()}>
        <div>
          <label for="l-level">Level</label>
          <select id="l-level" value={level} onChange={(e) => setQuery({ level: e.currentTarget.value, page: undefined })}>
            <option value="">any</option>
            {levels.map((l) => (
              <option key={l} value={l}>
                {l} and above
              </option>
            ))}
          </select>
        </div>
        <div>
          <label for="l-search">Message contains (any case)</label>
          <input id="l-search" type="search" value={text} maxLength={256} onInput={(e) => setText(e.currentTarget.value)} />
        </div>
        <div>
          <label for="l-since">From</label>
          <input
            id="l-since"
            type="datetime-local"
            step={1}
            value={toLocalInput(sinceDate)}
            disabled={live}
            aria-describedby={live ? "l-live-hint" : undefined}
            onChange={(e) => setQuery({ since: fromLocalInput(e.currentTarget.value), page: undefined })}
          />
        </div>
        <div>
          <label for="l-until">Until</label>
          <input
            id="l-until"
            type="datetime-local"
            step={1}
            value={toLocalInput(untilDate)}
            disabled={live}
            aria-invalid={rangeProblem ? "true" : undefined}
            aria-describedby={rangeProblem ? "l-until-error" : live ? "l-live-hint" : undefined}
            onChange={(e) => setQuery({ until: fromLocalInput(e.currentTarget.value), page: undefined })}
          />
          {rangeProblem && (
            <p class="field-error" id="l-until-error">
              Until {rangeProblem}.
            </p>
          )}
        </div>
        <div>
          <label for="l-per-page">Per page</label>
          <select
            id="l-per-page"
            value={String(perPage)}
            disabled={live}
            aria-describedby={live ? "l-live-hint" : undefined}
            onChange={(e) =>
              setQuery({ per_page: e.currentTarget.value === String(DEFAULT_PER_PAGE) ? undefined : e.currentTarget.value, page: undefined })
            }
          >
            {pageSizes.map((n) => (
              <option key={n} value={String(n)}>
                {n}
              </option>
            ))}
          </select>
        </div>
        <div class="buttons">
          {filtered && (
            <button
              type="button"
              onClick={() => {
                setText("");
                setQuery({ level: undefined, search: undefined, since: undefined, until: undefined, page: undefined });
              }}
            >
              Clear filters
            </button>
          )}
          {!live && (
            <button type="button" onClick={logs.reload} disabled={logs.loading} aria-busy={logs.loading}>
              Reload
              {logs.loading && <span class="spinner" aria-hidden="true" />}
            </button>
          )}
          {session.can("TailPluginLogs") && (
            <button type="button" aria-pressed={live} onClick={() => setQuery({ live: live ? undefined : "1" })}>
              Follow live
            </button>
          )}
        </div>
      </form>
      {live && (
        <p class="hint" id="l-live-hint">
          The live tail applies the level and text filters; the time range and paging apply to the stored entries shown when
          Follow live is off.
        </p>
      )}

      {live ? (
        // A new filter starts a new tail (and a fresh list).
        <LiveTail key={`${plugin.id}|${level}|${search}`} session={session} pluginId={plugin.id} level={level} search={search} />
      ) : (
        <>
          <ErrorNote error={logs.error} title="Could not load the logs" />
          {!logs.data && logs.loading && <p class="muted">Loading the logs…</p>}
          {logs.data && logs.data.logs.length === 0 && (pg?.total ?? 0) > 0 && (
            // A bookmarked page past the end (the logs were pruned since, or a filter changed).
            <p class="empty">
              Page {page} is past the last page.{" "}
              <button type="button" onClick={() => setQuery({ page: undefined })}>
                Go to the first page
              </button>
            </p>
          )}
          {logs.data && logs.data.logs.length === 0 && (pg?.total ?? 0) === 0 && (
            <p class="empty">{filtered ? "No log entries match these filters." : `${plugin.name} has not logged anything yet.`}</p>
          )}
          {logs.data && logs.data.logs.length > 0 && pg && (
            <>
              <Pager page={pg.page} pages={pages} total={pg.total} hasNext={pg.hasNext} />
              <div class="table-wrap" tabIndex={0} role="region" aria-label="Log entries, newest first">
                <LogTable lines={logs.data.logs.map((entry, seq) => ({ seq, entry }))} caption="Log entries, newest first" />
              </div>
              {pg.total > pg.perPage && <Pager page={pg.page} pages={pages} total={pg.total} hasNext={pg.hasNext} bottom />}
            </>
          )}
        </>
      )}
    </div>
  );
}

function Pager(props: { page: number; pages: number; total: number; hasNext: boolean; bottom?: boolean }) {
  return (
    <nav class="pager" aria-label={props.bottom ? "Pages (bottom)" : "Pages"}>
      <span>
        Page {props.page} of {props.pages} · {props.total} entr{props.total === 1 ? "y" : "ies"}
      </span>
      <div class="buttons">
        <button type="button" disabled={props.page <= 1} onClick={() => setQuery({ page: props.page - 1 > 1 ? String(props.page - 1) : undefined })}>
          Newer
        </button>
        <button type="button" disabled={!props.hasNext} onClick={() => setQuery({ page: String(props.page + 1) })}>
          Older
        </button>
      </div>
    </nav>
  );
}

interface Line {
  seq: number;
  entry: LogEntry;
}

// At phone width the log table is laid out as stacked rows (CSS), which makes browsers drop
// its table semantics; the explicit roles keep them for screen readers.
function LogTable({ lines, caption, precise }: { lines: Line[]; caption: string; precise?: boolean }) {
  return (
    <table class="log-table" role="table">
      <caption class="visually-hidden">{caption}</caption>
      <thead role="rowgroup">
        <tr role="row">
          <th scope="col" role="columnheader">
            Time
          </th>
          <th scope="col" role="columnheader">
            Level
          </th>
          <th scope="col" role="columnheader">
            Message
          </th>
        </tr>
      </thead>
      <tbody role="rowgroup">
        {lines.map((l) => (
          <LogRow key={l.seq} entry={l.entry} precise={precise} />
        ))}
      </tbody>
    </table>
  );
}

function LogRow({ entry, precise }: { entry: LogEntry; precise?: boolean }) {
  const fields = Object.entries(entry.metadata ?? {});
  return (
    <tr role="row">
      <td class="log-time" role="cell">
        {precise ? <ClockTime entry={entry} /> : <Time ts={entry.timestamp} />}
      </td>
      <td role="cell">
        <Badge value={entry.level || "—"} extra="log-level" />
      </td>
      <td class="log-msg" role="cell">
        {entry.message}
        {fields.length > 0 && (
          <ul class="log-fields" aria-label="Fields">
            {fields.map(([k, v]) => (
              <li key={k}>
                <span class="k">{k}</span>={showValue(v)}
              </li>
            ))}
          </ul>
        )}
      </td>
    </tr>
  );
}

/** The clock time to the millisecond (the live tail), the full date on hover. */
function ClockTime({ entry }: { entry: LogEntry }) {
  if (!entry.timestamp) return <span class="muted">—</span>;
  const d = new Date(Number(entry.timestamp.seconds) * 1000 + Math.floor(entry.timestamp.nanos / 1e6));
  const clock = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  return (
    <time dateTime={d.toISOString()} title={d.toLocaleString()}>
      {clock}.{String(d.getMilliseconds()).padStart(3, "0")}
    </time>
  );
}


function showValue(v: JsonValue): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** A date from the URL (an ISO time), or undefined when absent or unreadable. */
function parseDate(s: string): Date | undefined {
  if (!s) return undefined;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/** A date as a datetime-local input's value, in local time to the second. */
function toLocalInput(d?: Date): string {
  if (!d) return "";
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A datetime-local input's value (local time) as an ISO time for the URL; empty stays empty. */
function fromLocalInput(v: string): string | undefined {
  if (!v) return undefined;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

/** An entry's time in nanoseconds, to order entries exactly. */
function entryNanos(e: LogEntry): bigint {
  return e.timestamp ? e.timestamp.seconds * 1_000_000_000n + BigInt(e.timestamp.nanos) : 0n;
}

function entryKey(e: LogEntry): string {
  return `${e.level}\u0000${e.message}\u0000${JSON.stringify(e.metadata ?? {})}`;
}

/**
 * The live tail. The stream starts with up to BACKLOG stored entries, then sends new ones as
 * they are written. After a break it reconnects (1 s, 2 s, 4 s… up to 30 s) and asks for the
 * backlog again, skipping what it already shows, so that lines of the gap are not lost.
 */
function LiveTail({ session, pluginId, level, search }: { session: Session; pluginId: string; level: string; search: string }) {
  const [lines, setLines] = useState<Line[]>([]);
  const [waiting, setWaiting] = useState<Line[]>([]);
  const [paused, setPaused] = useState(false);
  const [state, setState] = useState<FeedState>("connecting");
  const [retryIn, setRetryIn] = useState(0);
  const [error, setError] = useState<ApiError>();
  const pausedRef = useRef(paused);
  pausedRef.current = paused;

  useEffect(() => {
    const ctl = new AbortController();
    let delay = 1000;
    let seq = 0;
    // The newest entry shown, and the entries shown at that very time: after a reconnect the
    // backlog is skipped up to and including them.
    let lastNs = -1n;
    let lastKeys = new Set<string>();
    // Lines are gathered and rendered at most ten times a second, not one render per line.
    let queue: Line[] = [];
    let flushTimer: ReturnType<typeof setTimeout> | undefined;
    const flush = () => {
      flushTimer = undefined;
      const batch = queue;
      queue = [];
      const add = (xs: Line[]) => keepNewest(xs.concat(batch));
      if (pausedRef.current) setWaiting(add);
      else setLines(add);
    };
    (async () => {
      let connects = 0;
      while (!ctl.signal.aborted) {
        // On a reconnect, entries up to the newest one shown are the backlog of what we have.
        let cutNs = connects > 0 ? lastNs : -1n;
        const cutKeys = lastKeys;
        try {
          setState("connecting");
          const stream = session.api.plugins.tailPluginLogs(
            { pluginId, level, search, backlog: BACKLOG },
            {
              signal: ctl.signal,
              // The server sends its headers as soon as the tail holds, before any entry.
              onHeader: () => {
                connects++;
                delay = 1000;
                setState("live");
                setError(undefined);
              },
            },
          );
          for await (const res of stream) {
            const e = res.entry;
            if (!e) continue;
            const ns = entryNanos(e);
            const key = entryKey(e);
            if (cutNs >= 0n) {
              if (ns < cutNs || (ns === cutNs && cutKeys.has(key))) continue;
              // The first entry past what was shown: the rest of the stream is new.
              cutNs = -1n;
            }
            if (ns > lastNs) {
              lastNs = ns;
              lastKeys = new Set([key]);
            } else if (ns === lastNs) {
              lastKeys.add(key);
            }
            queue.push({ seq: ++seq, entry: e });
            flushTimer ??= setTimeout(flush, 100);
          }
          // The server ended the stream (it shuts down, or the plugin went away): reconnect.
        } catch (err) {
          if (ctl.signal.aborted) return;
          const e = toApiError(err);
          setError(e);
          // A refusal does not get better by retrying.
          if (
            e.unauthenticated ||
            e.code === "VALIDATION_ERROR" ||
            e.code === "PLUGIN_PERMISSION_DENIED" ||
            e.code === "PERMISSION_DENIED" ||
            e.code === "PLUGIN_NOT_FOUND"
          ) {
            setState("stopped");
            return;
          }
        }
        if (ctl.signal.aborted) return;
        setState("retrying");
        setRetryIn(Math.round(delay / 1000));
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 30_000);
      }
    })();
    return () => {
      ctl.abort();
      clearTimeout(flushTimer);
    };
  }, [session, pluginId, level, search]);

  // Auto-scroll: only while the reader is at the bottom; scrolled up, the view stays put.
  const box = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const [showJump, setShowJump] = useState(false);
  useLayoutEffect(() => {
    const el = box.current;
    if (el && atBottom.current) el.scrollTop = el.scrollHeight;
  }, [lines]);
  const onScroll = () => {
    const el = box.current;
    if (!el) return;
    atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 8;
    setShowJump(!atBottom.current);
  };
  const jump = () => {
    const el = box.current;
    if (!el) return;
    el.scrollTop = el.scrollHeight;
    atBottom.current = true;
    setShowJump(false);
  };

  const resume = () => {
    setPaused(false);
    setLines((ls) => keepNewest(ls.concat(waiting)));
    setWaiting([]);
  };

  // The status is announced politely, so its count changes at most every few seconds.
  const count = useThrottled(lines.length, 4000);
  const waitingCount = useThrottled(waiting.length, 4000);
  const stateText =
    state === "live"
      ? "live"
      : state === "connecting"
        ? "connecting…"
        : state === "retrying"
          ? `connection lost, retrying in ${retryIn} s…`
          : "stopped";

  return (
    <section class="tail" aria-label="Live tail">
      <div class="tail-bar">
        <span class={`feed ${state}`} role="status">
          <span class="dot" aria-hidden="true" /> Live tail: {paused ? "paused" : stateText} · {count} line{count === 1 ? "" : "s"}
          {paused && waitingCount > 0 && `, ${waitingCount} new waiting`}
        </span>
        <div class="buttons">
          {paused ? (
            <button type="button" class="primary" onClick={resume}>
              Resume{waiting.length > 0 ? ` (${waiting.length} new)` : ""}
            </button>
          ) : (
            <button type="button" onClick={() => setPaused(true)}>
              Pause
            </button>
          )}
          <button
            type="button"
            onClick={() => {
              setLines([]);
              setWaiting([]);
            }}
            disabled={lines.length === 0 && waiting.length === 0}
          >
            Clear
          </button>
          {showJump && (
            <button type="button" onClick={jump}>
              Jump to newest
            </button>
          )}
        </div>
      </div>
      <ErrorNote error={error} title={state === "stopped" ? "The live tail stopped" : "The live tail broke"} />
      {lines.length >= MAX_LINES && <p class="hint tail-note">The newest {MAX_LINES} lines are kept; older ones leave the top.</p>}
      {lines.length === 0 ? (
        <p class="empty">{state === "live" ? "Waiting for new log lines…" : "No lines yet."}</p>
      ) : (
        // No live region here: new lines are not read out one by one (the status counts them).
        <div class="tail-scroll" ref={box} onScroll={onScroll} tabIndex={0} role="region" aria-label="Live log lines, oldest first">
          <LogTable lines={lines} caption="Live log lines, oldest first" precise />
        </div>
      )}
    </section>
  );
}

/** The newest MAX_LINES of the lines. */
function keepNewest(lines: Line[]): Line[] {
  return lines.length > MAX_LINES ? lines.slice(-MAX_LINES) : lines;
}

/** The value, changing at most once per interval (the latest value wins at the end of it). */
function useThrottled<T>(value: T, ms: number): T {
  const [shown, setShown] = useState(value);
  const last = useRef(0);
  useEffect(() => {
    if (Object.is(value, shown)) return;
    const wait = last.current + ms - Date.now();
    if (wait <= 0) {
      last.current = Date.now();
      setShown(value);
      return;
    }
    const t = setTimeout(() => {
      last.current = Date.now();
      setShown(value);
    }, wait);
    return () => clearTimeout(t);
  }, [value, shown, ms]);
  return shown;
}
