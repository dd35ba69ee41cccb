/**
 * `npm run bench`: drives the real core (scheduler, providers, store, file writes) against the fake
 * fal queue server with scaled time, prints the table and writes BENCHMARKS.md. See bench/notes.ts for
 * what each figure means, and BENCHMARKS.md for the last run.
 */
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { benchmarksMd } from './notes.js';
import { consoleTable, machine, rows, type Results } from './report.js';
import { cluster } from './cluster.js';
import { burst, catalog, fairness } from './scenarios.js';

/** 1:5 for everything whose figure is a makespan or a wait (see "Scales, and why" in BENCHMARKS.md). */
const CATALOG_SCALE = 5;
/** 1:20 for the burst: its figure is real-time acceptance latency. */
const BURST_SCALE = 20;

const OUT = fileURLToPath(new URL('../BENCHMARKS.md', import.meta.url));

async function step<T>(label: string, run: () => Promise<T>): Promise<T> {
  const started = Date.now();
  process.stderr.write(`bench: ${label} …`);
  const result = await run();
  process.stderr.write(` ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  return result;
}

const m = machine();
const started = Date.now();
process.stderr.write(`bench: ${m.cpu}, ${m.cores} cores, Node ${m.node}, load ${m.load}\n`);
const scale = { speed: CATALOG_SCALE };
const results: Results = {
  catalogScale: CATALOG_SCALE,
  burstScale: BURST_SCALE,
  catalog: await step(`1, 3 (FIFO), 5, 6, 7: catalog of 1000 × ~1 MB, limit told, at 1:${CATALOG_SCALE}`, () =>
    catalog(scale, { bigImages: true, fifoGuest: true }),
  ),
  unknown: await step(`2: catalog, limit learned from 429s, at 1:${CATALOG_SCALE}`, () => catalog(scale, { bigImages: true, told: false, watch: false })),
  fairness: await step(`3: fairness, B's 4 images behind A's 1000, at 1:${CATALOG_SCALE}`, () => fairness(scale, { bigImages: true })),
  burst: await step(`4: burst of 500 /imagine from 50 tenants, at 1:${BURST_SCALE}`, () => burst({ speed: BURST_SCALE })),
};
const distributed = await step(`8: distributed, 1, 2 and 4 processes on one Redis, 4 tenants × 250 images, at 1:${CATALOG_SCALE}`, () => cluster(scale));
if (distributed) results.cluster = distributed;
const table = rows(results);
const wallMs = Date.now() - started;
process.stdout.write(`\n${consoleTable(table)}\n\n`);
await writeFile(OUT, benchmarksMd(results, table, m, wallMs, os.loadavg().map((n) => n.toFixed(2)).join(' / ')));
process.stdout.write(`Written to BENCHMARKS.md (${(wallMs / 1000).toFixed(0)} s).\n`);
