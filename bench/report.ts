/** Turns the scenarios' figures into table rows, and the machine into one line. */
import os from 'node:os';
import type { ClusterFigures } from './cluster.js';
import { PROVIDER, type BurstFigures, type CatalogFigures, type FairnessFigures } from './scenarios.js';

export interface Row {
  scenario: string;
  scale: string;
  measured: string;
  target: string;
  /** undefined = no target (a figure for contrast or for the record) */
  met?: boolean;
}

export interface Results {
  catalogScale: number;
  burstScale: number;
  catalog: CatalogFigures;
  unknown: CatalogFigures;
  fairness: FairnessFigures;
  burst: BurstFigures;
  /** scenario 8; undefined when no redis-server was there to run it */
  cluster?: ClusterFigures[];
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

export function rows(r: Results): Row[] {
  const cs = scaleOf(r.catalogScale);
  const { catalog: c, unknown: u, fairness: f, burst: b } = r;
  const e = c.edits!;
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
    {
      scenario: '2 Unknown limit — makespan ÷ theoretical minimum',
      scale: cs,
      measured: `${x(u.ratio)} (${s(u.makespanMs)} vs ${s(u.idealMs)}; ${u.delivered}/${u.images} images)`,
      target: '≤ 1.15×',
      met: u.ratio <= 1.15 && u.delivered === u.images,
    },
    { scenario: '2 Unknown limit — 429s received', scale: cs, measured: `${u.rateLimited} (busiest window: ${u.maxPerWindow} of ${PROVIDER.limit} starts)`, target: '— (learned from 429s)' },
    { scenario: '3 Fairness — B (4 images) done after, fair queue', scale: cs, measured: `${f.fairCalls.toFixed(2)} calls`, target: '≤ 2 calls', met: f.fairCalls <= 2 },
    { scenario: '3 Fairness — same, plain FIFO (one tenant id)', scale: cs, measured: `${(c.guestCalls ?? NaN).toFixed(1)} calls`, target: '— (contrast)' },
    {
      scenario: `4 Burst — ${b.requests} /imagine from ${b.tenants} tenants: accepted p50 / p99`,
      scale: `${scaleOf(r.burstScale)} (latency real)`,
      measured: `${b.acceptP50Ms.toFixed(0)} / ${b.acceptP99Ms.toFixed(0)} ms (max ${b.acceptMaxMs.toFixed(0)})`,
      target: 'p99 < 50 ms',
      met: b.acceptP99Ms < 50,
    },
    {
      scenario: '4 Burst — jobs refused / finished with their image',
      scale: scaleOf(r.burstScale),
      measured: `${b.refused} / ${b.finished} of ${b.requests}`,
      target: `0 / ${b.requests}`,
      met: b.refused === 0 && b.finished === b.requests && b.allImages,
    },
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
      measured: `${c.cpuMsPerImage.toFixed(1)} ms (1-image jobs of the burst: ${b.cpuMsPerImage.toFixed(1)} ms)`,
      target: '— (none set)',
    },
    ...(r.cluster ?? []).map((k) => ({
      scenario: `8 Distributed — ${k.workers} process${k.workers === 1 ? '' : 'es'} on one Redis: makespan ÷ minimum, 429s`,
      scale: cs,
      measured: `${x(k.ratio)} (${s(k.makespanMs)} vs ${s(k.idealMs)}; ${k.delivered}/${k.images} images), ${k.rateLimited} × 429 (busiest window ${k.maxPerWindow}, ${k.maxInFlight} in flight)`,
      target: '≤ 1.10×, 0',
      met: k.ratio <= 1.1 && k.rateLimited === 0 && k.delivered === k.images,
    })),
    ...(r.cluster ? [] : [{ scenario: '8 Distributed — skipped: no redis-server (apt-get install -y redis-server)', scale: cs, measured: '—', target: '≤ 1.10×, 0' }]),
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
