// Vite builds the console into server/console/dist, which the server embeds (go:embed) and
// serves at /ui/. `npm run dev` serves it with hot reload and sends the API calls to the
// server named by NEXUS_URL (http://127.0.0.1:8080 by default).
import { defineConfig } from "vite";

const api = process.env.NEXUS_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  base: "/ui/",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "../../server/console/dist",
    emptyOutDir: true,
    target: "es2022",
    // One script and one stylesheet: the page is small, and fewer files load faster.
    cssCodeSplit: false,
    reportCompressedSize: false,
  },
  server: {
    proxy: {
      "^/nexus\\.": {
        target: api,
        changeOrigin: true,
        // Pass the server's headers on at once (a stream's headers, the event feed's "live",
        // come long before its first message), and a broken stream on as broken.
        configure: (proxy) =>
          proxy.on("proxyRes", (upstream, _req, out) => {
            setImmediate(() => out.writableEnded || out.flushHeaders());
            upstream.on("close", () => upstream.complete || out.destroy());
          }),
      },
    },
  },
});
