// Prints the plugins installed on a Nexus server.
//
//   NEXUS_URL=http://127.0.0.1:8080 NEXUS_TOKEN=... node dist/examples/list-plugins.js
//
// Optional: NEXUS_PROTOCOL=connect|connect-json|grpc-web|grpc (default connect).

import { createNexusClient, errorCode, type NexusProtocol } from "../src/index.js";

const baseUrl = process.env.NEXUS_URL ?? "http://127.0.0.1:8080";
const token = process.env.NEXUS_TOKEN;
const protocol = (process.env.NEXUS_PROTOCOL ?? "connect") as NexusProtocol;

const nexus = createNexusClient({ baseUrl, protocol, defaultTimeoutMs: 10_000, ...(token ? { token } : {}) });
try {
  const { plugins, summary } = await nexus.plugins.listPlugins({});
  console.log(`${summary?.total ?? 0} plugin(s) (${summary?.active ?? 0} active)`);
  for (const p of plugins) {
    console.log(`${p.id}\t${p.version}\t${p.status}\t${p.enabled ? "enabled" : "disabled"}\t${p.name}`);
  }
} catch (err) {
  console.error(`listing plugins failed: ${errorCode(err) ?? "no API error code"}: ${String(err)}`);
  process.exitCode = 1;
} finally {
  nexus.close();
}
