// greeter-plugin: an example plugin on the TypeScript SDK, packaged by
// scripts/package-example.mjs into bin/packages/greeter-plugin.tar.gz.
//
// It welcomes every user who logs in (user.login, which the Go example user-management
// emits) with a greeter.welcomed event, and answers `greet` {user_id} with a greeting and the
// user's activity, which it asks the Go example analytics-plugin for.

import { runPlugin } from "../../src/plugin.js";

const logins = new Map<string, number>();

await runPlugin({
  version: "1.0.0",
  services: ["greetings"],
  messageTypes: ["greet"],
  onStart: (session) => session.log("INFO", "Greeter started", { greeting: session.config.greeting ?? "Hello" }),
  onEvent: async (event, { session }) => {
    const user = String(event.data.user_id ?? "");
    if (!user) return;
    const n = (logins.get(user) ?? 0) + 1;
    logins.set(user, n);
    const id = await session.emit("greeter.welcomed", { user_id: user, logins: n });
    session.log("INFO", `Welcomed ${user}`, { logins: n, event_id: id });
  },
  onMessage: async (message, { session }) => {
    const user = String(message.data.user_id ?? "");
    if (!user) throw new Error("greet needs user_id");
    const stats = await session.send("analytics-plugin", "user_stats_request", { user_id: user }, { timeoutSeconds: 10 });
    return {
      text: `${String(session.config.greeting ?? "Hello")}, ${user}!`,
      logins_seen: logins.get(user) ?? 0,
      activity: stats.status === "success" ? stats.data : null,
    };
  },
  onHealthCheck: () => [{ name: "users", status: "pass", value: logins.size, unit: "users" }],
});
