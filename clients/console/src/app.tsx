// The console's frame: sign-in, the navigation, and the page for the current URL.
import { useEffect, useRef, useState } from "preact/hooks";
import { resumeSession, signIn, signOut, type ApiError, type Session } from "./api.js";
import { href, interceptLinks, useRoute, type Route } from "./router.js";
import { ErrorNote, Notices, PageTitle } from "./ui.js";
import { PluginsPage } from "./pages/plugins.js";
import { PluginPage } from "./pages/plugin.js";
import { CatalogPage } from "./pages/catalog.js";
import { EventsPage } from "./pages/events.js";

export function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [resumeError, setResumeError] = useState<ApiError>();
  const root = useRef<HTMLDivElement>(null);
  useEffect(() => {
    resumeSession().then(
      (s) => setSession(s ?? null),
      (e: ApiError) => {
        setResumeError(e);
        setSession(null);
      },
    );
  }, []);
  useEffect(() => (root.current ? interceptLinks(root.current) : undefined), []);
  return (
    <div ref={root} class="app">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href={href("")}>
          Nexus
        </a>
        {session && <Nav session={session} onSignOut={() => (signOut(), setSession(null))} />}
      </header>
      <main id="main" tabIndex={-1}>
        {session === undefined ? (
          <p aria-busy="true">Loading…</p>
        ) : session === null ? (
          <SignIn onSession={setSession} initialError={resumeError} />
        ) : (
          <Page session={session} />
        )}
      </main>
      <Notices />
    </div>
  );
}

function Nav({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const route = useRoute();
  const section = route.parts[0] ?? "";
  const link = (to: string, label: string, match: string) => (
    <li>
      <a href={href(to)} aria-current={section === match ? "page" : undefined}>
        {label}
      </a>
    </li>
  );
  return (
    <>
      <nav aria-label="Main">
        <ul>
          {link("", "Plugins", "")}
          {link("catalog", "Catalog", "catalog")}
          {link("events", "Events", "events")}
        </ul>
      </nav>
      <div class="who">
        <span>
          {session.me.name || session.me.tokenId} <span class="role">({session.me.role})</span>
        </span>
        <button type="button" class="plain" onClick={onSignOut}>
          Sign out
        </button>
      </div>
    </>
  );
}

function Page({ session }: { session: Session }) {
  const route: Route = useRoute();
  const [first, second, third] = route.parts;
  if (first === undefined || (first === "plugins" && second === undefined)) return <PluginsPage session={session} route={route} />;
  if (first === "plugins" && second) return <PluginPage key={second} session={session} id={second} tab={third ?? "overview"} route={route} />;
  if (first === "catalog") return <CatalogPage session={session} route={route} />;
  if (first === "events") return <EventsPage session={session} route={route} />;
  return (
    <>
      <PageTitle>Not found</PageTitle>
      <p>
        There is no console page at this address. <a href={href("")}>Go to the plugins.</a>
      </p>
    </>
  );
}

function SignIn({ onSession, initialError }: { onSession: (s: Session) => void; initialError?: ApiError }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<ApiError | undefined>(initialError);
  const [busy, setBusy] = useState(false);
  return (
    <section class="signin">
      <PageTitle>Sign in to Nexus</PageTitle>
      <p>
        Paste a Nexus API token. An admin token manages plugins; a user token reads them. The server writes its admin
        token to <code>admin-token</code> in its data directory (<code>.nexus-data/admin-token</code> under{" "}
        <code>make run</code>); <code>nexus token create</code> issues others.
      </p>
      <p class="muted">The token is kept in this browser tab only, and is forgotten when the tab is closed.</p>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(undefined);
          try {
            onSession(await signIn(token.trim()));
          } catch (err) {
            setError(err as ApiError);
          } finally {
            setBusy(false);
          }
        }}
      >
        <label for="token">API token</label>
        <input
          id="token"
          name="token"
          type="password"
          autoComplete="off"
          spellcheck={false}
          required
          value={token}
          onInput={(e) => setToken(e.currentTarget.value)}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? "signin-error" : undefined}
        />
        <button type="submit" class="primary" disabled={busy || token.trim() === ""} aria-busy={busy}>
          Sign in
        </button>
      </form>
      <div id="signin-error">
        <ErrorNote error={error} title="Sign-in failed" />
      </div>
    </section>
  );
}
