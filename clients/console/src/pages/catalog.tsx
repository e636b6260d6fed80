// The catalog: searching the plugin repositories with every filter the API has, installing a
// plugin from them while its live events show how far the install got, and the repositories
// themselves with their sync state.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { JsonObject } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { CatalogPlugin, Repository } from "../../gen/nexus/plugin/v1/repository_pb.js";
import type { InstallPluginResponse, PluginSummary } from "../../gen/nexus/plugin/v1/plugin_pb.js";
import type { Event } from "../../gen/nexus/plugin/v1/messaging_pb.js";
import { fieldProblems, toApiError, type ApiError, type Session } from "../api.js";
import { href, setQuery, type Route } from "../router.js";
import {
  ActionButton,
  Badge,
  Dialog,
  ErrorNote,
  FeedStatus,
  PageTitle,
  Time,
  notices,
  useEventFeed,
  useLoad,
  useSettled,
  closeDialog,
  webUrl,
} from "../ui.js";
import "./catalog.css";

const sorts: { value: string; label: string }[] = [
  { value: "name", label: "Name" },
  { value: "rating", label: "Highest rating" },
  { value: "downloads", label: "Most downloads" },
  { value: "updated", label: "Recently updated" },
];
const pageSizes = [10, 20, 50, 100];
const DEFAULT_PER_PAGE = 20;

/** The search as the URL keeps it (the query string is the source of truth for the filters). */
interface Filters {
  query: string;
  category: string;
  author: string;
  tags: string[];
  /** As typed: checked before it is sent, so that a URL edited by hand cannot send NaN. */
  minRating: string;
  sort: string;
  page: number;
  perPage: number;
}

function readFilters(q: URLSearchParams): Filters {
  const int = (v: string | null, dflt: number) => {
    const n = Number(v);
    return v !== null && Number.isInteger(n) && n > 0 ? n : dflt;
  };
  return {
    query: q.get("q") ?? "",
    category: q.get("category") ?? "",
    author: q.get("author") ?? "",
    tags: splitTags(q.get("tags") ?? ""),
    minRating: q.get("min_rating") ?? "",
    sort: q.get("sort") ?? "",
    page: int(q.get("page"), 1),
    perPage: int(q.get("per_page"), DEFAULT_PER_PAGE),
  };
}

function splitTags(text: string): string[] {
  return text
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t !== "");
}

/** Checks the minimum rating the way the API does (0 to 5), so a bad value is named before a call. */
function ratingProblem(text: string): string | undefined {
  if (text.trim() === "") return undefined;
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || n > 5) return "The minimum rating is a number from 0 to 5.";
  return undefined;
}

/** The problems an API error reports for a request field, including its items (`tags[0]`) and parts (`config.x`). */

/** Orders two versions by their numeric parts (1.10.0 after 1.9.0); negative when a is older. */
function compareVersions(a: string, b: string): number {
  const parts = (v: string) => v.replace(/^v/, "").split(/[-+]/)[0]!.split(".").map((x) => Number.parseInt(x, 10) || 0);
  const pa = parts(a);
  const pb = parts(b);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** A catalog's link, only when it is a web address: a repository could offer `javascript:` URLs. */

// The plugin events that change which plugins are installed, and at which version.
const lifecycle = new Set(["plugin.installed", "plugin.uninstalled", "plugin.updated", "plugin.enabled", "plugin.disabled"]);

export function CatalogPage({ session, route }: { session: Session; route: Route }) {
  const filters = readFilters(route.query);
  const badRating = ratingProblem(filters.minRating);
  const canSearch = session.can("SearchPlugins");
  const search = useLoad(
    async (signal) => {
      if (!canSearch || badRating) return undefined;
      return session.api.repos.searchPlugins(
        {
          query: filters.query,
          category: filters.category,
          author: filters.author,
          tags: filters.tags,
          minRating: filters.minRating === "" ? 0 : Number(filters.minRating),
          sort: filters.sort,
          page: filters.page,
          perPage: filters.perPage,
        },
        { signal },
      );
    },
    [route.query.toString()],
  );
  // The whole catalog once, for the category, author and tag suggestions of the filters (the API
  // has no list of them; 1000 is the largest page it serves).
  const everything = useLoad(
    async (signal) => (canSearch ? session.api.repos.searchPlugins({ perPage: 1000 }, { signal }) : undefined),
    [],
  );
  const installed = useLoad(
    async (signal) => (session.can("ListPlugins") ? session.api.plugins.listPlugins({}, { signal }) : undefined),
    [],
  );
  const installedById = useMemo(() => new Map((installed.data?.plugins ?? []).map((p) => [p.id, p])), [installed.data]);

  // Installs, updates and uninstalls (here or anywhere else) change the "installed" marks: the
  // list is loaded again, at most a few times a second, and after a reconnection.
  const soon = useSettled(installed.reload);
  const feed = useEventFeed(session, ["plugin.*"], (e) => lifecycle.has(e.type) && soon(), soon);

  const [installing, setInstalling] = useState<CatalogPlugin>();
  // The dialog can be closed while an install runs; its answer is then given on the page.
  const openFor = useRef<string | undefined>(undefined);
  openFor.current = installing?.id;
  const [lateError, setLateError] = useState<{ id: string; error: ApiError }>();
  const onInstalled = (res: InstallPluginResponse) => {
    installed.reload();
    const i = res.installation;
    notices.say(`${i?.pluginId ?? "The plugin"} ${i?.version ?? ""} installed`);
  };
  const onFailed = (id: string) => (error: ApiError) => {
    installed.reload();
    if (openFor.current !== id) setLateError({ id, error });
  };

  // The results wait for the installed plugins as well (when the token may list them), so
  // that a card's Install does not turn into Reinstall under the reader's eyes or focus.
  const res = session.can("ListPlugins") && installed.data === undefined && !installed.error ? undefined : search.data;
  const pg = res?.pagination;
  const pages = pg ? Math.max(1, Math.ceil(pg.total / Math.max(1, pg.perPage))) : 1;
  return (
    <section class="catalog">
      <div class="title-row">
        <PageTitle>Catalog</PageTitle>
        <FeedStatus feed={feed} label="Updates" />
      </div>
      <p class="muted">
        Plugins offered by the server's repositories.{" "}
        <a
          href="#repositories"
          onClick={(e) => {
            // An in-page link: the console's link handler would treat it as navigation.
            e.preventDefault();
            const h = document.getElementById("repositories");
            h?.scrollIntoView();
            h?.focus();
          }}
        >
          Repositories and their sync state
        </a>
      </p>
      {lateError && <ErrorNote error={lateError.error} title={`Installing ${lateError.id} failed`} />}
      {canSearch ? (
        <>
          <SearchForm
            filters={filters}
            everything={everything.data?.plugins ?? []}
            error={search.error}
            badRating={badRating}
          />
          <ErrorNote error={search.error} title="The search failed" />
          <ErrorNote error={installed.error} title="Could not list the installed plugins" />
          {res && pg && (
            <p role="status" class="result-count">
              {pg.total === 0
                ? "No plugins match."
                : `${pg.total} ${pg.total === 1 ? "plugin matches" : "plugins match"}; page ${pg.page} of ${pages}.`}
              {search.loading && <span class="spinner" aria-hidden="true" />}
            </p>
          )}
          {res && res.plugins.length === 0 && pg && pg.total > 0 && (
            <p class="empty">
              Page {pg.page} is past the last page.{" "}
              <button type="button" onClick={() => setQuery({ page: undefined })}>
                Go to page 1
              </button>
            </p>
          )}
          {res && res.plugins.length > 0 && (
            <h2 class="visually-hidden">Results</h2>
          )}
          {res && res.plugins.length > 0 && (
            <ul class="catalog-results" aria-label="Search results">
              {res.plugins.map((p) => (
                <PluginCard
                  key={`${p.repository}/${p.id}`}
                  session={session}
                  plugin={p}
                  installed={installedById.get(p.id)}
                  onInstall={() => {
                    setLateError(undefined);
                    setInstalling(p);
                  }}
                  onTag={(t) =>
                    setQuery({
                      tags: [...new Set([...filters.tags, t])].join(","),
                      page: undefined,
                    })
                  }
                />
              ))}
            </ul>
          )}
          {pg && (pg.page > 1 || pg.hasNext) && <Pager page={pg.page} pages={pages} hasNext={pg.hasNext} />}
        </>
      ) : (
        <p class="note">This token may not search the catalog.</p>
      )}
      <Dialog
        open={installing !== undefined}
        title={installing ? `Install ${installing.name || installing.id}` : "Install"}
        onClose={() => setInstalling(undefined)}
      >
        {installing && (
          <InstallPanel
            key={installing.id}
            session={session}
            plugin={installing}
            installed={installedById.get(installing.id)}
            onInstalled={onInstalled}
            onFailed={onFailed(installing.id)}
          />
        )}
      </Dialog>
      {session.can("ListRepositories") && (
        <Repositories
          session={session}
          onSynced={() => {
            search.reload();
            everything.reload();
          }}
        />
      )}
    </section>
  );
}

/**
 * The filters. Text fields are drafts while they are typed in (a re-render of the page, say for
 * an event, must not undo typing) and go to the URL when they are committed: the search text
 * after a short pause, the others when the field is left or Enter is pressed.
 */
function SearchForm(props: { filters: Filters; everything: CatalogPlugin[]; error?: ApiError; badRating?: string }) {
  const f = props.filters;
  const [query, setQueryText] = useState(f.query);
  const [author, setAuthor] = useState(f.author);
  const [tags, setTags] = useState(f.tags.join(", "));
  const [rating, setRating] = useState(f.minRating);
  const tagKey = f.tags.join(",");
  useEffect(() => setQueryText(f.query), [f.query]);
  useEffect(() => setAuthor(f.author), [f.author]);
  useEffect(() => setTags(f.tags.join(", ")), [tagKey]);
  useEffect(() => setRating(f.minRating), [f.minRating]);
  const typing = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  useEffect(() => () => clearTimeout(typing.current), []);

  // Any change of the filters starts again at page 1.
  const commit = (values: Record<string, string | undefined>) => setQuery({ ...values, page: undefined });
  const commitAll = () => {
    clearTimeout(typing.current);
    commit({ q: query.trim(), author: author.trim(), tags: splitTags(tags).join(","), min_rating: rating.trim() });
  };

  const options = useMemo(() => {
    const cats = new Set<string>();
    const authors = new Set<string>();
    const tagSet = new Set<string>();
    for (const p of props.everything) {
      if (p.category) cats.add(p.category);
      if (p.author) authors.add(p.author);
      for (const t of p.tags) tagSet.add(t);
    }
    if (f.category) cats.add(f.category);
    const sorted = (s: Set<string>) => [...s].sort((a, b) => a.localeCompare(b));
    return { cats: sorted(cats), authors: sorted(authors), tags: sorted(tagSet) };
  }, [props.everything, f.category]);

  // A field the server refused is marked, and its reason is shown under it.
  const field = (name: string, id: string, local?: string) => {
    const probs = fieldProblems(props.error, name);
    const text = local ?? (probs.length > 0 ? probs.map((p) => p.description).join("; ") : undefined);
    return {
      invalid: text ? true : undefined,
      describedBy: text ? `${id}-error` : `${id}-hint`,
      note: text ? (
        <p class="field-error" id={`${id}-error`}>
          {local ? text : <>{props.error?.code}: {text}</>}
        </p>
      ) : undefined,
    };
  };
  const qf = field("query", "c-q");
  const cf = field("category", "c-category");
  const af = field("author", "c-author");
  const tf = field("tags", "c-tags");
  const rf = field("min_rating", "c-rating", props.badRating);
  const sf = field("sort", "c-sort");
  const pf = field("per_page", "c-per-page");
  const anyFilter = f.query || f.category || f.author || f.tags.length > 0 || f.minRating || f.sort || f.perPage !== DEFAULT_PER_PAGE;
  return (
    <form
      class="filters catalog-filters"
      role="search"
      // The fields' problems are shown under them, in the page's words, not in the browser's bubbles.
      noValidate
      aria-label="Search the catalog"
      onSubmit={(e) => {
        e.preventDefault();
        commitAll();
      }}
    >
      <div class="wide">
        <label for="c-q">Search</label>
        <input
          id="c-q"
          type="search"
          value={query}
          maxLength={256}
          aria-invalid={qf.invalid}
          aria-describedby={qf.describedBy}
          onInput={(e) => {
            const v = e.currentTarget.value;
            setQueryText(v);
            clearTimeout(typing.current);
            typing.current = setTimeout(() => commit({ q: v.trim() }), 300);
          }}
        />
        <p class="hint" id="c-q-hint">
          In ids, names, descriptions and tags
        </p>
        {qf.note}
      </div>
      <div class="wide">
        <label for="c-tags">Tags</label>
        <input
          id="c-tags"
          value={tags}
          aria-invalid={tf.invalid}
          aria-describedby={tf.describedBy}
          onInput={(e) => setTags(e.currentTarget.value)}
          onChange={(e) => commit({ tags: splitTags(e.currentTarget.value).join(",") })}
        />
        <p class="hint" id="c-tags-hint">
          Comma-separated; all must match.
          {options.tags.length > 0 && <> Known: {options.tags.join(", ")}.</>}
        </p>
        {tf.note}
      </div>
      <div>
        <label for="c-category">Category</label>
        <select
          id="c-category"
          value={f.category}
          aria-invalid={cf.invalid}
          aria-describedby={cf.invalid ? cf.describedBy : undefined}
          onChange={(e) => commit({ category: e.currentTarget.value })}
        >
          <option value="">any</option>
          {options.cats.map((c) => (
            <option key={c} value={c}>
              {c}
            </option>
          ))}
        </select>
        {cf.note}
      </div>
      <div>
        <label for="c-author">Author</label>
        <input
          id="c-author"
          list="c-authors"
          value={author}
          maxLength={256}
          aria-invalid={af.invalid}
          aria-describedby={af.describedBy}
          onInput={(e) => setAuthor(e.currentTarget.value)}
          onChange={(e) => commit({ author: e.currentTarget.value.trim() })}
        />
        <datalist id="c-authors">
          {options.authors.map((a) => (
            <option key={a} value={a} />
          ))}
        </datalist>
        <p class="hint" id="c-author-hint">
          Part of the name
        </p>
        {af.note}
      </div>
      <div>
        <label for="c-rating">Minimum rating</label>
        <input
          id="c-rating"
          type="number"
          inputMode="decimal"
          min={0}
          max={5}
          step={0.1}
          value={rating}
          aria-invalid={rf.invalid}
          aria-describedby={rf.describedBy}
          onInput={(e) => setRating(e.currentTarget.value)}
          onChange={(e) => commit({ min_rating: e.currentTarget.value.trim() })}
        />
        <p class="hint" id="c-rating-hint">
          0 to 5
        </p>
        {rf.note}
      </div>
      <div>
        <label for="c-sort">Sort by</label>
        <select
          id="c-sort"
          value={f.sort || "name"}
          aria-invalid={sf.invalid}
          aria-describedby={sf.invalid ? sf.describedBy : undefined}
          onChange={(e) => commit({ sort: e.currentTarget.value === "name" ? undefined : e.currentTarget.value })}
        >
          {sorts.map((s) => (
            <option key={s.value} value={s.value}>
              {s.label}
            </option>
          ))}
          {f.sort && !sorts.some((s) => s.value === f.sort) && <option value={f.sort}>{f.sort}</option>}
        </select>
        {sf.note}
      </div>
      <div>
        <label for="c-per-page">Per page</label>
        <select
          id="c-per-page"
          value={String(f.perPage)}
          aria-invalid={pf.invalid}
          aria-describedby={pf.invalid ? pf.describedBy : undefined}
          onChange={(e) =>
            commit({ per_page: e.currentTarget.value === String(DEFAULT_PER_PAGE) ? undefined : e.currentTarget.value })
          }
        >
          {[...new Set([...pageSizes, f.perPage])]
            .sort((a, b) => a - b)
            .map((n) => (
              <option key={n} value={String(n)}>
                {n}
              </option>
            ))}
        </select>
        {pf.note}
      </div>
      <div class="buttons">
        <button type="submit" class="primary">
          Search
        </button>
        {anyFilter && (
          <button
            type="button"
            onClick={() => {
              clearTimeout(typing.current);
              setQuery({ q: undefined, category: undefined, author: undefined, tags: undefined, min_rating: undefined, sort: undefined, page: undefined, per_page: undefined });
            }}
          >
            Clear filters
          </button>
        )}
      </div>
    </form>
  );
}

function Pager({ page, pages, hasNext }: { page: number; pages: number; hasNext: boolean }) {
  const go = (n: number) => setQuery({ page: n <= 1 ? undefined : String(n) });
  return (
    <nav class="pager" aria-label="Result pages">
      <button type="button" disabled={page <= 1} onClick={() => go(1)}>
        First
      </button>
      <button type="button" disabled={page <= 1} onClick={() => go(page - 1)}>
        Previous
      </button>
      <span>
        Page {page} of {pages}
      </span>
      <button type="button" disabled={!hasNext} onClick={() => go(page + 1)}>
        Next
      </button>
      <button type="button" disabled={!hasNext} onClick={() => go(pages)}>
        Last
      </button>
    </nav>
  );
}

function PluginCard(props: {
  session: Session;
  plugin: CatalogPlugin;
  installed?: PluginSummary;
  onInstall: () => void;
  onTag: (tag: string) => void;
}) {
  const { session, plugin: p, installed } = props;
  const label = p.name || p.id;
  const page = href(`plugins/${encodeURIComponent(p.id)}`);
  const newer = installed !== undefined && compareVersions(p.version, installed.version) > 0;
  const repoUrl = webUrl(p.repositoryUrl);
  const docUrl = webUrl(p.documentationUrl);
  const headingId = `card-${p.repository}-${p.id}`;
  const compat = [
    p.compatibility?.nexusVersion ? `Nexus ${p.compatibility.nexusVersion}` : "",
    p.compatibility?.pythonVersion ? `Python ${p.compatibility.pythonVersion}` : "",
  ].filter((x) => x !== "");
  return (
    <li>
      <article class="card" aria-labelledby={headingId}>
        <div class="card-head">
          <h3 id={headingId}>{installed ? <a href={page}>{label}</a> : label}</h3>
          <span class="version">{p.version}</span>
        </div>
        <p class="sub">
          <code>{p.id}</code>
        </p>
        {installed && (
          <p class="installed">
            <span class="badge good">installed {installed.version}</span>
            {newer && <span class="badge info">{p.version} available</span>}
            {!installed.enabled && <span class="badge muted">disabled</span>}
          </p>
        )}
        <p class="desc">{p.description || <span class="muted">No description.</span>}</p>
        <dl class="facts card-facts">
          <dt>Author</dt>
          <dd>{p.author || "—"}</dd>
          <dt>Category</dt>
          <dd>{p.category || "—"}</dd>
          <dt>Tags</dt>
          <dd>
            {p.tags.length === 0
              ? "—"
              : p.tags.map((t) => (
                  <button
                    type="button"
                    class="chip tag"
                    key={t}
                    aria-label={`Filter by tag ${t}`}
                    onClick={() => props.onTag(t)}
                  >
                    {t}
                  </button>
                ))}
          </dd>
          <dt>Rating</dt>
          <dd>
            <span class="stars" aria-hidden="true">
              {"★".repeat(Math.round(p.rating))}
              {"☆".repeat(Math.max(0, 5 - Math.round(p.rating)))}
            </span>{" "}
            {p.rating.toFixed(1)} of 5
          </dd>
          <dt>Downloads</dt>
          <dd>{p.downloads.toLocaleString()}</dd>
          <dt>Last updated</dt>
          <dd>
            <Time ts={p.lastUpdated} />
          </dd>
          <dt>Compatibility</dt>
          <dd>{compat.length > 0 ? compat.join(", ") : "—"}</dd>
          <dt>Repository</dt>
          <dd>
            {p.repository || "—"}
            {repoUrl && (
              <>
                {" · "}
                <a href={repoUrl} rel="noopener noreferrer">
                  source<span class="visually-hidden"> of {label}</span>
                </a>
              </>
            )}
            {!repoUrl && p.repositoryUrl && <span class="sub"> · {p.repositoryUrl}</span>}
          </dd>
          <dt>Documentation</dt>
          <dd>
            {docUrl ? (
              <a href={docUrl} rel="noopener noreferrer">
                Documentation<span class="visually-hidden"> of {label}</span>
              </a>
            ) : (
              p.documentationUrl || "—"
            )}
          </dd>
        </dl>
        <div class="buttons card-actions">
          {!installed && session.can("InstallPlugin") && (
            <button type="button" class="primary" aria-label={`Install ${label}`} onClick={props.onInstall}>
              Install…
            </button>
          )}
          {installed && newer && session.can("UpdatePlugin") && (
            <a class="button-link" href={page}>
              Update<span class="visually-hidden"> {label}</span> to {p.version}
            </a>
          )}
          {installed && !newer && (
            <a href={page}>
              Open<span class="visually-hidden"> {label}</span> (installed)
            </a>
          )}
          {installed && newer && !session.can("UpdatePlugin") && (
            <a href={page}>
              Open<span class="visually-hidden"> {label}</span> (installed)
            </a>
          )}
          {installed && session.can("InstallPlugin") && (
            <button type="button" aria-label={`Reinstall ${label}`} onClick={props.onInstall}>
              Reinstall…
            </button>
          )}
        </div>
      </article>
    </li>
  );
}

// The events that tell how an install goes.
const installSteps = new Set(["plugin.installed", "plugin.enabled", "plugin.error"]);

function clock(ts?: Timestamp | Date) {
  const d = ts instanceof Date ? ts : ts ? timestampDate(ts) : undefined;
  if (!d) return null;
  return (
    <time dateTime={d.toISOString()} title={d.toISOString()}>
      {d.toLocaleTimeString()}
    </time>
  );
}

function describe(e: Event): string {
  const d = e.data ?? {};
  const str = (k: string) => (typeof d[k] === "string" || typeof d[k] === "number" ? String(d[k]) : "");
  switch (e.type) {
    case "plugin.installed":
      return `Package ${str("version")} installed${str("source") ? ` (from ${str("source")})` : ""}`;
    case "plugin.enabled":
      return `Plugin enabled and started${str("version") ? ` (${str("version")})` : ""}`;
    case "plugin.error":
      return `Plugin error: ${str("reason") || "no reason given"}`;
    default:
      return e.type;
  }
}

/**
 * The install form and its progress. InstallPlugin is a single call with no progress of its
 * own, so the page shows what it knows for certain: that the call runs (an indeterminate bar and
 * the time so far), the plugin's events as the server publishes them, and then the answer.
 */
function InstallPanel(props: {
  session: Session;
  plugin: CatalogPlugin;
  installed?: PluginSummary;
  onInstalled: (res: InstallPluginResponse) => void;
  onFailed: (e: ApiError) => void;
}) {
  const { session, plugin } = props;
  const id = plugin.id;
  const [version, setVersion] = useState("");
  const [autoEnable, setAutoEnable] = useState(true);
  const [force, setForce] = useState(props.installed !== undefined);
  const [configText, setConfigText] = useState("");
  const [configProblem, setConfigProblem] = useState<string>();
  const [phase, setPhase] = useState<"form" | "running" | "done">("form");
  const [startedAt, setStartedAt] = useState<Date>();
  // What was asked, in words, as it was sent (the fields can change after a failure).
  const [asked, setAsked] = useState("");
  const [now, setNow] = useState(() => Date.now());
  const [events, setEvents] = useState<Event[]>([]);
  const [result, setResult] = useState<InstallPluginResponse>();
  const [error, setError] = useState<ApiError>();
  const watching = useRef(false);
  const configRef = useRef<HTMLTextAreaElement>(null);
  const versionRef = useRef<HTMLInputElement>(null);
  // The field to focus once the form is usable again (it is disabled while the call runs).
  const focusAfter = useRef<{ current: HTMLElement | null }>(undefined);
  useEffect(() => {
    if (phase !== "form" || !focusAfter.current) return;
    focusAfter.current.current?.focus();
    focusAfter.current = undefined;
  }, [phase, error]);
  // The form (and the button that had focus) goes away with the answer: focus moves to it.
  const resultRef = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (phase === "done") resultRef.current?.focus();
  }, [phase]);

  // This plugin's install events, from the moment Install is pressed (the page's feed, which
  // this shares, is already subscribed by then, so none are missed while it is live).
  const feed = useEventFeed(session, ["plugin.*"], (e) => {
    if (watching.current && installSteps.has(e.type) && e.data?.["plugin_id"] === id) setEvents((xs) => [...xs, e]);
  });

  // A clock for the elapsed time on screen while the call runs (it asks the server nothing).
  useEffect(() => {
    if (phase !== "running") return;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [phase]);

  // The server names a configuration's bad values by their own keys (`batch_size`) with
  // PLUGIN_CONFIGURATION_ERROR, or as `config.x` in a validation error: both point at the
  // configuration field. The error itself is shown once, above the buttons, and the fields it
  // is about are marked and point to it.
  const configBad = error?.code === "PLUGIN_CONFIGURATION_ERROR" || fieldProblems(error, "config").length > 0;
  const versionBad = fieldProblems(error, "version").length > 0;
  const submit = async () => {
    let config: JsonObject | undefined;
    setConfigProblem(undefined);
    if (configText.trim() !== "") {
      let parsed: unknown;
      try {
        parsed = JSON.parse(configText);
      } catch (err) {
        setConfigProblem(`This is not valid JSON: ${(err as Error).message}`);
        configRef.current?.focus();
        return;
      }
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
        setConfigProblem('The configuration must be a JSON object, such as {"batch_size": 200}.');
        configRef.current?.focus();
        return;
      }
      config = parsed as JsonObject;
    }
    watching.current = true;
    setEvents([]);
    setError(undefined);
    setResult(undefined);
    const start = new Date();
    setAsked(
      `${version.trim() || "latest"}${autoEnable ? ", then enable it" : ""}${force ? ", replacing an installed copy" : ""}`,
    );
    setStartedAt(start);
    setNow(start.getTime());
    setPhase("running");
    try {
      const res = await session.api.plugins.installPlugin({
        source: "repository",
        pluginName: id,
        version: version.trim(),
        config,
        autoEnable,
        forceReinstall: force,
      });
      setResult(res);
      setNow(Date.now());
      setPhase("done");
      // The page learns of it even when the dialog was closed while the call ran.
      props.onInstalled(res);
    } catch (err) {
      const e = toApiError(err);
      setNow(Date.now());
      setError(e);
      setPhase("form");
      props.onFailed(e);
      if (e.code === "PLUGIN_CONFIGURATION_ERROR" || fieldProblems(e, "config").length > 0) focusAfter.current = configRef;
      else if (fieldProblems(e, "version").length > 0) focusAfter.current = versionRef;
    }
  };

  const running = phase === "running";
  const elapsed = startedAt ? Math.max(0, Math.floor((now - startedAt.getTime()) / 1000)) : 0;
  const inst = result?.installation;
  const brief = result?.plugin;
  return (
    <div class="install">
      <p>
        <code>{id}</code> from the <strong>{plugin.repository || "configured"}</strong> repository; the newest version
        there is <strong>{plugin.version}</strong>.
        {props.installed && (
          <>
            {" "}
            Version <strong>{props.installed.version}</strong> is installed.
          </>
        )}
      </p>
      {phase !== "done" && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void submit();
          }}
        >
          <fieldset disabled={running} class="plain-fieldset">
            <label for="i-version">Version</label>
            <input
              id="i-version"
              ref={versionRef}
              value={version}
              maxLength={128}
              placeholder={`latest (${plugin.version})`}
              aria-invalid={versionBad ? true : undefined}
              aria-describedby={versionBad ? "i-version-hint i-error" : "i-version-hint"}
              onInput={(e) => setVersion(e.currentTarget.value)}
            />
            <p class="hint" id="i-version-hint">
              Empty for the newest; or an exact version (1.2.0) or a constraint (^1.2).
            </p>
            <div class="check">
              <input id="i-enable" type="checkbox" checked={autoEnable} onChange={(e) => setAutoEnable(e.currentTarget.checked)} />
              <label for="i-enable">Enable the plugin once it is installed</label>
            </div>
            <div class="check">
              <input
                id="i-force"
                type="checkbox"
                checked={force}
                aria-describedby={props.installed?.enabled ? "i-force-hint" : undefined}
                onChange={(e) => setForce(e.currentTarget.checked)}
              />
              <label for="i-force">Reinstall if it is already installed</label>
            </div>
            {props.installed?.enabled && (
              <p class="hint" id="i-force-hint">
                The server reinstalls only a disabled plugin: disable it on{" "}
                <a href={href(`plugins/${encodeURIComponent(id)}`)}>its page</a> first.
              </p>
            )}
            <label for="i-config">Initial configuration (JSON, optional)</label>
            <textarea
              id="i-config"
              ref={configRef}
              rows={4}
              spellcheck={false}
              value={configText}
              placeholder='{"batch_size": 200}'
              aria-invalid={configProblem || configBad ? true : undefined}
              aria-describedby={configProblem ? "i-config-error" : configBad ? "i-config-hint i-error" : "i-config-hint"}
              onInput={(e) => {
                setConfigText(e.currentTarget.value);
                setConfigProblem(undefined);
              }}
            />
            <p class="hint" id="i-config-hint">
              An object of configuration values; the server checks them against the plugin's schema.
            </p>
            {configProblem && (
              <p class="field-error" id="i-config-error">
                {configProblem}
              </p>
            )}
          </fieldset>
          <div id="i-error">
            <ErrorNote error={error} title="The install failed" />
          </div>
          <div class="buttons">
            <button type="submit" class="primary" disabled={running} aria-busy={running}>
              {error ? "Try again" : "Install"}
            </button>
            <button type="button" onClick={closeDialog}>
              {running ? "Close (the install goes on)" : "Cancel"}
            </button>
          </div>
        </form>
      )}

      {startedAt && (
        <div class="progress-block">
          <h3>Progress</h3>
          {running && (
            <div class="running">
              <progress aria-label={`Installing ${id}`} />
              <span>Installing… {elapsed} s</span>
            </div>
          )}
          <ol class="steps">
            <li>
              {clock(startedAt)} Request sent: install <code>{id}</code> {asked}.
            </li>
            {events.map((e) => (
              <li key={e.id} class={e.type === "plugin.error" ? "bad" : undefined}>
                {clock(e.timestamp)} <code>{e.type}</code> {describe(e)}
              </li>
            ))}
            {running && (
              <li class="muted">
                Waiting for the server to download, verify and install the package
                {autoEnable ? " and start the plugin" : ""}…
              </li>
            )}
            {phase === "done" && inst && (
              <li>
                {clock(new Date(now))} The server answered: <Badge value={inst.status} /> in {inst.durationSeconds.toFixed(2)} s.
              </li>
            )}
            {error && !error.aborted && (
              <li class="bad">
                {clock(new Date(now))} The server refused: <code>{error.code}</code> after{" "}
                {((now - startedAt.getTime()) / 1000).toFixed(1)} s.
              </li>
            )}
          </ol>
          {error && events.some((e) => e.type === "plugin.installed") && (
            <p class="note">
              The package was installed before the error (see <code>plugin.installed</code> above), so {id} is now
              installed but not running. Fix it on <a href={href(`plugins/${encodeURIComponent(id)}`)}>its page</a>, for
              example in its configuration.
            </p>
          )}
          {feed.state !== "live" && (
            <div class="hint">
              <FeedStatus feed={feed} label="Plugin events" /> Steps can be missing while the feed is not live; the
              server's answer is shown all the same.
            </div>
          )}
        </div>
      )}

      {phase === "done" && inst && (
        <div class="note result" role="status" tabIndex={-1} ref={resultRef}>
          <p>
            <strong>
              {brief?.name || inst.pluginId} {inst.version} is installed.
            </strong>
          </p>
          <dl class="facts">
            <dt>Status</dt>
            <dd>
              <Badge value={inst.status} />
            </dd>
            <dt>Version</dt>
            <dd>{inst.version}</dd>
            <dt>Duration</dt>
            <dd>{inst.durationSeconds.toFixed(2)} s</dd>
            <dt>Installed at</dt>
            <dd>
              <Time ts={inst.installedAt} />
            </dd>
            {brief && (
              <>
                <dt>Plugin</dt>
                <dd>
                  <Badge value={brief.status} />
                  {!brief.enabled && <span class="badge muted">disabled</span>}
                </dd>
              </>
            )}
          </dl>
          <div class="buttons">
            <a class="button-link primary" href={href(`plugins/${encodeURIComponent(inst.pluginId || id)}`)}>
              Open the plugin page
            </a>
            <button type="button" onClick={closeDialog}>
              Close
            </button>
          </div>
        </div>
      )}
    </div>
  );
}

/** A repository's state in a word (with a colour that repeats it). */
function RepoState({ repo }: { repo: Repository }) {
  return <Badge value={!repo.enabled ? "disabled" : repo.lastError ? "sync failed" : "synced"} />;
}

/** What one sync did to one repository. */
interface SyncOutcome {
  repo: Repository;
  before?: Repository;
}

function Repositories({ session, onSynced }: { session: Session; onSynced: () => void }) {
  const repos = useLoad((signal) => session.api.repos.listRepositories({}, { signal }), []);
  const [outcome, setOutcome] = useState<{ at: Date; items: SyncOutcome[] }>();
  const [syncError, setSyncError] = useState<ApiError>();
  const list = repos.data?.repositories ?? [];
  return (
    <section class="repositories" aria-labelledby="repositories">
      <div class="title-row">
        <h2 id="repositories" tabIndex={-1}>
          Repositories
        </h2>
        {session.can("SyncRepositories") && (
          <ActionButton
            run={async () => {
              setSyncError(undefined);
              const before = new Map(list.map((r) => [r.name, r]));
              const res = await session.api.repos.syncRepositories({});
              setOutcome({ at: new Date(), items: res.repositories.map((r) => ({ repo: r, before: before.get(r.name) })) });
              const failed = res.repositories.filter((r) => r.lastError !== "").length;
              notices.say(
                `Synced ${res.repositories.length - failed} of ${res.repositories.length} repositories${failed ? `; ${failed} failed` : ""}`,
              );
              repos.reload();
              onSynced();
            }}
            onError={setSyncError}
          >
            Sync now
          </ActionButton>
        )}
      </div>
      <ErrorNote error={repos.error} title="Could not list the repositories" />
      <ErrorNote error={syncError} title="The sync failed" />
      {outcome && (
        <div class="note sync-result">
          <p>
            <strong>Sync at {clock(outcome.at)}:</strong>
          </p>
          <ul>
            {outcome.items.map(({ repo: r, before }) => (
              <li key={r.name}>
                <strong>{r.name}</strong>:{" "}
                <RepoState repo={r} />{" "}
                {!r.enabled ? (
                  "not synced"
                ) : r.lastError ? (
                  <>
                    {r.lastError}; it keeps its last catalog ({r.pluginCount} plugins)
                  </>
                ) : (
                  <>
                    {r.pluginCount} plugins
                    {before && before.pluginCount !== r.pluginCount
                      ? ` (was ${before.pluginCount})`
                      : before
                        ? " (unchanged)"
                        : ""}
                  </>
                )}
              </li>
            ))}
            {outcome.items.length === 0 && <li>No repositories are configured.</li>}
          </ul>
        </div>
      )}
      {repos.data && list.length === 0 && <p class="empty">The server has no repositories configured.</p>}
      {list.length > 0 && (
        <div class="table-wrap" tabIndex={0} role="region" aria-label="Repositories">
          <table>
            <thead>
              <tr>
                <th scope="col">Repository</th>
                <th scope="col">URL</th>
                <th scope="col">State</th>
                <th scope="col" class="num">
                  Plugins
                </th>
                <th scope="col">Last synced</th>
                <th scope="col">Last error</th>
              </tr>
            </thead>
            <tbody>
              {list.map((r) => (
                <tr key={r.name}>
                  <th scope="row">
                    <strong>{r.name}</strong>
                    {r.description && <div class="sub">{r.description}</div>}
                  </th>
                  <td class="url">
                    <code>{r.url}</code>
                  </td>
                  <td>
                    <RepoState repo={r} />
                  </td>
                  <td class="num">{r.pluginCount}</td>
                  <td>
                    <Time ts={r.lastSync} />
                  </td>
                  <td>{r.lastError || <span class="muted">none</span>}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
