// The console in a real browser (Debian's Chromium through playwright-core) against a real
// server with the demo catalog: what an administrator does with a plugin from install to
// uninstall, what a user token is offered, keyboard use, accessibility and phone width.
//
// With CONSOLE_SCREENSHOTS=<dir> (make console-screenshots) it also saves a screenshot of
// each page there, for the README.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { assertAccessible, assertFitsWidth } from "./a11y.js";
import { ADMIN_TOKEN, createToken, launchBrowser, startServer, stopServer, type Server } from "./harness.js";

let server: Server;
let browser: Browser;
const shots = process.env.CONSOLE_SCREENSHOTS;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  if (shots) mkdirSync(shots, { recursive: true });
});

after(async () => {
  await browser?.close();
  if (server) await stopServer(server);
});

/** A fresh browser tab (own session storage) at the given width; axe needs CSP bypassed to load. */
async function newPage(width = 1280, height = 900): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport: { width, height }, bypassCSP: true, reducedMotion: "reduce" });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on("pageerror", (e) => problems.push(e.message));
  page.on("console", (m) => m.type() === "error" && !m.text().includes("status of 4") && problems.push(m.text()));
  (page as Page & { problems?: string[] }).problems = problems;
  return { context, page };
}

async function signIn(page: Page, token: string): Promise<void> {
  await page.goto(`${server.url}/ui/`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { level: 1, name: "Plugins" }).waitFor();
}

async function shot(page: Page, name: string, opts: { top?: boolean } = {}): Promise<void> {
  if (!shots) return;
  // The notices of what was done would cover the page.
  await page.addStyleTag({ content: ".notices { display: none !important; }" });
  if (opts.top) await page.evaluate(() => scrollTo(0, 0));
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: false });
}

test("a wrong token is refused with the API's code, and the token is kept out of URLs and local storage", async () => {
  const { context, page } = await newPage();
  await page.goto(`${server.url}/ui/`);
  await assertAccessible(page, "sign-in page");
  await page.getByLabel("API token").fill("nxt_not-a-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "UNAUTHENTICATED" }).waitFor();
  await shot(page, "sign-in");
  await page.getByLabel("API token").fill(ADMIN_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { level: 1, name: "Plugins" }).waitFor();
  assert.ok(!page.url().includes(ADMIN_TOKEN));
  const stored = await page.evaluate(() => ({ local: JSON.stringify(localStorage), cookie: document.cookie }));
  assert.ok(!stored.local.includes(ADMIN_TOKEN) && !stored.cookie.includes(ADMIN_TOKEN), "the token is in local storage or a cookie");
  // A reload keeps the tab signed in; a new tab (a new browser session) is not.
  await page.reload();
  await page.getByRole("heading", { level: 1, name: "Plugins" }).waitFor();
  const other = await browser.newContext();
  const second = await other.newPage();
  await second.goto(`${server.url}/ui/`);
  await second.getByLabel("API token").waitFor();
  await other.close();
  await context.close();
});

/** Waits until the plugin page's state row shows the word (status or health). */
async function seeState(page: Page, word: string): Promise<void> {
  await page.locator(".state-row").getByText(word, { exact: true }).first().waitFor({ timeout: 30_000 });
}

/** Opens a tab of the plugin page and checks it is accessible (and fits a phone when narrow). */
async function openTab(page: Page, name: string): Promise<void> {
  await page.getByRole("navigation", { name: "Plugin sections" }).getByRole("link", { name, exact: true }).click();
  await page.waitForURL((u) => u.pathname.endsWith(`/${name.toLowerCase().replace(" ", "-")}`));
}

test("an administrator installs, configures, enables, watches, disables and uninstalls a plugin", async () => {
  const { context, page } = await newPage();
  await signIn(page, ADMIN_TOKEN);
  await assertAccessible(page, "plugins page (empty)");

  // Catalog: find analytics-plugin, install it without enabling it, and watch the progress.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Catalog" }).click();
  await page.getByRole("heading", { level: 1, name: "Catalog" }).waitFor();
  await page.getByRole("button", { name: "Install Analytics Plugin" }).waitFor();
  await assertAccessible(page, "catalog");
  await shot(page, "catalog");
  await page.getByRole("button", { name: "Install Analytics Plugin" }).click();
  const install = page.getByRole("dialog");
  await install.getByLabel("Enable the plugin once it is installed").uncheck();
  await install.getByRole("button", { name: "Install", exact: true }).click();
  await install.getByText("Analytics Plugin 1.3.0 is installed.").waitFor();
  await assertAccessible(page, "install dialog, done");
  await install.getByRole("link", { name: "Open the plugin page" }).click();

  // The plugin page: installed, not enabled.
  await page.getByRole("heading", { level: 1, name: "Analytics Plugin" }).waitFor();
  await seeState(page, "inactive");
  await assertAccessible(page, "plugin overview");

  // Configuration: a refused value is shown on its field; a good one is saved.
  await openTab(page, "Configuration");
  const batch = page.locator("#cfg-batch_size");
  await batch.fill("5000");
  await page.getByRole("button", { name: /^Save/ }).click();
  await page.locator("#cfg-batch_size-error").getByText("must be at most 1000").waitFor();
  assert.equal(await batch.getAttribute("aria-invalid"), "true");
  assert.match((await batch.getAttribute("aria-describedby")) ?? "", /cfg-batch_size-error/);
  await page.getByRole("alert").getByText("PLUGIN_CONFIGURATION_ERROR").waitFor();
  await assertAccessible(page, "configuration with a refused value");
  await shot(page, "configuration", { top: true });
  await batch.fill("200");
  await page.getByRole("button", { name: /^Save/ }).click();
  await page.getByRole("heading", { name: "Saved" }).waitFor();
  assert.equal(await batch.getAttribute("aria-invalid"), null);

  // Enable it: the page follows it to active and healthy from the event feed.
  await page.getByRole("button", { name: "Enable", exact: true }).click();
  await seeState(page, "active");
  await seeState(page, "healthy");

  // Every tab renders and is accessible.
  for (const [tab, shotName] of [
    ["Overview", "plugin"],
    ["Health", "health"],
    ["Metrics", "metrics"],
    ["Permissions", "permissions"],
    ["Dead letters", ""],
  ] as const) {
    await openTab(page, tab);
    await page.locator(".tab-body").getByText(/\S/).first().waitFor();
    await assertAccessible(page, `${tab} tab`);
    if (shotName) await shot(page, shotName);
  }

  // Logs, live: a restart's log line arrives while the tail is followed.
  await openTab(page, "Logs");
  await page.getByRole("button", { name: "Follow live" }).click();
  const tail = page.getByRole("region", { name: "Live log lines, oldest first" });
  // Once the tail is live, clear its backlog: the line below can only come live.
  await page.locator(".tail-bar .feed.live").waitFor({ timeout: 15_000 });
  const clear = page.locator(".tail-bar").getByRole("button", { name: "Clear" });
  if (await clear.isEnabled()) await clear.click();
  assert.equal(await tail.getByText("Plugin restarting: console test").count(), 0);
  await page.getByRole("button", { name: "Restart…" }).click();
  await page.getByRole("dialog").getByLabel("Reason (kept in the audit log)").fill("console test");
  await page.getByRole("dialog").getByRole("button", { name: "Restart", exact: true }).click();
  await tail.getByText("Plugin restarting: console test").waitFor({ timeout: 30_000 });
  await assertAccessible(page, "logs, following");
  await shot(page, "logs");

  // Disable, with a reason; then uninstall, which goes back to an empty list.
  await page.getByRole("button", { name: "Disable…" }).click();
  const disable = page.getByRole("dialog");
  await disable.getByLabel("Reason (kept in the audit log)").fill("maintenance");
  await assertAccessible(page, "disable dialog");
  await disable.getByRole("button", { name: "Disable", exact: true }).click();
  await seeState(page, "inactive");
  await page.getByRole("button", { name: "Uninstall…" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Uninstall", exact: true }).click();
  await page.getByRole("heading", { level: 1, name: "Plugins" }).waitFor();
  await page.getByText("No plugins are installed.").waitFor();

  const problems = (page as Page & { problems?: string[] }).problems ?? [];
  assert.deepEqual(problems, [], "errors in the page");
  await context.close();
});

/** Calls the REST API as the administrator (setting up what a test looks at). */
async function adminREST(method: string, path: string, body?: unknown): Promise<unknown> {
  const res = await fetch(`${server.url}/api/v1/${path}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = (await res.json()) as { success: boolean; data?: unknown };
  assert.ok(answer.success, `${method} ${path}: ${JSON.stringify(answer)}`);
  return answer.data;
}

test("a user token is offered only what it may do", async () => {
  await adminREST("POST", "plugins/install", { source: "repository", plugin_name: "analytics-plugin", version: "1.2.0", auto_enable: true });
  const { context, page } = await newPage();
  try {
    await signIn(page, createToken(server, "user", "viewer"));
    await page.getByText("(user)").waitFor();
    await page.getByRole("link", { name: "Analytics Plugin" }).click();
    await page.getByRole("heading", { level: 1, name: "Analytics Plugin" }).waitFor();
    await seeState(page, "active");
    for (const name of ["Enable", "Disable…", "Restart…", "Update…", "Roll back…", "Uninstall…"]) {
      assert.equal(await page.getByRole("button", { name, exact: true }).count(), 0, `a user is offered ${name}`);
    }
    const tabs = page.getByRole("navigation", { name: "Plugin sections" });
    assert.equal(await tabs.getByRole("link", { name: "Dead letters" }).count(), 0, "a user is offered the dead letters");
    // The health tab follows the same events as the page: it shares the page's stream (a
    // browser has six connections to the server, and each stream holds one).
    let feeds = 0;
    page.on("request", (r) => r.url().endsWith("/nexus.plugin.v1.MessagingService/WatchEvents") && feeds++);
    await openTab(page, "Health");
    await page.locator(".tab-body .feed.live").waitFor();
    assert.equal(feeds, 0, "the health tab opened a stream of its own");
    await openTab(page, "Configuration");
    await page.getByText("Read-only: your token may read this configuration").waitFor();
    assert.ok(await page.locator("#cfg-batch_size").isDisabled());
    assert.equal(await page.getByRole("button", { name: /^Save/ }).count(), 0);
    await openTab(page, "Permissions");
    await page.locator(".tab-body").getByText(/\S/).first().waitFor();
    assert.equal(await page.getByRole("button", { name: /^(Grant|Revoke)/ }).count(), 0, "a user is offered grants");
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Catalog" }).click();
    await page.getByRole("heading", { level: 1, name: "Catalog" }).waitFor();
    await page.getByRole("heading", { name: "Analytics Plugin" }).first().waitFor();
    assert.equal(await page.getByRole("button", { name: /^(Install|Reinstall) / }).count(), 0, "a user is offered installs");
    assert.equal(await page.getByRole("button", { name: "Sync now" }).count(), 0, "a user is offered a sync");
    await assertAccessible(page, "catalog as a user");
  } finally {
    await context.close();
  }
});

test("the event feed shows an emitted event live, and a refused type on its field", async () => {
  const { context, page } = await newPage();
  try {
    await signIn(page, ADMIN_TOKEN);
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Events" }).click();
    await page.getByRole("heading", { level: 1, name: "Events" }).waitFor();
    await page.locator(".feed.live").first().waitFor();
    await page.getByLabel("Type", { exact: true }).fill("plugin.fake");
    await page.getByRole("button", { name: "Emit", exact: true }).click();
    await page.locator("#emit-type[aria-invalid=true]").waitFor();
    await page.getByText("reserved for the host").first().waitFor();
    await page.getByLabel("Type", { exact: true }).fill("console.checked");
    await page.getByLabel("Data (JSON object, optional)").fill('{"by": "the browser test"}');
    await page.getByRole("button", { name: "Emit", exact: true }).click();
    await page.getByRole("list", { name: "Events, newest first" }).getByText("console.checked", { exact: true }).waitFor();
    await assertAccessible(page, "events");
    await shot(page, "events");
  } finally {
    await context.close();
  }
});

test("everything can be done from the keyboard", async () => {
  const { context, page } = await newPage();
  try {
    await page.goto(`${server.url}/ui/`);
    const focused = () => page.evaluate(() => {
      const el = document.activeElement as HTMLElement | null;
      return `${el?.tagName.toLowerCase()}#${el?.id}:${(el?.getAttribute("aria-label") ?? el?.textContent ?? "").trim()}`;
    });
    /** Waits (at most 10 s) until the focused element matches, or fails naming the one that has it. */
    const focusIs = async (want: RegExp, what: string) => {
      for (let deadline = Date.now() + 10_000; Date.now() < deadline; await page.waitForTimeout(50)) {
        if (want.test(await focused())) return;
      }
      assert.fail(`${what}: the focus is on ${await focused()}`);
    };
    /** Presses Tab (or Shift+Tab) until the focused element matches (at most 40 times). */
    const tabTo = async (want: RegExp, key = "Tab") => {
      for (let i = 0; i < 40; i++) {
        await page.keyboard.press(key);
        if (want.test(await focused())) return;
      }
      assert.fail(`${key} never reached ${want}; at ${await focused()}`);
    };
    await focusIs(/^h1#:Sign in to Nexus$/, "on the sign-in page");
    // The skip link comes first, before the header.
    await tabTo(/^a#:Skip to content$/, "Shift+Tab");
    await tabTo(/^input#token:/);
    await page.keyboard.type(ADMIN_TOKEN);
    await page.keyboard.press("Enter");
    // After each page change the focus is on the page's heading.
    await focusIs(/^h1#:Plugins$/, "after signing in");
    await tabTo(/^a#:Catalog$/);
    await page.keyboard.press("Enter");
    await focusIs(/^h1#:Catalog$/, "after opening the catalog");
    await page.getByRole("button", { name: /^(Install|Reinstall) Analytics Plugin$/ }).waitFor();
    await tabTo(/^button#:(Install|Reinstall) Analytics Plugin$/);
    await page.keyboard.press("Enter");
    await page.getByRole("dialog").waitFor({ timeout: 10_000 });
    assert.ok(await page.evaluate(() => !!document.activeElement?.closest("dialog")), "the focus is not in the dialog");
    await page.keyboard.press("Escape");
    await page.getByRole("dialog").waitFor({ state: "hidden", timeout: 10_000 });
    assert.match(await focused(), /^button#:(Install|Reinstall) Analytics Plugin$/, "the focus did not come back to the button");
  } finally {
    await context.close();
  }
});

test("every page fits a phone's width and stays accessible there", async () => {
  const { context, page } = await newPage(390, 844);
  try {
    await signIn(page, ADMIN_TOKEN);
    await assertFitsWidth(page, "plugins");
    await assertAccessible(page, "plugins at phone width");
    await shot(page, "phone-plugins");
    // Each page, with something that is there once its data came.
    const tab = ".tab-body :is(table, dl, form, ol, .empty, .note)";
    const pages: [string, string, string][] = [
      ["plugins/analytics-plugin", "Analytics Plugin", tab],
      ["plugins/analytics-plugin/health", "Analytics Plugin", tab],
      ["plugins/analytics-plugin/metrics", "Analytics Plugin", ".tab-body svg"],
      ["plugins/analytics-plugin/logs", "Analytics Plugin", tab],
      ["plugins/analytics-plugin/configuration", "Analytics Plugin", "#cfg-batch_size"],
      ["plugins/analytics-plugin/permissions", "Analytics Plugin", tab],
      ["plugins/analytics-plugin/dead-letters", "Analytics Plugin", tab],
      ["catalog", "Catalog", "main h3"],
      ["events", "Events", ".feed.live"],
    ];
    for (const [path, heading, loaded] of pages) {
      await page.goto(`${server.url}/ui/${path}`);
      await page.getByRole("heading", { level: 1, name: heading }).waitFor();
      await page.locator(loaded).first().waitFor();
      await assertFitsWidth(page, path);
      await assertAccessible(page, `${path} at phone width`);
    }
    await page.goto(`${server.url}/ui/plugins/analytics-plugin`);
    await page.getByRole("heading", { level: 1, name: "Analytics Plugin" }).waitFor();
    await shot(page, "phone-plugin");
  } finally {
    await context.close();
  }
});
