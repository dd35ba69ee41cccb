/**
 * `npm run bench`: drives the real core (scheduler, providers, store, file writes) against the fake
 * fal queue server with scaled time, prints the table and writes BENCHMARKS.md. See bench/notes.ts for
 * what each figure means, and BENCHMARKS.md for the last run.
 */
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { benchmarksMd } from './notes.js';
import { attempt, consoleTable, isFailed, machine, rows, type Results } from './report.js';
import { cluster } from './cluster.js';
import { burst, catalog, fairness } from './scenarios.js';

/** 1:5 for everything whose figure is a makespan or a wait (see "Scales, and why" in BENCHMARKS.md). */
const CATALOG_SCALE = 5;
/** 1:20 for the burst: its figure is real-time acceptance latency. */
const BURST_SCALE = 20;

const OUT = fileURLToPath(new URL('../BENCHMARKS.md', import.meta.url));

const m = machine();
const started = Date.now();
process.stderr.write(`bench: ${m.cpu}, ${m.cores} cores, Node ${m.node}, load ${m.load}\n`);
const scale = { speed: CATALOG_SCALE };
// Each scenario is attempted: one that fails (its child exits early, errors or hangs) becomes a
// "failed: …" row with the child's output, and the others still run and BENCHMARKS.md is written.
const results: Results = {
  catalogScale: CATALOG_SCALE,
  burstScale: BURST_SCALE,
  catalog: await attempt(`1, 3 (FIFO), 5, 6, 7: catalog of 1000 × ~1 MB, limit told, at 1:${CATALOG_SCALE}`, () =>
    catalog(scale, { bigImages: true, fifoGuest: true }),
  ),
  unknown: await attempt(`2: catalog, limit learned from 429s, at 1:${CATALOG_SCALE}`, () => catalog(scale, { bigImages: true, told: false, watch: false })),
  fairness: await attempt(`3: fairness, B's 4 images behind A's 1000, at 1:${CATALOG_SCALE}`, () => fairness(scale, { bigImages: true })),
  burst: await attempt(`4: burst of 500 /imagine from 50 tenants, at 1:${BURST_SCALE}`, () => burst({ speed: BURST_SCALE })),
};
// cluster() reports each process count's failure itself; a failure outside them (Redis would not start) fails all three.
const distributed = await attempt(`8: distributed, 1, 2 and 4 processes on one Redis, 4 tenants × 250 images, at 1:${CATALOG_SCALE}`, () => cluster(scale));
if (isFailed(distributed)) results.cluster = [1, 2, 4].map((workers) => ({ workers, failed: distributed.failed }));
else if (distributed) results.cluster = distributed;
const table = rows(results);
const wallMs = Date.now() - started;
process.stdout.write(`\n${consoleTable(table)}\n\n`);
await writeFile(OUT, benchmarksMd(results, table, m, wallMs, os.loadavg().map((n) => n.toFixed(2)).join(' / ')));
process.stdout.write(`Written to BENCHMARKS.md (${(wallMs / 1000).toFixed(0)} s).\n`);
