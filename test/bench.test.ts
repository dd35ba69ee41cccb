// A smoke run of the benchmark's machinery (bench/): one tiny catalog through the real core in a child
// process against the fake. Structural facts only — timings are `npm run bench`'s business.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { catalogChart, inFlight, rollingStarts } from '../bench/chart.js';
import { BenchChildError, runInChild } from '../bench/fork.js';
import { idealMakespan, idealStarts, maxInWindow, percentile } from '../bench/ideal.js';
import { benchmarksMd, tightExcess } from '../bench/notes.js';
import type { CoreResult, CoreSpec } from '../bench/protocol.js';
import { attempt, machine, rows, type Results } from '../bench/report.js';
import { burstSpread, catalog, finishLatency, TIGHT, TIGHT_IDEAL_MS, type CatalogFigures, type TightFigures } from '../bench/scenarios.js';
import { startFakeFal } from './fakes/fal.js';
import { noisePng } from './fakes/png.js';

describe('bench: theoretical minimum', () => {
  it('is 145 s for 250 calls of 5 s at 10 concurrent and 100 per minute', () => {
    expect(idealMakespan({ calls: 250, concurrency: 10, callMs: 5_000, limit: 100, windowMs: 60_000 })).toBe(145_000);
  });

  it('is bound by concurrency alone when there is no rate limit', () => {
    expect(idealMakespan({ calls: 25, concurrency: 10, callMs: 100 })).toBe(300);
  });

  it('never starts more than the limit in any window', () => {
    const starts = idealStarts({ calls: 500, concurrency: 50, callMs: 10, limit: 100, windowMs: 1_000 });
    expect(maxInWindow(starts, 1_000)).toBe(100);
  });

  it('takes percentiles by rank', () => {
    expect(percentile([5, 1, 4, 2, 3], 50)).toBe(3);
    expect(percentile(Array.from({ length: 100 }, (_, i) => i + 1), 99)).toBe(99);
  });
});

describe('bench: the fake fal options it relies on', () => {
  it('answers 429 with Retry-After past `rateLimit` submits per window, and serves `pngBytes`', async () => {
    const png = await noisePng(64, 64);
    const fake = await startFakeFal({ latencyMs: 1, rateLimit: { limit: 2, intervalMs: 60_000 }, pngBytes: png });
    try {
      const submit = () =>
        fetch(`${fake.url}/fal-ai/flux/schnell`, { method: 'POST', body: JSON.stringify({ prompt: 'x', output_format: 'png' }) });
      // The fake's clock stands still while the three submits arrive: the third is told to wait out the
      // whole window, exactly, however long the machine took to send them.
      vi.useFakeTimers({ toFake: ['Date'] });
      let answers: Response[];
      try {
        answers = [await submit(), await submit(), await submit()];
      } finally {
        vi.useRealTimers();
      }
      expect(answers.map((r) => r.status)).toEqual([200, 200, 429]);
      expect(answers[2]!.headers.get('retry-after')).toBe('60');
      expect(await answers[2]!.clone().json()).toMatchObject({ retry_after: 60 });
      expect(fake.requests.size).toBe(2);
      expect(fake.submits().map((c) => c.fault ?? 'ok')).toEqual(['ok', 'ok', 'rate-limit']);
      const { request_id: id } = (await answers[0]!.json()) as { request_id: string };
      await new Promise((r) => setTimeout(r, 5));
      const file = await fetch(`${fake.url}/files/${id}/0.png`);
      expect(Buffer.from(await file.arrayBuffer()).equals(png)).toBe(true);
    } finally {
      await fake.close();
    }
  });

  it('makes noise that deflate cannot shrink: ~1 MB at 600×600', async () => {
    expect((await noisePng(600, 600)).length).toBeGreaterThan(1_000_000);
  });
});

describe('bench: catalog smoke run', () => {
  it('makes ceil(n/4) calls, delivers every image to disk and reports figures within their structural bounds', async () => {
    const images = 40;
    const figures = await catalog({ speed: 50 }, { images });
    expect(figures.callsFloor).toBe(10);
    expect(figures.calls).toBe(figures.callsFloor);
    expect(figures.delivered).toBe(images);
    expect(figures.files).toBe(images);
    expect(figures.rateLimited).toBe(0);
    // Nothing beats the theoretical minimum; how far above it depends on the machine, so no upper bound.
    expect(Number.isFinite(figures.ratio)).toBe(true);
    expect(figures.ratio).toBeGreaterThanOrEqual(1);
    expect(figures.makespanMs).toBeGreaterThanOrEqual(figures.idealMs);

    // Every call's request id is saved at once, so at least one save per call; a save per poll
    // (about ten per call here) or per progress tick would blow through three per image.
    expect(figures.store.saves).toBeGreaterThanOrEqual(figures.calls);
    expect(figures.store.saves).toBeLessThanOrEqual(3 * images);
    // The job record grows with its images, by well under a kilobyte each (no bytes, no history in it).
    expect(figures.store.jobKb).toBeGreaterThan(0);
    expect(figures.store.jobKb / images).toBeLessThan(1);

    // The watched progress: at least one edit while running and the final state flushed at the end;
    // every batch's completion reached an edit (a lost latest state would make its lag infinite).
    const edits = figures.edits!;
    expect(edits.finalFlushes).toBeGreaterThanOrEqual(1);
    expect(edits.sends).toBeGreaterThan(edits.finalFlushes);
    expect(Number.isFinite(edits.lagMaxMs)).toBe(true);
    expect(edits.lagP50Ms).toBeLessThanOrEqual(edits.lagMaxMs);

    // Peak memory is at least the baseline and, for 40 small images, far from a gigabyte.
    expect(figures.maxRssMb).toBeGreaterThanOrEqual(figures.baselineRssMb);
    expect(figures.maxRssMb).toBeLessThan(1024);
    expect(Number.isFinite(figures.cpuMsPerImage)).toBe(true);
    expect(figures.cpuMsPerImage).toBeGreaterThan(0);

    // Every call's finish is measured, across the two processes' clocks: no image is on disk before the
    // provider finished its call (but for Date.now()'s truncation), and the stages come in order.
    expect(figures.finish.measured).toBe(figures.calls);
    expect(figures.finish.minMs).toBeGreaterThan(-1);
    expect(figures.finish.stages.seen.p50Ms).toBeGreaterThan(-1);
    expect(figures.finish.stages.result.p50Ms).toBeGreaterThanOrEqual(0);
    expect(figures.finish.stages.images.p50Ms).toBeGreaterThanOrEqual(0);
    expect(figures.finish.streams).toBeGreaterThanOrEqual(figures.calls);
    // The provider's view for the chart: one start and one end per call, each end a call's length later.
    expect(figures.timeline.starts).toHaveLength(figures.calls);
    expect(figures.timeline.ends).toHaveLength(figures.calls);
    expect(figures.timeline.ends[0]! - figures.timeline.starts[0]!).toBeCloseTo(5_000, 0);
  }, 60_000);
});

describe('bench: a child that does not report', () => {
  // Plain .mjs children (no tsx): each test forks a process that misbehaves in one way.
  let dir: string;
  const spec = { requests: [] } as unknown as CoreSpec;
  const RESULT = { t0: 7, jobs: [] } as unknown as CoreResult;
  const child = async (name: string, code: string) => {
    const file = path.join(dir, `${name}.mjs`);
    await writeFile(file, code);
    return file;
  };
  const failure = (promise: Promise<unknown>) =>
    promise.then(
      () => {
        throw new Error('expected the run to fail');
      },
      (error: unknown) => error as BenchChildError,
    );

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'af-bench-test-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('exiting with code 0 at once is a clear error carrying what it printed', async () => {
    const file = await child('quits', `console.log('starting up'); console.error('nothing left to do'); process.exit(0);`);
    const error = await failure(runInChild(spec, { child: file, echo: false }));
    expect(error).toBeInstanceOf(BenchChildError);
    expect(error.message).toContain('bench child exited with code 0 before reporting');
    expect(error.output).toBe('starting up\nnothing left to do');
  });

  it('a loop that empties while awaiting a promise nothing settles is the same clear error, not a hang', async () => {
    const file = await child('stalls', `process.once('message', async () => { console.error('waiting for a job'); await new Promise(() => {}); process.send('never'); });`);
    const error = await failure(runInChild(spec, { child: file, echo: false }));
    expect(error.message).toContain('exited with code 0 before reporting');
    expect(error.output).toBe('waiting for a job');
  });

  it('an error it reports is the error, with its output', async () => {
    const file = await child('fails', `process.once('message', () => { console.error('about to fail'); process.send({ kind: 'error', message: 'Error: the store is gone' }, () => process.exit(1)); });`);
    const error = await failure(runInChild(spec, { child: file, echo: false }));
    expect(error.message).toContain('bench child failed: Error: the store is gone');
    expect(error.output).toBe('about to fail');
  });

  it('a result sent just before exiting always arrives (ten times over)', async () => {
    const file = await child('answers', `process.once('message', () => process.send({ kind: 'result', result: ${JSON.stringify(RESULT)} }, () => process.exit(0)));`);
    const results = await Promise.all(Array.from({ length: 10 }, () => runInChild(spec, { child: file, echo: false })));
    expect(results).toEqual(Array.from({ length: 10 }, () => RESULT));
  });

  it('one that never answers is killed at the timeout, with its output', async () => {
    const file = await child('hangs', `console.error('stuck'); setInterval(() => {}, 1000);`);
    const error = await failure(runInChild(spec, { child: file, echo: false, timeoutMs: 1_000 }));
    expect(error.message).toContain('gave no result within 1000 ms (killed)');
    expect(error.output).toBe('stuck');
  });
});

describe('bench: a failed scenario', () => {
  const FAILED = { failed: 'bench child exited with code 0 before reporting\n--- last output of the child ---\nwaiting for a job' };

  it('is attempted once, returned as failed with its message, and the next one still runs', async () => {
    const lines: string[] = [];
    const log = (line: string) => void lines.push(line);
    const first = await attempt('3: fairness', () => Promise.reject(new Error(FAILED.failed)), log);
    const second = await attempt('4: burst', () => Promise.resolve({ ok: true }), log);
    expect(first).toEqual(FAILED);
    expect(second).toEqual({ ok: true });
    expect(lines.join('')).toContain('FAILED');
    expect(lines.join('')).toContain('waiting for a job');
  });

  it('is one "failed: …" row, and BENCHMARKS.md still renders with its output', () => {
    const results: Results = { catalogScale: 5, burstScale: 20, catalog: FAILED, unknown: FAILED, fairness: FAILED, burst: FAILED, cluster: [{ workers: 1, ...FAILED }] };
    const table = rows(results);
    expect(table.map((row) => row.scenario)).toEqual([
      '1, 3 (FIFO), 5, 6, 7 Catalog run — failed',
      '2 Unknown limit — failed',
      '3 Fairness — fair queue — failed',
      '4 Burst — failed',
      '8 Distributed — 1 process — failed',
    ]);
    expect(table.every((row) => row.measured === 'failed: bench child exited with code 0 before reporting' && row.met === false)).toBe(true);
    const md = benchmarksMd(results, table, machine(), 1_000, '0 / 0 / 0');
    expect(md).toContain('## Failed runs');
    expect(md).toContain('### Fairness (scenario 3)');
    expect(md.split('waiting for a job').length - 1).toBe(5);
  });
});

describe('bench: the new runs, small', () => {
  it('polling run: the child builds the provider with statusStream false, so calls end by polls and no stream opens', async () => {
    const f = await finishLatency({ stream: false, jobs: 3 });
    expect(f.measured).toBe(3);
    expect(f.streams).toBe(0);
    expect(f.polls).toBeGreaterThanOrEqual(3);
    // Seen by a poll: after the provider finished, and never later than one interval (500 ms) plus the machine's slack.
    expect(f.stages.seen.p50Ms).toBeGreaterThan(-1);
    expect(f.minMs).toBeGreaterThan(-1);
  }, 60_000);

  it('spread burst: answers every request, each with its latency, and returns once all are answered', async () => {
    const f = await burstSpread({ speed: 50 }, { requests: 20, tenants: 5, spreadMs: 100 });
    expect(f.refused).toBe(0);
    expect(Number.isFinite(f.acceptP99Ms)).toBe(true);
    expect(f.acceptP50Ms).toBeLessThanOrEqual(f.acceptP99Ms);
    expect(f.saves).toBeGreaterThanOrEqual(20);
  }, 60_000);
});

describe('bench: the chart', () => {
  it('counts starts in the rolling window as the fake does: a start leaves it one window later', () => {
    expect(rollingStarts([0, 0, 500], 1_000)).toEqual([
      { t: 0, n: 2 },
      { t: 500, n: 3 },
      { t: 1_000, n: 1 },
      { t: 1_500, n: 0 },
    ]);
  });

  it('counts calls in flight, an end and a start at the same instant as one step', () => {
    expect(inFlight([0, 100, 300], [200, 300, 500])).toEqual([
      { t: 0, n: 1 },
      { t: 100, n: 2 },
      { t: 200, n: 1 },
      { t: 300, n: 1 },
      { t: 500, n: 0 },
    ]);
  });

  it('draws an SVG with both limits labelled, both schedules in the legend and a mark per 429', async () => {
    const starts = Array.from({ length: 12 }, (_, k) => k * 600);
    const c = { timeline: { starts, ends: starts.map((s) => s + 5_000), refused: [1_234] }, makespanMs: 12_000, idealMs: 10_000, ratio: 1.2, rateLimited: 1 };
    const svg = await catalogChart(c as unknown as CatalogFigures, 5);
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('limit: 100 per 60 s');
    expect(svg).toContain('limit: 10 in flight');
    expect(svg).toContain('fastest possible (the floor)');
    expect(svg).toContain('1 × 429 (red triangles)');
  });
});

describe('bench: the tight scenario in the table and the notes', () => {
  // Window by window: 10 starts 12 ms apart, each window opening 30 ms late; the job ends 40 ms after its last call.
  const starts = Array.from({ length: TIGHT.calls }, (_, k) => 50 + Math.floor(k / TIGHT.limit) * (TIGHT.windowMs + 30) + (k % TIGHT.limit) * 12);
  const ends = starts.map((s) => s + TIGHT.callMs);
  const makespanMs = Math.max(...ends) + 40;
  const tight = (told: boolean, rateLimited: number): TightFigures => {
    const finish = { measured: 60, calls: 60, minMs: 1, p50Ms: 20, p99Ms: 30, maxMs: 31, polls: 0, streams: 60, recordedP99Ms: 32, stages: { seen: { p50Ms: 1, p99Ms: 2 }, result: { p50Ms: 2, p99Ms: 3 }, images: { p50Ms: 15, p99Ms: 25 } } };
    return { told, images: 240, delivered: 240, calls: 60, makespanMs, idealMs: TIGHT_IDEAL_MS, ratio: makespanMs / TIGHT_IDEAL_MS, rateLimited, maxPerWindow: 10, maxInFlight: 10, finish, timeline: { starts, ends, refused: [] } };
  };

  it('splits the time above the floor exactly: first start, late windows, the last window\'s submits, the tail', () => {
    const e = tightExcess(tight(true, 0));
    expect(e.first).toBe(50);
    expect(e.reopen).toEqual([30, 30, 30, 30, 30]);
    expect(e.spread).toBe(108);
    expect(e.lastCall).toBe(0);
    expect(e.tail).toBe(40);
    expect(e.first + e.reopen.reduce((a, b) => a + b, 0) + e.spread + e.lastCall + e.tail).toBe(makespanMs - TIGHT_IDEAL_MS);
  });

  it('holds the told run to ≤ 1.05× with no 429 and the other to ≤ 1.25×, and explains a miss with its figures', () => {
    const results: Results = { catalogScale: 5, burstScale: 20, only: ['tight'], tight: tight(true, 0), tightUnknown: tight(false, 2) };
    const table = rows(results);
    expect(table.map((row) => [row.target, row.met])).toEqual([
      ['≤ 1.05×, 0', false], // 5.55 s against 5.2 s: 1.07×
      ['≤ 1.25×', true],
    ]);
    const md = benchmarksMd(results, table, machine(), 1_000, '0 / 0 / 0');
    expect(md).toContain('### Tight (scenario 9)');
    expect(md).toContain('- 50 ms before the first submit reached the provider');
    expect(md).toContain('150 ms in all (30 ms, 30 ms, 30 ms, 30 ms, 30 ms)');
    expect(md).toContain('- 108 ms from the last window');
    expect(md).toContain('**Runs**: only tight (BENCH_ONLY)');
    // Not asked for: no distributed row, not even "skipped".
    expect(md).not.toContain('8 Distributed');
  });
});
