/**
 * `npm run bench`: drives the real core (scheduler, providers, store, file writes) against the fake
 * fal queue server, prints the table and writes BENCHMARKS.md with its chart (docs/bench/catalog.svg).
 * See bench/notes.ts for what each figure means, and BENCHMARKS.md for the last run.
 *
 * BENCH_ONLY=tight,latency runs only the runs named (catalog, unknown, fairness, burst, tight,
 * latency, cluster) and writes its BENCHMARKS.md and chart to a temporary folder instead, so that a
 * partial run never replaces the whole one. Every run also saves its figures (the path is printed);
 * BENCH_RENDER=<that file> writes BENCHMARKS.md and the chart again from them, running nothing (for
 * work on the notes).
 */
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { catalogChart, CHART_PATH } from './chart.js';
import { benchmarksMd } from './notes.js';
import { asked, attempt, consoleTable, figures, isFailed, machine, rows, RUNS, type Machine, type Results, type RunName } from './report.js';
import { cluster } from './cluster.js';
import { burst, burstSpread, catalog, fairness, finishLatency, imageWriteCost, tight } from './scenarios.js';

/** 1:5 for everything whose figure is a makespan or a wait (see "Scales, and why" in BENCHMARKS.md). */
const CATALOG_SCALE = 5;
/** 1:20 for the burst: its figure is real-time acceptance latency. */
const BURST_SCALE = 20;

/** What a run leaves for BENCH_RENDER. */
interface Saved {
  results: Results;
  machine: Machine;
  wallMs: number;
  loadAfter: string;
}

/** Prints the table and writes BENCHMARKS.md and the chart into `outDir`. */
async function publish({ results, machine: m, wallMs, loadAfter }: Saved, outDir: string): Promise<void> {
  const table = rows(results);
  process.stdout.write(`\n${consoleTable(table)}\n\n`);
  const c = figures(results.catalog);
  let chart: string | undefined;
  if (c) {
    try {
      await mkdir(path.join(outDir, path.dirname(CHART_PATH)), { recursive: true });
      await writeFile(path.join(outDir, CHART_PATH), await catalogChart(c, results.catalogScale));
      chart = CHART_PATH;
    } catch (error) {
      // The chart is an illustration: the figures stand without it, and BENCHMARKS.md says it is missing.
      process.stderr.write(`bench: the chart could not be drawn: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    }
  }
  const md = path.join(outDir, 'BENCHMARKS.md');
  await writeFile(md, benchmarksMd(results, table, m, wallMs, loadAfter, chart));
  process.stdout.write(`Written to ${md}${chart ? ` and ${path.join(outDir, chart)}` : ''} (run time ${(wallMs / 1000).toFixed(0)} s).\n`);
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const render = process.env.BENCH_RENDER;
if (render) {
  // JSON wrote NaN and Infinity (a figure with nothing to measure) as null; results hold no real null.
  const saved = JSON.parse(await readFile(render, 'utf8'), (_key, value: unknown) => (value === null ? NaN : value)) as Saved;
  await publish(saved, saved.results.only ? await mkdtemp(path.join(os.tmpdir(), 'af-bench-out-')) : ROOT);
  process.exit(0);
}

const only = process.env.BENCH_ONLY?.split(',').map((name) => name.trim()).filter(Boolean);
const unknownNames = only?.filter((name) => !(RUNS as readonly string[]).includes(name)) ?? [];
if (unknownNames.length > 0) {
  process.stderr.write(`BENCH_ONLY: no run named ${unknownNames.join(', ')} (the runs: ${RUNS.join(', ')})\n`);
  process.exit(2);
}
const outDir = only ? await mkdtemp(path.join(os.tmpdir(), 'af-bench-out-')) : ROOT;

const m = machine();
const started = Date.now();
process.stderr.write(`bench: ${m.cpu}, ${m.cores} cores, Node ${m.node}, load ${m.load}${only ? `; only ${only.join(', ')}` : ''}\n`);
const scale = { speed: CATALOG_SCALE };
const results: Results = { catalogScale: CATALOG_SCALE, burstScale: BURST_SCALE, ...(only ? { only } : {}) };
/** Runs a run if it was asked for. Each is attempted: one that fails (its child exits early, errors or
 * hangs) becomes a "failed: …" row with the child's output, and the others still run. */
const run = async <T>(name: RunName, label: string, scenario: () => Promise<T>) => (asked(results, name) ? attempt(label, scenario) : undefined);

results.catalog = await run('catalog', `1, 3 (FIFO), 5, 6, 7, 10: catalog of 1000 × ~1 MB, limit told, at 1:${CATALOG_SCALE}`, () =>
  catalog(scale, { bigImages: true, fifoGuest: true }),
);
results.imageWrite = await run('catalog', '7: keeping one ~1 MB image alone (ImageFiles.writeImage), in this process', () => imageWriteCost());
results.unknown = await run('unknown', `2: catalog, limit learned from 429s, at 1:${CATALOG_SCALE}`, () => catalog(scale, { bigImages: true, told: false, watch: false }));
results.fairness = await run('fairness', `3: fairness, B's 4 images behind A's 1000, at 1:${CATALOG_SCALE}`, () => fairness(scale, { bigImages: true }));
results.burstSpread = await run('burst', `4: 500 /imagine from 50 tenants over 1 s, at 1:${BURST_SCALE}`, () => burstSpread({ speed: BURST_SCALE }));
results.burst = await run('burst', `4: burst of 500 /imagine from 50 tenants in one tick, at 1:${BURST_SCALE}`, () => burst({ speed: BURST_SCALE }));
results.tight = await run('tight', '9: tight, 60 calls of 200 ms at 10/s, limit told, real time', () => tight({ told: true }));
results.tightUnknown = await run('tight', '9: tight, limit not told, real time', () => tight({ told: false }));
results.finishStream = await run('latency', '10: finish latency, status stream, real time', () => finishLatency({ stream: true }));
results.finishPoll = await run('latency', '10: finish latency, polling, real time', () => finishLatency({ stream: false }));
// cluster() reports each process count's failure itself; a failure outside them (Redis would not start) fails all three.
const distributed = await run('cluster', `8: distributed, 1, 2 and 4 processes on one Redis, 4 tenants × 250 images, at 1:${CATALOG_SCALE}`, () => cluster(scale));
if (isFailed(distributed)) results.cluster = [1, 2, 4].map((workers) => ({ workers, failed: distributed.failed }));
else if (distributed) results.cluster = distributed;

const saved: Saved = { results, machine: m, wallMs: Date.now() - started, loadAfter: os.loadavg().map((n) => n.toFixed(2)).join(' / ') };
const savedPath = path.join(os.tmpdir(), `af-bench-figures-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
await writeFile(savedPath, JSON.stringify(saved));
await publish(saved, outDir);
process.stdout.write(`Figures saved to ${savedPath} (BENCH_RENDER=${savedPath} npm run bench writes BENCHMARKS.md again from them).\n`);
