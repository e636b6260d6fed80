// The live event feed: every event the server publishes (or those matching the patterns in the
// URL), newest first, with pausing and clearing; and a form to emit an event.
import { useEffect, useRef, useState } from "preact/hooks";
import type { JsonObject } from "@bufbuild/protobuf";
import type { EmitEventResponse, Event } from "../../gen/nexus/plugin/v1/messaging_pb.js";
import { fieldProblems, toApiError, type ApiError, type Session } from "../api.js";
import { setQuery, type Route } from "../router.js";
import { ErrorNote, FeedStatus, PageTitle, Time, notices, useEventFeed } from "../ui.js";
import "./events.css";

/** How many events the page keeps; older ones are dropped. */
const MAX_EVENTS = 500;
/** The API's rule for one pattern (WatchEventsRequest.patterns). */
const PATTERN = /^[A-Za-z0-9_*.:-]{1,128}$/;
/** The API takes at most this many patterns. */
const MAX_PATTERNS = 64;

function splitPatterns(text: string): string[] {
  return text
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "");
}

/** Why the patterns cannot be subscribed to, in the API's terms, or undefined when they can. */
function patternsProblem(patterns: string[]): string | undefined {
  const bad = patterns.filter((p) => !PATTERN.test(p));
  if (bad.length > 0) {
    return `${bad.map((b) => `"${b}"`).join(", ")} ${bad.length === 1 ? "is not a valid pattern" : "are not valid patterns"}: use letters, digits and _ * . : - only, at most 128 characters each.`;
  }
  if (patterns.length > MAX_PATTERNS) return `At most ${MAX_PATTERNS} patterns (there are ${patterns.length}).`;
  return undefined;
}

export function EventsPage({ session, route }: { session: Session; route: Route }) {
  const urlText = route.query.get("patterns") ?? "";
  const patterns = splitPatterns(urlText);
  const urlProblem = patternsProblem(patterns);
  const [draft, setDraft] = useState(urlText);
  const [problem, setProblem] = useState<string>();
  useEffect(() => {
    setDraft(patterns.join(", "));
    setProblem(undefined);
  }, [urlText]);
  const shownProblem = problem ?? urlProblem;
  const apply = (text: string) => {
    const next = splitPatterns(text);
    const p = patternsProblem(next);
    setProblem(p);
    if (p) {
      document.getElementById("ev-patterns")?.focus();
      return;
    }
    setQuery({ patterns: next.join(",") });
  };
  return (
    <section class="events-page">
      <PageTitle>Events</PageTitle>
      <form
        class="filters"
        role="search"
        aria-label="Choose events"
        onSubmit={(e) => {
          e.preventDefault();
          apply(draft);
        }}
      >
        <div class="patterns">
          <label for="ev-patterns">Event type patterns</label>
          <input
            id="ev-patterns"
            value={draft}
            spellcheck={false}
            autoComplete="off"
            placeholder="user.*, plugin.*"
            aria-invalid={shownProblem ? true : undefined}
            aria-describedby={shownProblem ? "ev-patterns-error ev-patterns-hint" : "ev-patterns-hint"}
            onInput={(e) => setDraft(e.currentTarget.value)}
          />
          <p class="hint" id="ev-patterns-hint">
            Comma-separated patterns, <code>*</code> matching any part (<code>user.*</code>, <code>*.error</code>); empty for
            every event. A new choice starts a new feed.
          </p>
          {shownProblem && (
            <p class="field-error" id="ev-patterns-error">
              {shownProblem}
            </p>
          )}
        </div>
        <div class="buttons">
          <button type="submit" class="primary">
            Watch
          </button>
          {urlText && (
            <button type="button" onClick={() => apply("")}>
              All events
            </button>
          )}
        </div>
      </form>
      {/* The feed starts only with patterns the API accepts, and anew for each choice. */}
      {urlProblem ? (
        <p class="empty">Not watching: the patterns in the address are not valid.</p>
      ) : (
        <Feed key={patterns.join(",")} session={session} patterns={patterns} />
      )}
      {session.can("EmitEvent") && <EmitForm session={session} />}
    </section>
  );
}

/** One line of the feed: an event, or the mark of a gap after the feed reconnected. */
type Entry = { seq: number; event: Event } | { seq: number; gapAt: Date };

function Feed({ session, patterns }: { session: Session; patterns: string[] }) {
  const [entries, setEntries] = useState<Entry[]>([]);
  const [paused, setPaused] = useState(false);
  // Events arriving while paused wait here (the newest MAX_EVENTS of them), and are counted.
  const held = useRef<Entry[]>([]);
  const [heldCount, setHeldCount] = useState(0);
  const [resumed, setResumed] = useState<number>();
  const pausedRef = useRef(false);
  const seq = useRef(0);

  const add = (entry: Entry) => {
    if (pausedRef.current) {
      held.current = [entry, ...held.current].slice(0, MAX_EVENTS);
      if ("event" in entry) setHeldCount((n) => n + 1);
      return;
    }
    setEntries((xs) => [entry, ...xs].slice(0, MAX_EVENTS));
  };
  const feed = useEventFeed(
    session,
    patterns,
    (event) => add({ seq: ++seq.current, event }),
    // Events published while the feed was down are not replayed: say so where the gap is.
    () => add({ seq: ++seq.current, gapAt: new Date() }),
  );

  const pause = () => {
    pausedRef.current = true;
    setPaused(true);
    setResumed(undefined);
    notices.say("Feed paused: new events are held and counted");
  };
  const resume = () => {
    pausedRef.current = false;
    const waiting = held.current;
    held.current = [];
    setEntries((xs) => [...waiting, ...xs].slice(0, MAX_EVENTS));
    setPaused(false);
    setResumed(heldCount);
    notices.say(`Feed resumed: ${heldCount} ${heldCount === 1 ? "event" : "events"} arrived while paused`);
    setHeldCount(0);
  };
  const clear = () => {
    setEntries([]);
    held.current = [];
    setHeldCount(0);
    setResumed(undefined);
    notices.say("Events cleared");
  };
  const count = entries.filter((e) => "event" in e).length;
  return (
    <div class="feed-view">
      <div class="feed-bar">
        <FeedStatus feed={feed} label={patterns.length > 0 ? `Watching ${patterns.join(", ")}` : "Watching every event"} />
        <div class="buttons">
          {paused ? (
            <button type="button" class="primary" onClick={resume}>
              Resume{heldCount > 0 ? ` (${heldCount} new)` : ""}
            </button>
          ) : (
            <button type="button" onClick={pause}>
              Pause
            </button>
          )}
          <button type="button" onClick={clear} disabled={entries.length === 0 && heldCount === 0}>
            Clear
          </button>
        </div>
      </div>
      <p class="feed-count">
        {count} {count === 1 ? "event" : "events"}, newest first (the last {MAX_EVENTS} are kept).
        {paused && (
          <strong class="held">
            {" "}
            Paused: {heldCount} new {heldCount === 1 ? "event" : "events"} held.
          </strong>
        )}
        {!paused && resumed !== undefined && (
          <span>
            {" "}
            {resumed} {resumed === 1 ? "event" : "events"} arrived while paused.
          </span>
        )}
      </p>
      {entries.length === 0 ? (
        <p class="empty">
          {feed.state === "live" ? "No events yet. They appear here as the server publishes them." : "Waiting for the feed…"}
        </p>
      ) : (
        <ol class="event-list" aria-label="Events, newest first" tabIndex={0}>
          {entries.map((entry) =>
            "event" in entry ? (
              <EventItem key={entry.seq} event={entry.event} />
            ) : (
              <li key={entry.seq} class="gap">
                Reconnected at <time dateTime={entry.gapAt.toISOString()}>{entry.gapAt.toLocaleTimeString()}</time>: events
                published while the feed was down are not shown.
              </li>
            ),
          )}
        </ol>
      )}
    </div>
  );
}

function EventItem({ event: e }: { event: Event }) {
  const keys = e.data ? Object.keys(e.data).length : 0;
  // The JSON is written out only while the details are open: the list re-renders with every
  // event, and up to 500 of them are kept.
  const [open, setOpen] = useState(false);
  return (
    <li class="event">
      <div class="event-head">
        <Time ts={e.timestamp} />
        <code class="event-type">{e.type}</code>
        <span>
          from <strong>{e.source || "unknown"}</strong>
        </span>
        <span class="sub">
          id <code>{e.id}</code>
        </span>
      </div>
      {keys > 0 ? (
        <details onToggle={(ev) => setOpen(ev.currentTarget.open)}>
          <summary>
            Data<span class="visually-hidden"> of {e.type} {e.id}</span> ({keys} {keys === 1 ? "field" : "fields"})
          </summary>
          {open && <pre>{JSON.stringify(e.data, null, 2)}</pre>}
        </details>
      ) : (
        <p class="sub">No data.</p>
      )}
    </li>
  );
}

/** The problems an API error reports for a request field (`data` covers `data.x`). */

function EmitForm({ session }: { session: Session }) {
  const [type, setType] = useState("");
  const [dataText, setDataText] = useState("");
  const [dataProblem, setDataProblem] = useState<string>();
  const [error, setError] = useState<ApiError>();
  const [busy, setBusy] = useState(false);
  const [sent, setSent] = useState<EmitEventResponse>();
  const typeRef = useRef<HTMLInputElement>(null);
  const dataRef = useRef<HTMLTextAreaElement>(null);
  const typeErrors = fieldProblems(error, "type");
  const dataErrors = fieldProblems(error, "data");
  // The field errors are shown on their fields; anything else (or an error naming no field) in full.
  const unplaced = error && (error.fields.length === 0 || error.fields.length > typeErrors.length + dataErrors.length);
  return (
    <section class="emit" aria-labelledby="emit-title">
      <h2 id="emit-title">Emit an event</h2>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          // A new attempt: the last answer no longer applies.
          setDataProblem(undefined);
          setError(undefined);
          setSent(undefined);
          let data: JsonObject | undefined;
          if (dataText.trim() !== "") {
            let parsed: unknown;
            try {
              parsed = JSON.parse(dataText);
            } catch (err) {
              setDataProblem(`This is not valid JSON: ${(err as Error).message}`);
              dataRef.current?.focus();
              return;
            }
            if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
              setDataProblem('The data must be a JSON object, such as {"user_id": "u-1"}.');
              dataRef.current?.focus();
              return;
            }
            data = parsed as JsonObject;
          }
          setBusy(true);
          try {
            const res = await session.api.messaging.emitEvent({ type: type.trim(), data });
            // The result below is a status region: it is announced without a notice.
            setSent(res);
          } catch (err) {
            const ae = toApiError(err);
            setError(ae);
            if (fieldProblems(ae, "type").length > 0) typeRef.current?.focus();
            else if (fieldProblems(ae, "data").length > 0) dataRef.current?.focus();
          } finally {
            setBusy(false);
          }
        }}
      >
        <div class="two">
          <div>
            <label for="emit-type">Type</label>
            <input
              id="emit-type"
              ref={typeRef}
              value={type}
              required
              maxLength={128}
              spellcheck={false}
              autoComplete="off"
              placeholder="maintenance.scheduled"
              aria-invalid={typeErrors.length > 0 ? true : undefined}
              aria-describedby={typeErrors.length > 0 ? "emit-type-error emit-type-hint" : "emit-type-hint"}
              onInput={(e) => setType(e.currentTarget.value)}
            />
            <p class="hint" id="emit-type-hint">
              Dotted, such as <code>user.signup</code>. Types starting with <code>plugin.</code> or <code>system.</code> are
              the host's own.
            </p>
            {typeErrors.length > 0 && (
              <p class="field-error" id="emit-type-error" role="alert">
                <code>{error?.code}</code>: {typeErrors.map((f) => f.description).join("; ")}
              </p>
            )}
          </div>
          <div>
            <label for="emit-data">Data (JSON object, optional)</label>
            <textarea
              id="emit-data"
              ref={dataRef}
              rows={4}
              spellcheck={false}
              value={dataText}
              placeholder='{"window": "02:00-03:00"}'
              aria-invalid={dataProblem || dataErrors.length > 0 ? true : undefined}
              aria-describedby={dataProblem || dataErrors.length > 0 ? "emit-data-error" : undefined}
              onInput={(e) => {
                setDataText(e.currentTarget.value);
                setDataProblem(undefined);
              }}
            />
            {(dataProblem || dataErrors.length > 0) && (
              <p class="field-error" id="emit-data-error" role={dataErrors.length > 0 ? "alert" : undefined}>
                {dataProblem ?? (
                  <>
                    <code>{error?.code}</code>:{" "}
                    {dataErrors.map((f) => (
                      <span key={f.field}>
                        <code>{f.field}</code> {f.description}.{" "}
                      </span>
                    ))}
                  </>
                )}
              </p>
            )}
          </div>
        </div>
        {unplaced && <ErrorNote error={error} title="The event was not emitted" />}
        <div class="buttons">
          <button type="submit" class="primary" disabled={busy || type.trim() === ""} aria-busy={busy}>
            Emit
          </button>
        </div>
      </form>
      {sent && (
        <p class="note" role="status">
          Emitted <code>{sent.type}</code> as <code>{sent.eventId}</code> at <Time ts={sent.emittedAt} />;{" "}
          {sent.recipients.length === 0 ? (
            "no plugin subscribes to it"
          ) : (
            <>
              delivered to{" "}
              {sent.recipients.map((r, i) => (
                <span key={r}>
                  {i > 0 && ", "}
                  <code>{r}</code>
                </span>
              ))}
            </>
          )}
          .
        </p>
      )}
    </section>
  );
}
