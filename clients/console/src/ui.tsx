// Building blocks shared by the pages: loading data, showing API errors, live feeds, badges,
// confirmation dialogs and notices.
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useId, useRef, useState } from "preact/hooks";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Event } from "../gen/nexus/plugin/v1/messaging_pb.js";
import { toApiError, type ApiError, type Session } from "./api.js";

/** The state of a request the page made. */
export interface Loaded<T> {
  data?: T;
  error?: ApiError;
  loading: boolean;
  /** Loads again, keeping the current data on screen meanwhile. */
  reload: () => void;
}

/**
 * Runs load when deps change, and again on reload(); an older answer never overwrites a newer
 * one, and answers that arrive after the page is gone are dropped.
 */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: ApiError; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const ctl = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    load(ctl.signal).then(
      (data) => ctl.signal.aborted || setState({ data, loading: false }),
      (err) => ctl.signal.aborted || setState((s) => ({ data: s.data, error: toApiError(err), loading: false })),
    );
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

/** An API error: its code, its message and the fields it names. Announced to screen readers. */
export function ErrorNote({ error, title }: { error?: ApiError; title?: string }) {
  if (!error || error.aborted) return null;
  return (
    <div class="error" role="alert">
      <strong>{title ?? "The server refused"}</strong>{" "}
      <code class="code">{error.code}</code>: {error.message}
      {error.fields.length > 0 && (
        <ul>
          {error.fields.map((f) => (
            <li key={f.field}>
              <code>{f.field}</code>: {f.description}
            </li>
          ))}
        </ul>
      )}
      {error.unauthenticated && <p>Your token is no longer accepted: sign out and sign in again.</p>}
    </div>
  );
}

const tones: Record<string, string> = {
  active: "good",
  healthy: "good",
  up: "good",
  loading: "info",
  degraded: "warn",
  inactive: "muted",
  disabled: "muted",
  unknown: "muted",
  error: "bad",
  unhealthy: "bad",
  down: "bad",
  pass: "good",
  warn: "warn",
  warning: "warn",
  fail: "bad",
  debug: "muted",
  info: "info",
  critical: "bad",
  enforced: "good",
  completed: "good",
  synced: "good",
  "sync failed": "bad",
  granted: "good",
  unavailable: "warn",
  off: "muted",
  requested: "info",
  denied: "bad",
};

/** The address of a web link from server data, or undefined unless it is http(s). */
export function webUrl(u: string): string | undefined {
  try {
    const url = new URL(u);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : undefined;
  } catch {
    return undefined;
  }
}

/** A status word with a colour that repeats it (the word is always there too). */
export function Badge({ value, extra }: { value: string; extra?: string }) {
  const v = value || "unknown";
  return <span class={`badge ${tones[v.toLowerCase()] ?? "muted"}${extra ? ` ${extra}` : ""}`}>{v}</span>;
}

/** A timestamp as local time, with the exact UTC time on hover and for assistive technology. */
export function Time({ ts }: { ts?: Timestamp }) {
  if (!ts || (ts.seconds === 0n && ts.nanos === 0)) return <span class="muted">—</span>;
  const d = timestampDate(ts);
  return (
    <time dateTime={d.toISOString()} title={d.toISOString()}>
      {d.toLocaleString()}
    </time>
  );
}

/**
 * A page's heading; focused after navigation so that keyboard and screen reader users land on
 * it. A reader already at work in the page (a fast Tab into the sign-in field before this
 * ran) keeps the focus.
 */
export function PageTitle({ children }: { children: ComponentChildren }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    const active = document.activeElement;
    const main = ref.current?.closest("main");
    if (!active || active === document.body || !main?.contains(active)) ref.current?.focus();
  }, []);
  return (
    <h1 tabIndex={-1} ref={ref}>
      {children}
    </h1>
  );
}

/** A button that runs an action, shows that it runs, and hands its error to onError to show. */
export function ActionButton(props: {
  run: () => Promise<unknown>;
  children: ComponentChildren;
  onError: (e: ApiError) => void;
  onDone?: () => void;
  kind?: "primary" | "danger" | "plain";
  disabled?: boolean;
  label?: string;
}) {
  const [busy, setBusy] = useState(false);
  return (
    <button
      type="button"
      class={props.kind ?? "plain"}
      aria-label={props.label}
      disabled={busy || props.disabled}
      aria-busy={busy}
      onClick={async () => {
        setBusy(true);
        try {
          await props.run();
          props.onDone?.();
        } catch (err) {
          props.onError(toApiError(err));
        } finally {
          setBusy(false);
        }
      }}
    >
      {props.children}
      {busy && <span class="spinner" aria-hidden="true" />}
    </button>
  );
}

/**
 * A modal dialog (the browser's own <dialog>: focus is kept inside, Escape closes it, and focus
 * returns to the button that opened it).
 */
export function Dialog(props: { open: boolean; title: string; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (props.open && !d.open) d.showModal();
    if (!props.open && d.open) d.close();
  }, [props.open]);
  return (
    <dialog ref={ref} aria-labelledby={titleId} onClose={props.onClose}>
      <h2 id={titleId}>{props.title}</h2>
      {props.open && props.children}
    </dialog>
  );
}

/** Closes the dialog the clicked button is in (a form's Cancel). */
export function closeDialog(e: { currentTarget: EventTarget | null }): void {
  ((e.currentTarget as Element | null)?.closest("dialog") as HTMLDialogElement | null)?.close();
}

/** Short-lived notices of what was done, announced politely. */
export const notices = {
  listeners: new Set<(text: string) => void>(),
  say(text: string) {
    for (const l of this.listeners) l(text);
  },
};

export function Notices() {
  const [items, setItems] = useState<{ id: number; text: string }[]>([]);
  useEffect(() => {
    let n = 0;
    const add = (text: string) => {
      const id = ++n;
      setItems((xs) => [...xs.slice(-3), { id, text }]);
      setTimeout(() => setItems((xs) => xs.filter((x) => x.id !== id)), 6000);
    };
    notices.listeners.add(add);
    return () => notices.listeners.delete(add);
  }, []);
  return (
    <div class="notices" role="status" aria-live="polite">
      {items.map((i) => (
        <p key={i.id}>{i.text}</p>
      ))}
    </div>
  );
}

/**
 * Returns a function that runs fn once calls to it have paused for ms: a burst of events (a
 * restart is several) loads the page once. Nothing runs after the page is gone.
 */
export function useSettled(fn: () => void, ms = 250): () => void {
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const latest = useRef(fn);
  latest.current = fn;
  useEffect(() => () => clearTimeout(timer.current), []);
  return useCallback(() => {
    clearTimeout(timer.current);
    timer.current = setTimeout(() => latest.current(), ms);
  }, [ms]);
}

/** The state of a live feed. */
export type FeedState = "connecting" | "live" | "retrying" | "stopped";

/** A live feed as a page sees it. */
export interface Feed {
  state: FeedState;
  /** Why the feed is not live (shown by FeedStatus). */
  error?: ApiError;
}

interface FeedSubscriber {
  onEvent: (e: Event) => void;
  onConnect: () => void;
  onState: (f: Feed) => void;
}

/** One WatchEvents stream, shared by every part of the page that follows the same patterns. */
interface SharedFeed {
  subscribers: Set<FeedSubscriber>;
  feed: Feed;
  stop: () => void;
}

// The open feeds of each session, by patterns. A browser gives a page six connections to
// the server over HTTP/1.1 (make run's plain http), and each stream holds one for good: the
// plugin page, its health tab and the catalog's install dialog share one instead of three.
const openFeeds = new WeakMap<Session, Map<string, SharedFeed>>();

function subscribeFeed(session: Session, patterns: string[], sub: FeedSubscriber): () => void {
  const key = patterns.join(",");
  let feeds = openFeeds.get(session);
  if (!feeds) openFeeds.set(session, (feeds = new Map()));
  let shared = feeds.get(key);
  if (!shared) {
    const created: SharedFeed = { subscribers: new Set(), feed: { state: "connecting" }, stop: () => {} };
    created.stop = runFeed(session, patterns, created);
    feeds.set(key, (shared = created));
  }
  shared.subscribers.add(sub);
  sub.onState(shared.feed);
  const current = shared;
  return () => {
    current.subscribers.delete(sub);
    if (current.subscribers.size === 0) {
      current.stop();
      if (feeds.get(key) === current) feeds.delete(key);
    }
  };
}

/** Runs the stream of a shared feed until stopped, reconnecting with backoff. */
function runFeed(session: Session, patterns: string[], shared: SharedFeed): () => void {
  const ctl = new AbortController();
  const set = (feed: Feed) => {
    shared.feed = feed;
    for (const s of shared.subscribers) s.onState(feed);
  };
  (async () => {
    let delay = 500;
    // Whether events may have been missed since the subscribers loaded what they show: after
    // a broken stream, or a first attempt that failed.
    let gap = false;
    while (!ctl.signal.aborted) {
      try {
        set({ ...shared.feed, state: "connecting" });
        const stream = session.api.messaging.watchEvents(
          { patterns },
          {
            signal: ctl.signal,
            // The server sends its headers once the subscription holds.
            onHeader: () => {
              set({ state: "live" });
              delay = 500;
              if (gap) for (const s of shared.subscribers) s.onConnect();
              gap = false;
            },
          },
        );
        for await (const res of stream) {
          if (res.event) for (const s of shared.subscribers) s.onEvent(res.event);
        }
      } catch (err) {
        if (ctl.signal.aborted) return;
        const e = toApiError(err);
        // A refusal (a bad pattern, a lost token) does not get better by retrying.
        if (e.unauthenticated || e.code === "VALIDATION_ERROR" || e.code === "PLUGIN_PERMISSION_DENIED") {
          set({ state: "stopped", error: e });
          return;
        }
        set({ state: "retrying", error: e });
      }
      gap = true;
      if (ctl.signal.aborted) return;
      if (shared.feed.state === "live") set({ state: "retrying" });
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10_000);
    }
  })();
  return () => ctl.abort();
}

/**
 * Follows the server's event feed (WatchEvents, a server stream: no polling) for the
 * patterns, calling onEvent for each event; the stream reconnects with backoff when it
 * breaks. onConnect runs when the feed is subscribed again after a gap: events of the gap
 * are not replayed, so a page reloads what it shows there. Parts of the page that follow the
 * same patterns share one stream.
 */
export function useEventFeed(session: Session, patterns: string[], onEvent: (e: Event) => void, onConnect?: () => void): Feed {
  const [feed, setFeed] = useState<Feed>({ state: "connecting" });
  const handlers = useRef({ onEvent, onConnect });
  handlers.current = { onEvent, onConnect };
  const key = patterns.join(",");
  useEffect(
    () =>
      subscribeFeed(session, patterns, {
        onEvent: (e) => handlers.current.onEvent(e),
        onConnect: () => handlers.current.onConnect?.(),
        onState: setFeed,
      }),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [session, key],
  );
  return feed;
}

/** The feed's state in words, announced when it changes, and why it is not live. */
export function FeedStatus({ feed, label }: { feed: Feed; label: string }) {
  const text = { live: "live", connecting: "connecting…", retrying: "reconnecting…", stopped: "stopped" }[feed.state];
  return (
    <>
      <span class={`feed ${feed.state}`} role="status">
        <span class="dot" aria-hidden="true" /> {label}: {text}
      </span>
      {feed.state !== "live" && <ErrorNote error={feed.error} title={`${label}: the feed failed`} />}
    </>
  );
}
