/** Turns the scenarios' figures into table rows, and the machine into one line. */
import os from 'node:os';
import type { ClusterOutcome } from './cluster.js';
import {
  PROVIDER,
  TIGHT,
  type BurstFigures,
  type BurstSpreadFigures,
  type CatalogFigures,
  type FairnessFigures,
  type FinishFigures,
  type ImageWriteFigures,
  type TightFigures,
} from './scenarios.js';

export interface Row {
  scenario: string;
  scale: string;
  measured: string;
  target: string;
  /** undefined = no target (a figure for contrast or for the record) */
  met?: boolean;
}

/** A scenario that did not give its figures: why, with the tail of its child's output when it had one. */
export interface Failed {
  failed: string;
}

/** A scenario's figures, or why there are none: one scenario failing never stops the bench. */
export type Outcome<T> = T | Failed;

export const isFailed = (outcome: unknown): outcome is Failed =>
  typeof outcome === 'object' && outcome !== null && typeof (outcome as Failed).failed === 'string';

/** The figures of a scenario that gave them, else undefined. */
export const figures = <T extends object>(outcome: Outcome<T> | undefined): T | undefined => (outcome === undefined || isFailed(outcome) ? undefined : outcome);

/**
 * Runs one scenario and turns any error into a Failed (printed with its output), so the bench goes on
 * to the next scenario and still writes BENCHMARKS.md.
 */
export async function attempt<T>(label: string, run: () => Promise<T>, log: (line: string) => void = (line) => process.stderr.write(line)): Promise<Outcome<T>> {
  const started = Date.now();
  log(`bench: ${label} …`);
  try {
    const result = await run();
    log(` ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    return result;
  } catch (error) {
    const failed = error instanceof Error ? error.message : String(error);
    log(` FAILED after ${((Date.now() - started) / 1000).toFixed(1)} s, going on:\n${failed}\n`);
    return { failed };
  }
}

/**
 * Every run's outcome; a run left out (undefined) was not asked for (BENCH_ONLY) and has no rows.
 * The scenario numbers are the issue's: some runs serve several.
 */
export interface Results {
  catalogScale: number;
  burstScale: number;
  /** the runs asked for with BENCH_ONLY; undefined = all of them */
  only?: readonly string[];
  catalog?: Outcome<CatalogFigures>;
  unknown?: Outcome<CatalogFigures>;
  fairness?: Outcome<FairnessFigures>;
  /** scenario 4, all 500 requests in one tick */
  burst?: Outcome<BurstFigures>;
  /** scenario 4, the 500 spread over a second */
  burstSpread?: Outcome<BurstSpreadFigures>;
  /** scenario 9, limit told / not told */
  tight?: Outcome<TightFigures>;
  tightUnknown?: Outcome<TightFigures>;
  /** scenario 10, status stream / polling */
  finishStream?: Outcome<FinishFigures>;
  finishPoll?: Outcome<FinishFigures>;
  /** scenario 7's yardstick: keeping one ~1 MB image alone (with the catalog run) */
  imageWrite?: Outcome<ImageWriteFigures>;
  /** scenario 8, one entry per process count; undefined when no redis-server was there to run it (or not asked for) */
  cluster?: ClusterOutcome[];
}

/** The names BENCH_ONLY takes, one per run (or pair of runs), in the order the bench runs them. */
export const RUNS = ['catalog', 'unknown', 'fairness', 'burst', 'tight', 'latency', 'cluster'] as const;
export type RunName = (typeof RUNS)[number];

/** Whether a run was asked for (every run is, without BENCH_ONLY). */
export const asked = (r: Pick<Results, 'only'>, name: RunName): boolean => r.only === undefined || r.only.includes(name);

export interface Machine {
  cpu: string;
  cores: number;
  memoryGb: number;
  node: string;
  date: string;
  load: string;
}

export function machine(): Machine {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGb: os.totalmem() / 2 ** 30,
    node: process.version,
    date: new Date().toISOString().replace('T', ' ').slice(0, 16) + ' UTC',
    load: os.loadavg().map((n) => n.toFixed(2)).join(' / '),
  };
}

const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
/** Three decimals: two would show 1.052× as 1.05×, next to a target of ≤ 1.05× it misses. */
const x = (ratio: number) => `${ratio.toFixed(3)}×`;
const scaleOf = (speed: number) => `1:${speed}`;

/** The first line of a failure, for a table cell (the whole of it goes under the table). */
export const failedCell = ({ failed }: Failed): string => `failed: ${failed.split('\n', 1)[0]!.replace(/\|/g, '\\|')}`;

/** The rows of one run: its figures' rows, a single "failed: …" row under `name`, or none when it was not run. */
function rowsOf<T extends object>(outcome: T | undefined, name: string, scale: string, make: (figures: Exclude<T, Failed>) => Row[]): Row[] {
  if (outcome === undefined) return [];
  return isFailed(outcome) ? [{ scenario: `${name} — failed`, scale, measured: failedCell(outcome), target: '—', met: false }] : make(outcome as Exclude<T, Failed>);
}

/** The table: each scenario's rows, in scenario order; a scenario whose run failed has one "failed: …" row. */
export function rows(r: Results): Row[] {
  const cs = scaleOf(r.catalogScale);
  const bs = scaleOf(r.burstScale);
  const c = figures(r.catalog);
  const b = figures(r.burst);
  return [
    ...rowsOf(r.catalog, '1, 3 (FIFO), 5, 6, 7 Catalog run', cs, (c) => catalogRows(c, cs)),
    ...rowsOf(r.unknown, '2 Unknown limit', cs, (u) => unknownRows(u, cs)),
    ...rowsOf(r.fairness, '3 Fairness — fair queue', cs, (f) => [
      { scenario: '3 Fairness — B (4 images) done after, fair queue', scale: cs, measured: `${f.fairCalls.toFixed(2)} calls`, target: '≤ 2 calls', met: f.fairCalls <= 2 },
    ]),
    ...(c ? [{ scenario: '3 Fairness — same, plain FIFO (one tenant id)', scale: cs, measured: `${(c.guestCalls ?? NaN).toFixed(1)} calls`, target: '— (contrast)' }] : []),
    ...rowsOf(r.burstSpread, '4 Burst — spread over 1 s', bs, (spread) => [burstSpreadRow(spread, bs)]),
    ...rowsOf(r.burst, '4 Burst', bs, (burst) => burstRows(burst, bs)),
    ...(c ? catalogLaterRows(c, b, figures(r.imageWrite), cs) : []),
    ...(r.cluster === undefined && !asked(r, 'cluster')
      ? []
      : r.cluster === undefined
      ? [{ scenario: '8 Distributed — skipped: no redis-server (apt-get install -y redis-server)', scale: cs, measured: '—', target: '≤ 1.10×, 0' }]
      : r.cluster.map((k) =>
          rowsOf(k, `8 Distributed — ${processes(k.workers)}`, cs, (f) => [
            {
              scenario: `8 Distributed — ${processes(f.workers)} on one Redis: makespan ÷ minimum, 429s`,
              scale: cs,
              measured: `${x(f.ratio)} (${s(f.makespanMs)} vs ${s(f.idealMs)}; ${f.delivered}/${f.images} images), ${f.rateLimited} × 429 (busiest window ${f.maxPerWindow}, ${f.maxInFlight} in flight)`,
              target: '≤ 1.10×, 0',
              met: f.ratio <= 1.1 && f.rateLimited === 0 && f.delivered === f.images,
            },
          ]),
        ).flat()),
    ...rowsOf(r.tight, '9 Tight — limit told', REAL, (t) => [tightRow(t)]),
    ...rowsOf(r.tightUnknown, '9 Tight — limit not told', REAL, (t) => [tightRow(t)]),
    ...rowsOf(r.finishStream, '10 Finish latency — status stream', REAL, (f) => [finishRow(f, true)]),
    ...rowsOf(r.finishPoll, '10 Finish latency — polling', REAL, (f) => [finishRow(f, false)]),
    ...(c ? [catalogFinishRow(c, cs)] : []),
  ];
}

const REAL = 'real time';
const ms = (value: number) => `${value.toFixed(0)} ms`;

function burstSpreadRow(b: BurstSpreadFigures, bs: string): Row {
  return {
    scenario: `4 Burst — ${b.requests} /imagine from ${b.tenants} tenants, spread evenly over ${b.spreadMs / 1000} s: accepted p50 / p99`,
    scale: `${bs} (latency real)`,
    measured: `${ms(b.acceptP50Ms)} / ${ms(b.acceptP99Ms)} (max ${ms(b.acceptMaxMs)}; ${b.refused} refused)`,
    target: 'p99 < 50 ms',
    met: b.acceptP99Ms < 50 && b.refused === 0,
  };
}

/** A tight run: one row, its makespan against the floor and its 429s; told, the 429s must be 0. */
function tightRow(t: TightFigures): Row {
  const what = `${TIGHT.calls} calls of ${TIGHT.callMs} ms, ${TIGHT.limit}/s and ${TIGHT.concurrency} in flight`;
  return {
    scenario: t.told ? `9 Tight — ${what}, limit told: makespan ÷ floor, 429s` : '9 Tight — same, limit not told (learned from 429s)',
    scale: REAL,
    measured: `${x(t.ratio)} (${s(t.makespanMs)} vs ${s(t.idealMs)}; ${t.delivered}/${t.images} images), ${t.rateLimited} × 429 (busiest second ${t.maxPerWindow}, ${t.maxInFlight} in flight)`,
    target: t.told ? '≤ 1.05×, 0' : '≤ 1.25×',
    met: (t.told ? t.ratio <= 1.05 && t.rateLimited === 0 : t.ratio <= 1.25) && t.delivered === t.images,
  };
}

const finishCell = (f: FinishFigures) =>
  `${ms(f.p50Ms)} / ${ms(f.p99Ms)} (max ${ms(f.maxMs)}; ${f.measured} of ${f.calls} calls; recorded in the job: p99 ${ms(f.recordedP99Ms)}; ${f.polls} status polls)`;

function finishRow(f: FinishFigures, stream: boolean): Row {
  return stream
    ? {
        scenario: `10 Finish latency — provider done → the call's 4 images (~1 MB) on disk, status stream: p50 / p99`,
        scale: REAL,
        measured: finishCell(f),
        target: 'p99 < 100 ms',
        met: f.p99Ms < 100 && f.measured === f.calls,
      }
    : { scenario: '10 Finish latency — same, polling (the engine\'s interval: 500 ms)', scale: REAL, measured: finishCell(f), target: '— (contrast)' };
}

/** The same figure under the catalog run's load (its calls end ten at a time), for the record. */
function catalogFinishRow(c: CatalogFigures, cs: string): Row {
  return { scenario: "10 Finish latency — the catalog run's calls (status stream; they end ten at a time)", scale: `${cs} (latency real)`, measured: finishCell(c.finish), target: '— (under load)' };
}

const processes = (workers: number) => `${workers} process${workers === 1 ? '' : 'es'}`;

function catalogRows(c: CatalogFigures, cs: string): Row[] {
  return [
    { scenario: '1 Catalog — provider calls made', scale: cs, measured: `${c.calls} (${c.delivered}/${c.images} images on disk: ${c.files})`, target: `= ${c.callsFloor} (the floor)`, met: c.calls === c.callsFloor && c.files === c.images },
    {
      scenario: '1 Catalog — makespan ÷ theoretical minimum',
      scale: cs,
      measured: `${x(c.ratio)} (${s(c.makespanMs)} vs ${s(c.idealMs)})`,
      target: '≤ 1.05×',
      met: c.ratio <= 1.05,
    },
    {
      scenario: '1 Catalog — 429s received (limit configured)',
      scale: cs,
      measured: `${c.rateLimited} (busiest window: ${c.maxPerWindow} of ${PROVIDER.limit} starts)`,
      target: '0',
      met: c.rateLimited === 0,
    },
  ];
}

function unknownRows(u: CatalogFigures, cs: string): Row[] {
  return [
    {
      scenario: '2 Unknown limit — makespan ÷ theoretical minimum',
      scale: cs,
      measured: `${x(u.ratio)} (${s(u.makespanMs)} vs ${s(u.idealMs)}; ${u.delivered}/${u.images} images)`,
      target: '≤ 1.15×',
      met: u.ratio <= 1.15 && u.delivered === u.images,
    },
    { scenario: '2 Unknown limit — 429s received', scale: cs, measured: `${u.rateLimited} (busiest window: ${u.maxPerWindow} of ${PROVIDER.limit} starts)`, target: '— (learned from 429s)' },
  ];
}

function burstRows(b: BurstFigures, bs: string): Row[] {
  return [
    {
      scenario: `4 Burst — same ${b.requests}, all in one tick: accepted p50 / p99`,
      scale: `${bs} (latency real)`,
      measured: `${b.acceptP50Ms.toFixed(0)} / ${b.acceptP99Ms.toFixed(0)} ms (max ${b.acceptMaxMs.toFixed(0)})`,
      target: '— (contrast)',
    },
    {
      scenario: '4 Burst — jobs refused / finished with their image',
      scale: bs,
      measured: `${b.refused} / ${b.finished} of ${b.requests}`,
      target: `0 / ${b.requests}`,
      met: b.refused === 0 && b.finished === b.requests && b.allImages,
    },
  ];
}

/** Scenarios 5, 6 and 7, from the catalog run (7 also quotes the burst when it ran). */
function catalogLaterRows(c: CatalogFigures, b: BurstFigures | undefined, w: ImageWriteFigures | undefined, cs: string): Row[] {
  const e = c.edits!;
  return [
    { scenario: '5 Memory — peak RSS of the core, 1000 × ~1 MB', scale: cs, measured: `${c.maxRssMb.toFixed(0)} MB (idle ${c.baselineRssMb.toFixed(0)} MB)`, target: '< 300 MB', met: c.maxRssMb < 300 },
    {
      scenario: '6 Edits — progress edits in any 1.5 s, one message',
      scale: cs,
      measured: `${e.maxPerInterval} (${e.perSecond.toFixed(2)}/s; + ${e.finalFlushes} final flush)`,
      target: '≤ 1',
      met: e.maxPerInterval <= 1,
    },
    { scenario: '6 Edits — batch done → edit showing it', scale: cs, measured: `p50 ${s(e.lagP50Ms)}, max ${s(e.lagMaxMs)}`, target: 'max ≤ 2 s', met: e.lagMaxMs <= 2000 },
    {
      scenario: '7 Overhead — CPU of our code per image',
      scale: cs,
      measured: `${c.cpuMsPerImage.toFixed(1)} ms (keeping one alone, ImageFiles.writeImage: ${w ? `${w.cpuMsPerImage.toFixed(1)} ms` : 'not measured'}; 1-image jobs of the burst: ${b ? `${b.cpuMsPerImage.toFixed(1)} ms` : 'not measured'})`,
      target: '≤ 10 ms',
      met: c.cpuMsPerImage <= 10,
    },
  ];
}

const mark = (met: boolean | undefined) => (met === undefined ? '—' : met ? 'yes' : '**no**');

export function markdownTable(list: Row[]): string {
  const lines = ['| Scenario | Scale | Measured | Target | Met |', '| --- | --- | --- | --- | --- |'];
  for (const row of list) lines.push(`| ${row.scenario} | ${row.scale} | ${row.measured} | ${row.target} | ${mark(row.met)} |`);
  return lines.join('\n');
}

export function consoleTable(list: Row[]): string {
  const cells = list.map((r) => [r.scenario, r.scale, r.measured, r.target, r.met === undefined ? '—' : r.met ? 'yes' : 'NO']);
  const head = ['Scenario', 'Scale', 'Measured', 'Target', 'Met'];
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((v, i) => v.padEnd(widths[i]!)).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join('\n');
}
