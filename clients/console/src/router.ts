// A small router on the History API: every page has a URL under /ui/ that can be bookmarked
// and reloaded (the server answers index.html for each), and Back and Forward work.
import { useEffect, useState } from "preact/hooks";

export const BASE = "/ui/";

/** The current location inside the console: the path after /ui/ and the query. */
export interface Route {
  /** Path segments after /ui/, decoded: [] for the plugin list, ["plugins", "x"], ... */
  parts: string[];
  query: URLSearchParams;
}

function current(): Route {
  const rest = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : "";
  const parts = rest
    .split("/")
    .filter((p) => p !== "")
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p; // a malformed escape: left as it is, it names no page ("Not found")
      }
    });
  return { parts, query: new URLSearchParams(location.search) };
}

const listeners = new Set<() => void>();

/** Goes to a console path such as "plugins/analytics-plugin/config" (no leading /ui/). */
export function navigate(to: string, opts: { replace?: boolean } = {}): void {
  const url = href(to);
  if (url === location.pathname + location.search) return;
  if (opts.replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  for (const l of listeners) l();
}

/** The URL of a console path. */
export function href(to: string): string {
  return BASE + to.replace(/^\/+/, "");
}

/** Replaces the query of the current page (filters), keeping history tidy. */
export function setQuery(values: Record<string, string | undefined>): void {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(values)) {
    if (v === undefined || v === "") q.delete(k);
    else q.set(k, v);
  }
  const s = q.toString();
  history.replaceState(null, "", location.pathname + (s ? `?${s}` : ""));
  for (const l of listeners) l();
}

/** The current route, re-rendering on navigation. */
export function useRoute(): Route {
  const [route, setRoute] = useState(current);
  useEffect(() => {
    const update = () => setRoute(current());
    listeners.add(update);
    addEventListener("popstate", update);
    return () => {
      listeners.delete(update);
      removeEventListener("popstate", update);
    };
  }, []);
  return route;
}

/**
 * Follows clicks on same-origin links under /ui/ without reloading the page. Clicks with a
 * modifier key, or on links with a target, are left to the browser (new tab, download).
 */
export function interceptLinks(root: HTMLElement): () => void {
  const onClick = (e: MouseEvent) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = (e.target as Element | null)?.closest?.("a");
    if (!a || a.target || a.hasAttribute("download") || a.origin !== location.origin) return;
    if (!a.pathname.startsWith(BASE)) return;
    // A link within the page (#section) is the browser's to follow.
    if (a.hash && a.pathname === location.pathname && a.search === location.search) return;
    e.preventDefault();
    navigate(a.pathname.slice(BASE.length) + a.search);
  };
  root.addEventListener("click", onClick);
  return () => root.removeEventListener("click", onClick);
}
