// A small line chart of one metric series, drawn as SVG without a chart library. The plot is
// an SVG stretched to its box; the axis labels are HTML beside it, so that they stay legible
// at phone width. Screen readers get a summary (the SVG's title) and, on demand, a table of
// every point.
import { useId, useState } from "preact/hooks";
import "./plugin-tabs.css";

/** One value of a series at a time. */
export interface ChartPoint {
  at: Date;
  value: number;
}

export interface LineChartProps {
  /** The series' name, as a heading. */
  title: string;
  points: ChartPoint[];
  /** The range the chart covers (the answer's time range), so that gaps show as gaps. */
  start: Date;
  end: Date;
  /** The distance between two buckets; a longer one between points breaks the line. */
  stepMs: number;
  /** Writes a value with its unit ("12.5 ms"). */
  format: (v: number) => string;
}

// The plot's own coordinates; the SVG is stretched to its box (preserveAspectRatio="none"),
// and the strokes keep their width (vector-effect).
const W = 1000;
const H = 100;

export function LineChart(props: LineChartProps) {
  const { points, format } = props;
  const id = useId();
  const [showTable, setShowTable] = useState(false);
  const t0 = props.start.getTime();
  const t1 = Math.max(props.end.getTime(), t0 + 1);
  const values = points.map((p) => p.value);
  const min = values.length ? Math.min(...values) : 0;
  const max = values.length ? Math.max(...values) : 0;
  // Every series here is a count, a rate, a duration or a size: the axis starts at zero, so
  // that the height of the line is honest, and ends at a round number above the largest value.
  const top = niceCeil(max);
  const x = (d: Date) => ((d.getTime() - t0) / (t1 - t0)) * W;
  const y = (v: number) => H - (v / top) * H;
  const latest = points.at(-1);

  // Consecutive points more than one and a half steps apart are separate runs: a bucket
  // without data has no point, and the line should not pretend it had.
  const runs: ChartPoint[][] = [];
  for (const p of points) {
    const run = runs.at(-1);
    const prev = run?.at(-1);
    if (run && prev && p.at.getTime() - prev.at.getTime() <= props.stepMs * 1.5) run.push(p);
    else runs.push([p]);
  }

  const summary =
    points.length === 0
      ? `${props.title}: no data in this range.`
      : `${props.title}: ${points.length} point${points.length === 1 ? "" : "s"} from ${timeLabel(points[0]!.at, t1 - t0)} to ${timeLabel(
          latest!.at,
          t1 - t0,
        )}; lowest ${format(min)}, highest ${format(max)}, latest ${format(latest!.value)}.`;
  const span = t1 - t0;
  const mid = new Date(t0 + span / 2);

  return (
    <figure class="chart" aria-labelledby={`${id}-h`}>
      <figcaption>
        <h3 id={`${id}-h`}>{props.title}</h3>
        {latest ? (
          <span class="latest">
            {format(latest.value)} <small>at {timeLabel(latest.at, span)}</small>
          </span>
        ) : (
          // Keeps the plots of a row level; the plot itself says there is no data.
          <span class="latest" aria-hidden="true">
            {"\u00a0"}
          </span>
        )}
      </figcaption>
      <div class="plot">
        {/* The labels repeat what the title says in words; they are for the eye. */}
        <div class="y-labels" aria-hidden="true">
          <span>{points.length > 0 && format(top)}</span>
          <span>{points.length > 0 && format(0)}</span>
        </div>
        <svg viewBox={`0 0 ${W} ${H}`} preserveAspectRatio="none" role="img" aria-label={summary} focusable="false">
          <title>{summary}</title>
          <line class="grid" x1={0} y1={H / 2} x2={W} y2={H / 2} vector-effect="non-scaling-stroke" />
          <line class="grid" x1={0} y1={0} x2={W} y2={0} vector-effect="non-scaling-stroke" />
          <line class="axis" x1={0} y1={0} x2={0} y2={H} vector-effect="non-scaling-stroke" />
          <line class="axis" x1={0} y1={H} x2={W} y2={H} vector-effect="non-scaling-stroke" />
          {runs.map((run, i) =>
            run.length === 1 ? (
              // A lone point: a zero-length path with round caps draws a dot that, unlike a
              // circle, stays round when the plot is stretched.
              <path key={i} class="dot" d={`M${x(run[0]!.at)} ${y(run[0]!.value)}h0`} vector-effect="non-scaling-stroke" />
            ) : (
              <polyline
                key={i}
                class="line"
                points={run.map((p) => `${x(p.at).toFixed(1)},${y(p.value).toFixed(2)}`).join(" ")}
                vector-effect="non-scaling-stroke"
              />
            ),
          )}
        </svg>
        {points.length === 0 && (
          <span class="no-data" aria-hidden="true">
            no data in this range
          </span>
        )}
        <div class="x-labels" aria-hidden="true">
          <span>{timeLabel(props.start, span)}</span>
          <span>{timeLabel(mid, span)}</span>
          <span>{timeLabel(props.end, span)}</span>
        </div>
      </div>
      {points.length > 0 && (
        <details onToggle={(e) => setShowTable(e.currentTarget.open)}>
          <summary>
            Table of the {points.length} point{points.length === 1 ? "" : "s"}
            <span class="visually-hidden"> of {props.title}</span>
          </summary>
          {/* A day at one-minute resolution is 1440 rows: they are made only when asked for. */}
          {showTable && (
            <div class="table-wrap" tabIndex={0} role="region" aria-label={`${props.title}, points`}>
              <table>
                <caption class="visually-hidden">{props.title}</caption>
                <thead>
                  <tr>
                    <th scope="col">Time</th>
                    <th scope="col" class="num">
                      Value
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {points.map((p) => (
                    <tr key={p.at.getTime()}>
                      <th scope="row">
                        <time dateTime={p.at.toISOString()}>{p.at.toLocaleString()}</time>
                      </th>
                      <td class="num">{format(p.value)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </details>
      )}
    </figure>
  );
}

/** The smallest round number (1, 2, 2.5 or 5 times a power of ten) at or above v; 1 for 0. */
export function niceCeil(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (v <= m * p * (1 + 1e-9)) return m * p;
  }
  return 10 * p;
}

/**
 * A time as short as the range allows: the clock up to 6 hours, the weekday too up to a day
 * (the labels of "last 24 hours" would repeat the same clock time), the day of the month too beyond.
 */
function timeLabel(d: Date, spanMs: number): string {
  if (spanMs <= 6 * 3600_000) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (spanMs <= 25 * 3600_000) return d.toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit" });
  return d.toLocaleString([], { weekday: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

/** Writes a number with as many decimals as its size calls for. */
export function formatNumber(v: number): string {
  const a = Math.abs(v);
  const digits = a === 0 || a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
  return v.toLocaleString([], { maximumFractionDigits: digits });
}
