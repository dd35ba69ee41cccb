/**
 * The catalog run as the provider saw it, drawn for BENCHMARKS.md: calls started in the rolling rate
 * window and calls in flight over time, each against its limit and against the fastest schedule the
 * limits allow (bench/ideal.ts). Vega-Lite compiled to Vega, rendered to SVG in Node (no browser).
 */
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { idealStarts } from './ideal.js';
import { PROVIDER, type CatalogFigures, type Timeline } from './scenarios.js';

/** Where the chart goes, relative to BENCHMARKS.md. */
export const CHART_PATH = 'docs/bench/catalog.svg';

/** A step function's corners: from `t` on (until the next point) the value is `n`. */
export interface Step {
  t: number;
  n: number;
}

/**
 * Starts in the rolling window (t - windowMs, t] at every moment the count changes: a start enters
 * it, and leaves it windowMs later. The same window as the fake's limit and maxInWindow.
 */
export function rollingStarts(starts: readonly number[], windowMs: number): Step[] {
  const changes = [...starts.map((t) => ({ t, d: 1 })), ...starts.map((t) => ({ t: t + windowMs, d: -1 }))];
  return stepsOf(changes);
}

/** Calls in flight (started, not yet finished) at every moment the count changes. */
export function inFlight(starts: readonly number[], ends: readonly number[]): Step[] {
  return stepsOf([...starts.map((t) => ({ t, d: 1 })), ...ends.map((t) => ({ t, d: -1 }))]);
}

/** Sums +1/-1 changes in time order into steps; changes at the same instant make one step (ends first). */
function stepsOf(changes: { t: number; d: number }[]): Step[] {
  changes.sort((a, b) => a.t - b.t || a.d - b.d);
  const steps: Step[] = [{ t: 0, n: 0 }];
  let n = 0;
  for (const { t, d } of changes) {
    n += d;
    const last = steps[steps.length - 1]!;
    if (last.t === t) last.n = n;
    else steps.push({ t, n });
  }
  return steps;
}

/** The steps up to `until`, the last one held to it. */
function clip(steps: readonly Step[], until: number): Step[] {
  const kept = steps.filter((s) => s.t < until);
  const last = kept[kept.length - 1];
  return last ? [...kept, { t: until, n: last.n }] : kept;
}

const BOT = 'the bot (measured)';
const FLOOR = 'fastest possible (the floor)';
const LIMIT_COLOR = '#d62728';
const seconds = (ms: number) => Math.round(ms) / 1000;

/** The Vega-Lite spec of the catalog run's chart (times in scaled seconds since the request). */
export function catalogChartSpec(c: Pick<CatalogFigures, 'timeline' | 'makespanMs' | 'idealMs' | 'ratio' | 'rateLimited'>, scale: number): TopLevelSpec {
  const { callMs, limit, windowMs, concurrency } = PROVIDER;
  const t: Timeline = c.timeline;
  const floorStarts = idealStarts({ calls: t.starts.length, concurrency, callMs, limit, windowMs });
  // Each schedule is drawn up to its own end (its last call finished): after that the window empties
  // without meaning anything.
  const endMs = Math.max(c.makespanMs, ...t.ends);
  const floorEndMs = floorStarts.length === 0 ? 0 : floorStarts[floorStarts.length - 1]! + callMs;
  const rows = (panel: string, who: string, steps: Step[], until: number) => clip(steps, until).map((s) => ({ panel, who, t: seconds(s.t), n: s.n }));
  const windowRows = [
    ...rows('window', BOT, rollingStarts(t.starts, windowMs), endMs),
    ...rows('window', FLOOR, rollingStarts(floorStarts, windowMs), floorEndMs),
  ];
  const flightRows = [
    ...rows('flight', BOT, inFlight(t.starts, t.ends), endMs),
    ...rows('flight', FLOOR, inFlight(floorStarts, floorStarts.map((s) => s + callMs)), floorEndMs),
  ];
  const x = {
    field: 't',
    type: 'quantitative' as const,
    title: `time since the request (s of production time; the run was at 1:${scale})`,
    scale: { domain: [0, seconds(Math.max(endMs, floorEndMs))], nice: false },
  };
  const legend = { orient: 'top' as const, labelLimit: 400, symbolStrokeWidth: 2 };
  const color = { field: 'who', type: 'nominal' as const, title: null, scale: { domain: [BOT, FLOOR], range: ['#1f77b4', '#757575'] }, legend };
  const strokeDash = { field: 'who', type: 'nominal' as const, title: null, scale: { domain: [BOT, FLOOR], range: [[1, 0], [5, 3]] }, legend };

  /** One panel: the unused headroom shaded under the limit, both schedules' steps, the limit line and its label. */
  const panel = (title: string, yTitle: string, values: typeof windowRows, cap: number, capLabel: string, refused: number[]) => ({
    title: { text: title, anchor: 'start' as const, fontSize: 13 },
    width: 760,
    height: 190,
    layer: [
      {
        data: { values: values.filter((r) => r.who === BOT) },
        mark: { type: 'area' as const, interpolate: 'step-after' as const, color: '#1f77b4', opacity: 0.12 },
        encoding: { x, y: { field: 'n', type: 'quantitative' as const }, y2: { datum: cap } },
      },
      {
        data: { values },
        mark: { type: 'line' as const, interpolate: 'step-after' as const, strokeWidth: 1.6 },
        encoding: { x, y: { field: 'n', type: 'quantitative' as const, title: yTitle, scale: { domain: [0, Math.ceil(cap * 1.15)] } }, color, strokeDash },
      },
      {
        data: { values: [{ cap, label: capLabel }] },
        mark: { type: 'rule' as const, color: LIMIT_COLOR, strokeWidth: 1.5, strokeDash: [6, 3] },
        encoding: { y: { field: 'cap', type: 'quantitative' as const } },
      },
      {
        data: { values: [{ cap, label: capLabel }] },
        mark: { type: 'text' as const, color: LIMIT_COLOR, align: 'left' as const, baseline: 'bottom' as const, dx: 4, dy: -3, fontWeight: 'bold' as const },
        encoding: { x: { datum: 0 }, y: { field: 'cap', type: 'quantitative' as const }, text: { field: 'label' } },
      },
      ...(refused.length === 0
        ? []
        : [
            {
              data: { values: refused.map((r) => ({ t: seconds(r), cap })) },
              mark: { type: 'point' as const, shape: 'triangle-down', color: LIMIT_COLOR, filled: true, size: 60 },
              encoding: { x, y: { field: 'cap', type: 'quantitative' as const } },
            },
          ]),
    ],
  });

  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: `Catalog run: ${t.starts.length} calls of ${callMs / 1000} s, as the provider saw them`,
      subtitle: [
        `Makespan ${seconds(c.makespanMs).toFixed(1)} s against a floor of ${seconds(c.idealMs).toFixed(1)} s (${c.ratio.toFixed(3)}×); ${c.rateLimited === 0 ? 'no 429' : `${c.rateLimited} × 429 (red triangles)`}.`,
        // Short lines: with no canvas to measure text, Vega overestimates its width and would widen the SVG.
        'Shaded: the limit the bot left unused. Dashed: the fastest schedule the two limits allow;',
        'where it too stays under a limit, that headroom could not be used,',
        'and where it is above the blue line, the bot lagged it.',
      ],
      anchor: 'start',
      fontSize: 15,
    },
    config: { font: 'Helvetica, Arial, sans-serif', view: { stroke: null }, axis: { grid: true, gridOpacity: 0.35 } },
    resolve: { scale: { x: 'shared' } },
    vconcat: [
      panel(`Calls started in the last ${windowMs / 1000} s (the provider's rate window)`, 'starts in window', windowRows, limit, `limit: ${limit} per ${windowMs / 1000} s`, t.refused),
      panel('Calls in flight at the provider', 'calls in flight', flightRows, concurrency, `limit: ${concurrency} in flight`, []),
    ],
  };
}

/** The chart as an SVG document. */
export async function catalogChart(c: CatalogFigures, scale: number): Promise<string> {
  const view = new View(parse(compile(catalogChartSpec(c, scale)).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
