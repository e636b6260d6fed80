// The plugin list: every plugin with its state, filtered as the API filters, kept current by
// the event feed.
import { useEffect, useMemo, useState } from "preact/hooks";
import type { Session } from "../api.js";
import { href, setQuery, type Route } from "../router.js";
import { Badge, ErrorNote, FeedStatus, PageTitle, useEventFeed, useLoad, useSettled } from "../ui.js";

const statuses = ["active", "inactive", "error", "loading"];

export function PluginsPage({ session, route }: { session: Session; route: Route }) {
  const q = route.query;
  const filter = {
    status: q.get("status") ?? "",
    category: q.get("category") ?? "",
    search: q.get("search") ?? "",
    includeDisabled: q.get("include_disabled") !== "false",
  };
  // The category is applied when the field is left (or Enter): what is typed meanwhile is
  // kept across the list's live reloads, and follows the URL on Back and Forward.
  const [categoryDraft, setCategoryDraft] = useState(filter.category);
  useEffect(() => setCategoryDraft(filter.category), [filter.category]);
  const list = useLoad(
    (signal) =>
      session.api.plugins.listPlugins(
        { status: filter.status, category: filter.category, search: filter.search, includeDisabled: filter.includeDisabled },
        { signal },
      ),
    [filter.status, filter.category, filter.search, filter.includeDisabled],
  );
  // Plugin events change the list: load it again, at most a few times a second.
  const soon = useSettled(list.reload);
  const feed = useEventFeed(session, ["plugin.*"], soon, soon);
  const categories = useMemo(() => {
    const set = new Set((list.data?.plugins ?? []).map((p) => p.category).filter((c) => c !== ""));
    if (filter.category) set.add(filter.category);
    return [...set].sort();
  }, [list.data, filter.category]);
  const s = list.data?.summary;
  return (
    <section>
      <div class="title-row">
        <PageTitle>Plugins</PageTitle>
        <FeedStatus feed={feed} label="Updates" />
      </div>
      {s && (
        <dl class="summary" aria-label="Summary">
          <div>
            <dt>Total</dt>
            <dd>{s.total}</dd>
          </div>
          <div>
            <dt>Active</dt>
            <dd>{s.active}</dd>
          </div>
          <div>
            <dt>Inactive</dt>
            <dd>{s.inactive}</dd>
          </div>
          <div>
            <dt>Error</dt>
            <dd>{s.error}</dd>
          </div>
          <div>
            <dt>Disabled</dt>
            <dd>{s.disabled}</dd>
          </div>
        </dl>
      )}
      <form class="filters" role="search" aria-label="Filter plugins" onSubmit={(e) => e.preventDefault()}>
        <div>
          <label for="f-search">Search</label>
          <input
            id="f-search"
            type="search"
            placeholder="id, name or description"
            value={filter.search}
            onInput={(e) => setQuery({ search: e.currentTarget.value })}
          />
        </div>
        <div>
          <label for="f-status">Status</label>
          <select id="f-status" value={filter.status} onChange={(e) => setQuery({ status: e.currentTarget.value })}>
            <option value="">any</option>
            {statuses.map((v) => (
              <option key={v} value={v}>
                {v}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label for="f-category">Category</label>
          <input
            id="f-category"
            list="f-categories"
            value={categoryDraft}
            onInput={(e) => setCategoryDraft(e.currentTarget.value)}
            onChange={(e) => setQuery({ category: e.currentTarget.value })}
          />
          <datalist id="f-categories">
            {categories.map((c) => (
              <option key={c} value={c} />
            ))}
          </datalist>
        </div>
        <div class="check">
          <input
            id="f-disabled"
            type="checkbox"
            checked={filter.includeDisabled}
            onChange={(e) => setQuery({ include_disabled: e.currentTarget.checked ? undefined : "false" })}
          />
          <label for="f-disabled">Include disabled</label>
        </div>
      </form>
      <ErrorNote error={list.error} title="Could not list the plugins" />
      {list.data && list.data.plugins.length === 0 && (
        <p class="empty">
          No plugins{filter.search || filter.status || filter.category ? " match these filters" : " are installed"}.{" "}
          {session.can("InstallPlugin") && <a href={href("catalog")}>Install one from the catalog.</a>}
        </p>
      )}
      {list.data && list.data.plugins.length > 0 && (
        <div class="table-wrap" tabIndex={0} role="region" aria-label="Plugins">
          <table class="plugins">
            <thead>
              <tr>
                <th scope="col">Plugin</th>
                <th scope="col">Status</th>
                <th scope="col">Health</th>
                <th scope="col">Version</th>
                <th scope="col">Category</th>
                <th scope="col" class="num">
                  Load order
                </th>
              </tr>
            </thead>
            <tbody>
              {list.data.plugins.map((p) => (
                <tr key={p.id} data-plugin={p.id}>
                  <th scope="row">
                    <a href={href(`plugins/${encodeURIComponent(p.id)}`)}>{p.name || p.id}</a>
                    <div class="sub">
                      <code>{p.id}</code> {p.description}
                    </div>
                  </th>
                  <td>
                    <Badge value={p.status} />
                    {!p.enabled && <span class="badge muted">disabled</span>}
                  </td>
                  <td>
                    <Badge value={p.health} />
                  </td>
                  <td>{p.version}</td>
                  <td>{p.category}</td>
                  <td class="num">{p.loadOrder}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
