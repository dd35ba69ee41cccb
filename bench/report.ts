/** Turns the scenarios' figures into table rows, and the machine into one line. */
import os from 'node:os';
import type { ClusterOutcome } from './cluster.js';
import { PROVIDER, type BurstFigures, type CatalogFigures, type FairnessFigures } from './scenarios.js';

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

export interface Results {
  catalogScale: number;
  burstScale: number;
  catalog: Outcome<CatalogFigures>;
  unknown: Outcome<CatalogFigures>;
  fairness: Outcome<FairnessFigures>;
  burst: Outcome<BurstFigures>;
  /** scenario 8, one entry per process count; undefined when no redis-server was there to run it */
  cluster?: ClusterOutcome[];
}

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
const x = (ratio: number) => `${ratio.toFixed(2)}×`;
const scaleOf = (speed: number) => `1:${speed}`;

/** The first line of a failure, for a table cell (the whole of it goes under the table). */
export const failedCell = ({ failed }: Failed): string => `failed: ${failed.split('\n', 1)[0]!.replace(/\|/g, '\\|')}`;

/** The rows of one run: its figures' rows, or a single "failed: …" row under `name`. */
function rowsOf<T extends object>(outcome: T, name: string, scale: string, make: (figures: Exclude<T, Failed>) => Row[]): Row[] {
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
    ...rowsOf(r.burst, '4 Burst', bs, (burst) => burstRows(burst, bs)),
    ...(c ? catalogLaterRows(c, b, cs) : []),
    ...(r.cluster === undefined
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
  ];
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
      scenario: `4 Burst — ${b.requests} /imagine from ${b.tenants} tenants: accepted p50 / p99`,
      scale: `${bs} (latency real)`,
      measured: `${b.acceptP50Ms.toFixed(0)} / ${b.acceptP99Ms.toFixed(0)} ms (max ${b.acceptMaxMs.toFixed(0)})`,
      target: 'p99 < 50 ms',
      met: b.acceptP99Ms < 50,
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
function catalogLaterRows(c: CatalogFigures, b: BurstFigures | undefined, cs: string): Row[] {
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
      measured: `${c.cpuMsPerImage.toFixed(1)} ms (1-image jobs of the burst: ${b ? `${b.cpuMsPerImage.toFixed(1)} ms` : 'the burst failed'})`,
      target: '— (none set)',
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
