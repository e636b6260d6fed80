// Building blocks shared by the pages: loading data, showing API errors, live feeds, badges,
// confirmation dialogs and notices.
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
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
  granted: "good",
  unavailable: "warn",
  off: "muted",
  requested: "info",
  denied: "bad",
};

/** A status word with a colour that repeats it (the word is always there too). */
export function Badge({ value }: { value: string }) {
  const v = value || "unknown";
  return <span class={`badge ${tones[v.toLowerCase()] ?? "muted"}`}>{v}</span>;
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

/** A page's heading; focused after navigation so that keyboard and screen reader users land on it. */
export function PageTitle({ children }: { children: ComponentChildren }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    ref.current?.focus();
  }, []);
  return (
    <h1 tabIndex={-1} ref={ref}>
      {children}
    </h1>
  );
}

/** A button that runs an action, shows that it runs, and reports its error. */
export function ActionButton(props: {
  run: () => Promise<unknown>;
  children: ComponentChildren;
  onError?: (e: ApiError) => void;
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
          props.onError?.(toApiError(err));
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
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (props.open && !d.open) d.showModal();
    if (!props.open && d.open) d.close();
  }, [props.open]);
  return (
    <dialog ref={ref} aria-labelledby="dialog-title" onClose={props.onClose}>
      <h2 id="dialog-title">{props.title}</h2>
      {props.open && props.children}
    </dialog>
  );
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

/** The state of a live feed. */
export type FeedState = "connecting" | "live" | "retrying" | "stopped";

/**
 * Follows the server's event feed (WatchEvents, a server stream: no polling) for the
 * patterns, calling onEvent for each event, and reconnects with backoff when the stream
 * breaks. onConnect runs each time the feed is (again) subscribed: events of a gap are not
 * replayed, so a page reloads what it shows there. Returns the feed's state and last error.
 */
export function useEventFeed(
  session: Session,
  patterns: string[],
  onEvent: (e: Event) => void,
  onConnect?: () => void,
): { state: FeedState; error?: ApiError } {
  const [state, setState] = useState<FeedState>("connecting");
  const [error, setError] = useState<ApiError>();
  const handlers = useRef({ onEvent, onConnect });
  handlers.current = { onEvent, onConnect };
  const key = patterns.join(",");
  useEffect(() => {
    const ctl = new AbortController();
    let delay = 500;
    let connects = 0;
    (async () => {
      while (!ctl.signal.aborted) {
        try {
          setState("connecting");
          const stream = session.api.messaging.watchEvents(
            { patterns },
            {
              signal: ctl.signal,
              // The server sends its headers once the subscription holds.
              onHeader: () => {
                setState("live");
                setError(undefined);
                delay = 500;
                if (connects++ > 0) handlers.current.onConnect?.();
              },
            },
          );
          for await (const res of stream) {
            if (res.event) handlers.current.onEvent(res.event);
          }
        } catch (err) {
          if (ctl.signal.aborted) return;
          const e = toApiError(err);
          setError(e);
          // A refusal (a bad pattern, a lost token) does not get better by retrying.
          if (e.unauthenticated || e.code === "VALIDATION_ERROR" || e.code === "PLUGIN_PERMISSION_DENIED") {
            setState("stopped");
            return;
          }
        }
        if (ctl.signal.aborted) return;
        setState("retrying");
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10_000);
      }
    })();
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [session, key]);
  return { state, error };
}

/** The feed's state in words, announced when it changes. */
export function FeedStatus({ state, label }: { state: FeedState; label: string }) {
  const text = { live: "live", connecting: "connecting…", retrying: "reconnecting…", stopped: "stopped" }[state];
  return (
    <span class={`feed ${state}`} role="status">
      <span class="dot" aria-hidden="true" /> {label}: {text}
    </span>
  );
}
