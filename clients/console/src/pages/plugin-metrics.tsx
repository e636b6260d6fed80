// The plugin's metrics: its current figures (from the plugin's detail) and a chart of each
// series GetPluginMetrics returns, over a range and at a resolution kept in the URL
// (?range=6h&resolution=5m). The charts load once and on "Reload"; they reload on their
// own only when the user ticks "Follow", and then once per resolution step.
import { useEffect, useState } from "preact/hooks";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MetricPoint, MetricSeries } from "../../gen/nexus/plugin/v1/plugin_pb.js";
import { setQuery } from "../router.js";
import { ErrorNote, useLoad } from "../ui.js";
import { LineChart, formatNumber, type ChartPoint } from "./chart.js";
import type { TabProps } from "./plugin.js";
import "./plugin-tabs.css";

const resolutions = [
  { id: "1m", label: "1 minute", ms: 60_000 },
  { id: "5m", label: "5 minutes", ms: 5 * 60_000 },
  { id: "15m", label: "15 minutes", ms: 15 * 60_000 },
  { id: "1h", label: "1 hour", ms: 3600_000 },
] as const;

const ranges = [
  { id: "15m", label: "Last 15 minutes", ms: 15 * 60_000 },
  { id: "1h", label: "Last hour", ms: 3600_000 },
  { id: "6h", label: "Last 6 hours", ms: 6 * 3600_000 },
  { id: "24h", label: "Last 24 hours", ms: 24 * 3600_000 },
  { id: "7d", label: "Last 7 days", ms: 7 * 24 * 3600_000 },
] as const;

// The server keeps one-minute buckets for 24 hours; 5m and 15m are made from them, so a
// longer range can only be answered at 1h (a finer resolution is a VALIDATION_ERROR on
// start_time).
const FINE_LIMIT_MS = 24 * 3600_000;

const pct = (v: number) => `${formatNumber(v * 100)} %`;
const unit = (u: string) => (v: number) => `${formatNumber(v)} ${u}`;

/** The series of MetricSeries, in its order, with their titles and units. */
const series: { key: keyof Omit<MetricSeries, "$typeName" | "$unknown">; title: string; format: (v: number) => string }[] = [
  { key: "requestsPerMinute", title: "Requests per minute", format: unit("/min") },
  { key: "responseTimeMs", title: "Mean response time", format: unit("ms") },
  { key: "p95ResponseTimeMs", title: "95th percentile response time", format: unit("ms") },
  { key: "errorRate", title: "Error rate", format: pct },
  { key: "memoryUsageMb", title: "Memory", format: unit("MiB") },
  { key: "cpuUsagePercent", title: "CPU (percent of one core)", format: (v) => `${formatNumber(v)} %` },
  { key: "fileHandles", title: "Open files", format: formatNumber },
];

export function MetricsTab({ session, plugin, route }: TabProps) {
  const q = route.query;
  const range = ranges.find((r) => r.id === q.get("range")) ?? ranges[1];
  const asked = resolutions.find((r) => r.id === q.get("resolution")) ?? resolutions[0];
  // A range longer than a day is shown at 1h whatever the URL asks.
  const coarseOnly = range.ms > FINE_LIMIT_MS;
  const resolution = coarseOnly ? resolutions[3] : asked;
  const [follow, setFollow] = useState(false);

  const metrics = useLoad(
    (signal) => {
      // The range ends now, at the moment of each load (Reload and Follow move it forward).
      const end = new Date();
      return session.api.plugins.getPluginMetrics(
        {
          pluginId: plugin.id,
          startTime: timestampFromDate(new Date(end.getTime() - range.ms)),
          endTime: timestampFromDate(end),
          resolution: resolution.id,
        },
        { signal },
      );
    },
    [plugin.id, range.id, resolution.id],
  );

  // Following is opt-in: while ticked, the charts load again once per resolution step (a new
  // bucket at most that often). Metrics have no stream to follow instead.
  useEffect(() => {
    if (!follow) return;
    const t = setInterval(metrics.reload, resolution.ms);
    return () => clearInterval(t);
  }, [follow, resolution.ms, metrics.reload]);

  const data = metrics.data;
  const start = data?.timeRange?.start ? timestampDate(data.timeRange.start) : undefined;
  const end = data?.timeRange?.end ? timestampDate(data.timeRange.end) : undefined;
  const stepMs = resolutions.find((r) => r.id === data?.timeRange?.resolution)?.ms ?? resolution.ms;

  return (
    <div>
      <Summary plugin={plugin} />
      <h2>Over time</h2>
      <form class="filters" aria-label="Chart options" onSubmit={(e) => e.preventDefault()}>
        <div>
          <label for="m-range">Range</label>
          <select id="m-range" value={range.id} onChange={(e) => setQuery({ range: e.currentTarget.value })}>
            {ranges.map((r) => (
              <option key={r.id} value={r.id}>
                {r.label}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label for="m-resolution">Resolution</label>
          <select
            id="m-resolution"
            value={resolution.id}
            aria-describedby={coarseOnly ? "m-resolution-hint" : undefined}
            onChange={(e) => setQuery({ resolution: e.currentTarget.value })}
          >
            {resolutions.map((r) => (
              <option key={r.id} value={r.id} disabled={coarseOnly && r.ms < 3600_000}>
                {r.label}
              </option>
            ))}
          </select>
          {coarseOnly && (
            <p class="hint" id="m-resolution-hint">
              Finer data is kept for 24 hours only.
            </p>
          )}
        </div>
        <div class="buttons">
          <button type="button" onClick={metrics.reload} disabled={metrics.loading} aria-busy={metrics.loading}>
            Reload
            {metrics.loading && <span class="spinner" aria-hidden="true" />}
          </button>
        </div>
        <div>
          <div class="check">
            <input id="m-follow" type="checkbox" checked={follow} onChange={(e) => setFollow(e.currentTarget.checked)} />
            <label for="m-follow">Follow</label>
          </div>
          <p class="hint" id="m-follow-hint">
            Off by default. When ticked, the charts reload every {resolution.label}.
          </p>
        </div>
      </form>
      <ErrorNote error={metrics.error} title="Could not load the metrics" />
      {data && start && end && (
        <>
          <p class="muted">
            <time dateTime={start.toISOString()}>{start.toLocaleString()}</time> to{" "}
            <time dateTime={end.toISOString()}>{end.toLocaleString()}</time>, one point per {resolution.label}
            {metrics.loading && " (loading…)"}. The newest point covers a period still in progress: its request rate reads
            low until the period ends.
          </p>
          <div class="charts">
            {series.map((s) => (
              <LineChart
                key={s.key}
                title={s.title}
                points={toPoints(data.metrics?.[s.key] ?? [])}
                start={start}
                end={end}
                stepMs={stepMs}
                format={s.format}
              />
            ))}
          </div>
        </>
      )}
      {!data && metrics.loading && <p class="muted">Loading the metrics…</p>}
    </div>
  );
}

function toPoints(points: MetricPoint[]): ChartPoint[] {
  return points.filter((p) => p.timestamp).map((p) => ({ at: timestampDate(p.timestamp!), value: p.value }));
}

/** The plugin's current figures, from its detail (kept current by the plugin page's feed). */
function Summary({ plugin }: { plugin: TabProps["plugin"] }) {
  const m = plugin.metrics;
  if (!m) return <p class="muted">The plugin reports no metrics.</p>;
  const perf = m.performance;
  const use = m.usage;
  const res = m.resources;
  return (
    <>
      <h2>Now</h2>
      <div class="summary-group">
        {perf && (
          <>
            <h3 id="m-perf">Performance</h3>
            <dl class="summary" aria-labelledby="m-perf">
              <Fig label="Requests per minute" value={formatNumber(perf.requestsPerMinute)} />
              <Fig label="Mean response time" value={formatNumber(perf.averageResponseTime)} unit="ms" />
              <Fig label="95th percentile" value={formatNumber(perf.p95ResponseTime)} unit="ms" />
              <Fig label="Error rate" value={formatNumber(perf.errorRate * 100)} unit="%" />
            </dl>
          </>
        )}
        {use && (
          <>
            <h3 id="m-use">Usage</h3>
            <dl class="summary" aria-labelledby="m-use">
              <Fig label="Requests" value={formatNumber(use.totalRequests)} />
              <Fig label="Succeeded" value={formatNumber(use.successfulRequests)} />
              <Fig label="Failed" value={formatNumber(use.failedRequests)} />
              <Fig label="Distinct callers" value={formatNumber(use.uniqueUsers)} />
            </dl>
          </>
        )}
        {res && (
          <>
            <h3 id="m-res">Resources</h3>
            <dl class="summary" aria-labelledby="m-res">
              <Fig label="Memory" value={formatNumber(res.memoryUsageMb)} unit="MiB" />
              <Fig label="CPU (of one core)" value={formatNumber(res.cpuUsagePercent)} unit="%" />
              <Fig label="Open files" value={formatNumber(res.fileHandles)} />
            </dl>
          </>
        )}
      </div>
    </>
  );
}

function Fig({ label, value, unit }: { label: string; value: string; unit?: string }) {
  return (
    <div>
      <dt>{label}</dt>
      <dd>
        {value}
        {unit && <span class="unit">{unit}</span>}
      </dd>
    </div>
  );
}
