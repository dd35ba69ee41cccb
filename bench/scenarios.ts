/**
 * The scenarios: each starts the fake fal queue server here (the parent), runs the real core in a
 * child process against it, and turns both sides' records into figures in scaled time.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ImageFiles } from '../src/store/files.js';
import { startFakeFal, type FakeFal, type FakeFalOptions } from '../test/fakes/fal.js';
import { noisePng } from '../test/fakes/png.js';
import { runInChild } from './fork.js';
import { idealMakespan, maxInWindow, percentile } from './ideal.js';
import type { BenchRequest, CoreResult, CoreSpec } from './protocol.js';

/** The provider of the issue, in scaled (production) milliseconds. */
export const PROVIDER = { callMs: 5_000, limit: 100, windowMs: 60_000, concurrency: 10, imagesPerCall: 4 };
export const EDIT_INTERVAL_MS = 1_500;
/** a chat edit's own round trip (Discord PATCH), scaled */
export const EDIT_ROUND_TRIP_MS = 150;
const KEY = 'bench-key';

/** speed 20 = 1:20: a 5 s call lasts 250 real ms. */
export interface Scale {
  speed: number;
}

const real = (scaledMs: number, { speed }: Scale) => scaledMs / speed;

function coreSpec(fake: FakeFal, scale: Scale, told: boolean, requests: BenchRequest[], extra: Partial<CoreSpec> = {}): CoreSpec {
  return {
    falUrl: fake.url,
    falKey: KEY,
    concurrency: PROVIDER.concurrency,
    ...(told ? { rateLimit: { limit: PROVIDER.limit, intervalMs: real(PROVIDER.windowMs, scale) } } : {}),
    // A status poll every tenth of a call, retries from a (scaled) second: the engine's own defaults, scaled.
    pollIntervalMs: real(PROVIDER.callMs / 10, scale),
    retryBaseMs: real(1_000, scale),
    env: {},
    requests,
    ...extra,
  };
}

/** ~1.08 MB: what a flux PNG weighs, and incompressible, so nothing downstream can shrink it. */
const BIG_IMAGE = { width: 600, height: 600 };

async function withFake<T>(scale: Scale, bigImages: boolean, run: (fake: FakeFal) => Promise<T>, overrides: FakeFalOptions = {}): Promise<T> {
  const options: FakeFalOptions = bigImages ? { pngBytes: await noisePng(BIG_IMAGE.width, BIG_IMAGE.height) } : {};
  // The provider enforces its limit itself in every scenario: a 429 counted is a 429 the bot earned.
  const fake = await startFakeFal({
    key: KEY,
    latencyMs: real(PROVIDER.callMs, scale),
    rateLimit: { limit: PROVIDER.limit, intervalMs: real(PROVIDER.windowMs, scale) },
    ...options,
    ...overrides,
  });
  try {
    return await run(fake);
  } finally {
    await fake.close();
  }
}

const imagine = (count: number, label = 'a red fox in snow') => `${label} --count ${count} --ar 16:9 --provider fal`;

/** What the provider saw. */
function providerSide(fake: FakeFal, scale: Scale) {
  const submits = fake.submits();
  const accepted = submits.filter((c) => !c.fault).map((c) => c.at);
  return {
    calls: fake.requests.size,
    rateLimited: submits.filter((c) => c.fault === 'rate-limit').length,
    maxPerWindow: maxInWindow(accepted, real(PROVIDER.windowMs, scale)),
  };
}

function idealFor(images: number): number {
  return idealMakespan({
    calls: Math.ceil(images / PROVIDER.imagesPerCall),
    concurrency: PROVIDER.concurrency,
    callMs: PROVIDER.callMs,
    limit: PROVIDER.limit,
    windowMs: PROVIDER.windowMs,
  });
}

export interface CatalogFigures {
  images: number;
  delivered: number;
  files: number;
  calls: number;
  callsFloor: number;
  makespanMs: number;
  idealMs: number;
  ratio: number;
  rateLimited: number;
  maxPerWindow: number;
  cpuMsPerImage: number;
  maxRssMb: number;
  baselineRssMb: number;
  /** child CPU ÷ wall time: near or above 1, the figure measured the machine, not the queue */
  cpuLoad: number;
  store: { saves: number; msPerSave: number; jobKb: number; busyShare: number };
  edits?: { sends: number; maxPerInterval: number; finalFlushes: number; perSecond: number; lagP50Ms: number; lagMaxMs: number };
  /** with `fifoGuest`: the guest's time from request to done, in calls */
  guestCalls?: number;
  /** the provider's view of the job's calls, for the chart */
  timeline: Timeline;
  /** provider done → the call's images on disk, real ms, under the catalog's load */
  finish: FinishFigures;
}

/**
 * What the provider saw of a run, in scaled ms since the first request: when each accepted call
 * started (its submit arrived) and finished, and when a submit was refused with a 429.
 */
export interface Timeline {
  starts: number[];
  ends: number[];
  refused: number[];
}

function timelineOf(fake: FakeFal, t0: number, scale: Scale, prompt?: string): Timeline {
  const scaled = (epoch: number) => (epoch - t0) * scale.speed;
  const calls = [...fake.requests.values()].filter((r) => prompt === undefined || r.input.prompt === prompt);
  return {
    starts: calls.map((r) => scaled(r.createdAt)).sort((a, b) => a - b),
    ends: calls.map((r) => scaled(r.completedAt)).sort((a, b) => a - b),
    refused: fake.submits().filter((c) => c.fault === 'rate-limit').map((c) => scaled(c.at)),
  };
}

export interface FinishFigures {
  /** calls measured (those that delivered their images alone) of all calls made */
  measured: number;
  calls: number;
  /** the smallest: never below 0 (nothing is on disk before the provider has it), but for the clocks' 1 ms */
  minMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** how the run learned of calls' ends: status polls and status streams opened, at the fake */
  polls: number;
  streams: number;
  /** the same up to the first progress event showing the batch done (recorded in the job) */
  recordedP99Ms: number;
  /** where the time goes, p50 / p99 of each stage: done → the core knows (stream event or poll), → result, → images on disk */
  stages: { seen: Spread; result: Spread; images: Spread };
}

export interface Spread {
  p50Ms: number;
  p99Ms: number;
}

const spread = (values: number[]): Spread => ({ p50Ms: percentile(values, 50), p99Ms: percentile(values, 99) });

/**
 * For every call that delivered its images: the fake's completion time (`createdAt + latencyMs`, the
 * instant its status turns COMPLETED, read from Date.now() in this process) → the child's time of its
 * last image file written (performance.timeOrigin + performance.now() there: the same wall clock).
 */
function finishFigures(fake: FakeFal, result: CoreResult): FinishFigures {
  const lags: number[] = [];
  const recordedLags: number[] = [];
  const stages = { seen: [] as number[], result: [] as number[], images: [] as number[] };
  for (const call of result.calls) {
    const request = fake.requests.get(call.requestId);
    if (!request) continue;
    lags.push(call.onDiskAt - request.completedAt);
    if (call.recordedAt !== undefined) recordedLags.push(call.recordedAt - request.completedAt);
    if (call.seenAt === undefined || call.fetchedAt === undefined) continue;
    stages.seen.push(call.seenAt - request.completedAt);
    stages.result.push(call.fetchedAt - call.seenAt);
    stages.images.push(call.onDiskAt - call.fetchedAt);
  }
  return {
    measured: lags.length,
    calls: fake.requests.size,
    minMs: lags.length ? Math.min(...lags) : NaN,
    p50Ms: percentile(lags, 50),
    p99Ms: percentile(lags, 99),
    maxMs: lags.length ? Math.max(...lags) : NaN,
    polls: fake.statusPolls(),
    streams: fake.statusStreams(),
    recordedP99Ms: percentile(recordedLags, 99),
    stages: { seen: spread(stages.seen), result: spread(stages.result), images: spread(stages.images) },
  };
}

const CATALOG_PROMPT = 'a red fox in snow';
const GUEST_PROMPT = 'a blue whale';
/** Scenario 3's second tenant: 4 images, 10 s (scaled) after the first request. */
const guest = (scale: Scale, tenant: string): BenchRequest => ({ atMs: real(10_000, scale), tenant, user: 'user-b', text: imagine(4, GUEST_PROMPT) });
/** A's 1000 and B's 4 must both fit one tenant's daily cap when B shares A's tenant id (FIFO). */
const SHARED_CAP = { TENANT_DAILY_IMAGES: '100000' };

export interface CatalogOptions {
  images?: number;
  /** whether the bot is told the provider's limit */
  told?: boolean;
  bigImages?: boolean;
  /** put a LatestThrottle on the job's progress (scenario 6) */
  watch?: boolean;
  /** scenario 3's FIFO: B's 4 images join A's own queue (same tenant id) 10 s in; A's job runs as if alone */
  fifoGuest?: boolean;
}

/** Scenarios 1, 2, 5, 6 and 7 (and 3's FIFO): one tenant, one big job. */
export async function catalog(scale: Scale, options: CatalogOptions = {}): Promise<CatalogFigures> {
  const { images = 1000, told = true, bigImages = false, watch = true, fifoGuest = false } = options;
  return withFake(scale, bigImages, async (fake) => {
    const requests = [{ atMs: 0, tenant: 'guild-1', user: 'user-1', text: imagine(images, CATALOG_PROMPT) }, ...(fifoGuest ? [guest(scale, 'guild-1')] : [])];
    const spec = coreSpec(fake, scale, told, requests, {
      ...(fifoGuest ? { env: SHARED_CAP } : {}),
      ...(watch ? { watch: { request: 0, throttleMs: real(EDIT_INTERVAL_MS, scale), editMs: real(EDIT_ROUND_TRIP_MS, scale) } } : {}),
    });
    const result = await runInChild(spec);
    const job = result.jobs[0]!;
    if (job.finishedAt === undefined) throw new Error(`catalog: the job did not finish (${job.refused ?? job.state})`);
    const b = result.jobs[1];
    if (fifoGuest && (b?.finishedAt === undefined || b.images !== 4)) throw new Error(`catalog: B did not finish (${b?.refused ?? b?.state})`);
    const delivered = result.jobs.reduce((sum, j) => sum + j.images, 0);
    const makespanMs = job.finishedAt * scale.speed;
    const idealMs = idealFor(images);
    return {
      images,
      delivered: job.images,
      files: job.files,
      ...providerSide(fake, scale),
      calls: [...fake.requests.values()].filter((r) => r.input.prompt === CATALOG_PROMPT).length,
      callsFloor: Math.ceil(images / PROVIDER.imagesPerCall),
      makespanMs,
      idealMs,
      ratio: makespanMs / idealMs,
      cpuMsPerImage: (result.cpuUserMs + result.cpuSystemMs) / Math.max(1, delivered),
      maxRssMb: result.maxRssMb,
      baselineRssMb: result.baselineRssMb,
      cpuLoad: (result.cpuUserMs + result.cpuSystemMs) / job.finishedAt,
      store: {
        saves: result.store.saves,
        msPerSave: result.store.saveMs / Math.max(1, result.store.saves),
        jobKb: result.store.lastJobBytes / 1024,
        // saves of one job are serial (Engine.change holds a per-job chain), so their sum is time the job waited on them
        busyShare: (result.store.saveMs + result.store.manifestMs) / job.finishedAt,
      },
      ...(result.edits ? { edits: editFigures(result, scale, job.finishedAt) } : {}),
      ...(b?.finishedAt !== undefined ? { guestCalls: (b.finishedAt - real(10_000, scale)) / real(PROVIDER.callMs, scale) } : {}),
      timeline: timelineOf(fake, result.t0, scale, CATALOG_PROMPT),
      finish: finishFigures(fake, result),
    };
  });
}

function editFigures(result: CoreResult, scale: Scale, finishedAt: number): NonNullable<CatalogFigures['edits']> {
  const { sends, batchDoneAt } = result.edits!;
  // The adapter flushes the final state when the job finishes (LatestThrottle.flush sends at once, by design).
  const progress = sends.filter((s) => s.at < finishedAt);
  const lags = batchDoneAt.map((doneAt, k) => {
    const shown = sends.find((s) => s.batchesDone >= k + 1);
    return shown ? (shown.at - doneAt) * scale.speed : Infinity;
  });
  // Sends within one interval of each other (a hair under it, for timer granularity) break the rule.
  const interval = real(EDIT_INTERVAL_MS, scale) * 0.98;
  return {
    sends: sends.length,
    maxPerInterval: maxInWindow(progress.map((s) => s.at), interval),
    finalFlushes: sends.length - progress.length,
    perSecond: progress.length / ((finishedAt * scale.speed) / 1000),
    lagP50Ms: percentile(lags, 50),
    lagMaxMs: Math.max(...lags),
  };
}

export interface FairnessFigures {
  /** B's time from request to done, in calls */
  fairCalls: number;
  rateLimited: number;
}

/** Scenario 3, fair queue: tenant B's 4 images 10 s after tenant A's 1000. Stops once B is done. */
export async function fairness(scale: Scale, { bigImages = false } = {}): Promise<FairnessFigures> {
  return withFake(scale, bigImages, async (fake) => {
    const requests = [{ atMs: 0, tenant: 'guild-a', user: 'user-a', text: imagine(1000) }, guest(scale, 'guild-b')];
    const result = await runInChild(coreSpec(fake, scale, true, requests, { env: SHARED_CAP, stopWhenFinished: [1] }));
    const b = result.jobs[1]!;
    if (b.finishedAt === undefined || b.images !== 4) throw new Error(`fairness: B did not finish (${b.refused ?? b.state})`);
    return { fairCalls: (b.finishedAt - real(10_000, scale)) / real(PROVIDER.callMs, scale), rateLimited: providerSide(fake, scale).rateLimited };
  });
}

export interface BurstFigures {
  requests: number;
  tenants: number;
  refused: number;
  acceptP50Ms: number;
  acceptP99Ms: number;
  acceptMaxMs: number;
  finished: number;
  allImages: boolean;
  /** first request → last job finished, scaled */
  makespanMs: number;
  /** the theoretical minimum for its calls */
  idealMs: number;
  msPerSave: number;
  cpuMsPerImage: number;
}

/** Scenario 4: 500 /imagine requests from 50 tenants at the same moment. Real (unscaled) latencies. */
export async function burst(scale: Scale, { requests = 500, tenants = 50 } = {}): Promise<BurstFigures> {
  return withFake(scale, false, async (fake) => {
    const list: BenchRequest[] = Array.from({ length: requests }, (_, k) => ({
      atMs: 0,
      tenant: `guild-${k % tenants}`,
      user: `user-${k}`,
      text: `a lighthouse at dusk, take ${k} --count 1 --ar 1:1 --provider fal`,
    }));
    const env = { TENANT_MAX_RUNNING_JOBS: '100', TENANT_MAX_QUEUED_JOBS: '1000', USER_MAX_ACTIVE_JOBS: '1000' };
    const result = await runInChild(coreSpec(fake, scale, true, list, { env }));
    const accepted = result.jobs.filter((j) => j.acceptMs !== undefined).map((j) => j.acceptMs!);
    return {
      requests,
      tenants,
      refused: result.jobs.filter((j) => j.refused).length,
      acceptP50Ms: percentile(accepted, 50),
      acceptP99Ms: percentile(accepted, 99),
      acceptMaxMs: Math.max(...accepted),
      finished: result.jobs.filter((j) => j.state === 'completed').length,
      allImages: result.jobs.every((j) => j.images === 1 && j.files === 1),
      makespanMs: Math.max(...result.jobs.map((j) => j.finishedAt ?? NaN)) * scale.speed,
      idealMs: idealFor(requests * PROVIDER.imagesPerCall),
      msPerSave: result.store.saveMs / Math.max(1, result.store.saves),
      cpuMsPerImage: (result.cpuUserMs + result.cpuSystemMs) / Math.max(1, requests),
    };
  });
}

export interface BurstSpreadFigures {
  requests: number;
  tenants: number;
  spreadMs: number;
  refused: number;
  acceptP50Ms: number;
  acceptP99Ms: number;
  acceptMaxMs: number;
  /** job saves while accepting: how many, and their average wall time (group-committed, durable) */
  saves: number;
  msPerSave: number;
  saveMaxMs: number;
  /** how late the child's event loop ran meanwhile */
  loopP99Ms: number;
  loopMaxMs: number;
}

/**
 * Scenario 4, as arrivals really come: the same 500 requests from 50 tenants, one every 2 ms over one
 * second (tenants in turn), to a core that has already run one job (warm). Real latencies; the run
 * stops once every request is answered, so the calls the engine started meanwhile are work it does
 * while accepting, and nothing after.
 */
export async function burstSpread(scale: Scale, { requests = 500, tenants = 50, spreadMs = 1_000 } = {}): Promise<BurstSpreadFigures> {
  return withFake(scale, false, async (fake) => {
    const list: BenchRequest[] = Array.from({ length: requests }, (_, k) => ({
      atMs: (k * spreadMs) / requests,
      tenant: `guild-${k % tenants}`,
      user: `user-${k}`,
      text: `a lighthouse at dusk, take ${k} --count 1 --ar 1:1 --provider fal`,
    }));
    const env = { TENANT_MAX_RUNNING_JOBS: '100', TENANT_MAX_QUEUED_JOBS: '1000', USER_MAX_ACTIVE_JOBS: '1000' };
    const result = await runInChild(coreSpec(fake, scale, true, list, { env, acceptOnly: true, warmUp: true }));
    const accepted = result.jobs.filter((j) => j.acceptMs !== undefined).map((j) => j.acceptMs!);
    return {
      requests,
      tenants,
      spreadMs,
      refused: result.jobs.filter((j) => j.refused).length,
      acceptP50Ms: percentile(accepted, 50),
      acceptP99Ms: percentile(accepted, 99),
      acceptMaxMs: Math.max(...accepted),
      saves: result.store.saves,
      msPerSave: result.store.saveMs / Math.max(1, result.store.saves),
      saveMaxMs: result.store.saveMaxMs,
      loopP99Ms: result.loopDelay.p99Ms,
      loopMaxMs: result.loopDelay.maxMs,
    };
  });
}

/**
 * Scenario 9's provider, in real time (no scaling): 60 calls of 200 ms, at most 10 starts in any
 * rolling second and 10 in flight. One job of 240 images (4 per call) from one tenant, so that only
 * the lane's gate (its rate window and its slots) stands between the job and the provider: no other
 * job, no tenant turn-taking, one admission.
 */
export const TIGHT = { calls: 60, callMs: 200, limit: 10, windowMs: 1_000, concurrency: 10, imagesPerCall: 4 };
const TIGHT_PROMPT = 'a paper crane on a desk';

/** The floor for the tight scenario: bench/ideal.ts for its numbers (5.2 s: 10 starts a second, then the last call). */
export const TIGHT_IDEAL_MS = idealMakespan({
  calls: TIGHT.calls,
  concurrency: TIGHT.concurrency,
  callMs: TIGHT.callMs,
  limit: TIGHT.limit,
  windowMs: TIGHT.windowMs,
});

/** One run against the floor, as the provider saw it: what the tight and the distributed scenarios report. */
export interface RunFigures {
  images: number;
  delivered: number;
  calls: number;
  makespanMs: number;
  idealMs: number;
  ratio: number;
  rateLimited: number;
  maxPerWindow: number;
  maxInFlight: number;
}

export interface TightFigures extends RunFigures {
  told: boolean;
  finish: FinishFigures;
  /** the provider's view, real ms since the request */
  timeline: Timeline;
}

/** Scenario 9: the rate gate at the provider's exact limit, told it (`told`) or learning it from 429s. */
export async function tight({ told }: { told: boolean }): Promise<TightFigures> {
  const images = TIGHT.calls * TIGHT.imagesPerCall;
  const limit = { limit: TIGHT.limit, intervalMs: TIGHT.windowMs };
  return withFake(
    { speed: 1 },
    false,
    async (fake) => {
      const spec: CoreSpec = {
        falUrl: fake.url,
        falKey: KEY,
        concurrency: TIGHT.concurrency,
        ...(told ? { rateLimit: limit } : {}),
        // Real time: the engine's own poll interval and retry delays, as in production.
        env: {},
        requests: [{ atMs: 0, tenant: 'guild-1', user: 'user-1', text: imagine(images, TIGHT_PROMPT) }],
      };
      const result = await runInChild(spec);
      const job = result.jobs[0]!;
      if (job.finishedAt === undefined) throw new Error(`tight: the job did not finish (${job.refused ?? job.state})`);
      const side = providerSide(fake, { speed: 1 });
      const accepted = fake.submits().filter((c) => !c.fault).map((c) => c.at);
      return {
        told,
        images,
        delivered: job.images,
        calls: side.calls,
        makespanMs: job.finishedAt,
        idealMs: TIGHT_IDEAL_MS,
        ratio: job.finishedAt / TIGHT_IDEAL_MS,
        rateLimited: side.rateLimited,
        maxPerWindow: maxInWindow(accepted, TIGHT.windowMs),
        maxInFlight: fake.maxInFlight(),
        finish: finishFigures(fake, result),
        timeline: timelineOf(fake, result.t0, { speed: 1 }),
      };
    },
    { latencyMs: TIGHT.callMs, rateLimit: limit },
  );
}

/**
 * Scenario 10's workload, in real time: 50 jobs of 4 ~1 MB images from 10 tenants, one every 200 ms,
 * calls of 1.0–1.5 s (varied, so that a call's end falls anywhere between two polls, as real calls'
 * do), 10 in flight, the limit (10/s) told and never reached: nothing but the call itself stands
 * between a request and its images.
 */
export const FINISH = { jobs: 50, everyMs: 200, tenants: 10, minCallMs: 1_000, callSpreadMs: 500, concurrency: 10, limit: 10, windowMs: 1_000 };

/** Scenario 10: provider done → the call's images on disk, with the status stream or (`stream: false`) polling. */
export async function finishLatency({ stream, jobs = FINISH.jobs }: { stream: boolean; jobs?: number }): Promise<FinishFigures> {
  const limit = { limit: FINISH.limit, intervalMs: FINISH.windowMs };
  return withFake(
    { speed: 1 },
    true,
    async (fake) => {
      // A different call length every few ms (the fake gives each submit the latency set when it
      // arrives): 137 is prime to the 500 ms spread, so the lengths cover it evenly.
      let step = 0;
      const vary = setInterval(() => fake.setLatency(FINISH.minCallMs + ((step += 1) * 137) % FINISH.callSpreadMs), 7);
      try {
        const requests: BenchRequest[] = Array.from({ length: jobs }, (_, k) => ({
          atMs: k * FINISH.everyMs,
          tenant: `guild-${k % FINISH.tenants}`,
          user: `user-${k}`,
          text: imagine(4, `a tide pool, take ${k}`),
        }));
        const result = await runInChild({
          falUrl: fake.url,
          falKey: KEY,
          concurrency: FINISH.concurrency,
          rateLimit: limit,
          // Real time: the engine's own poll interval (500 ms for fal) and retry delays.
          statusStream: stream,
          env: { TENANT_MAX_RUNNING_JOBS: '100', TENANT_MAX_QUEUED_JOBS: '1000', USER_MAX_ACTIVE_JOBS: '1000' },
          requests,
        });
        const unfinished = result.jobs.filter((j) => j.state !== 'completed');
        if (unfinished.length > 0) throw new Error(`finish latency: ${unfinished.length} jobs did not complete (${unfinished[0]!.refused ?? unfinished[0]!.state})`);
        return finishFigures(fake, result);
      } finally {
        clearInterval(vary);
      }
    },
    { latencyMs: FINISH.minCallMs, rateLimit: limit },
  );
}

export interface ImageWriteFigures {
  images: number;
  /** CPU (user + system, every thread) per image of ImageFiles.writeImage alone */
  cpuMsPerImage: number;
  wallMsPerImage: number;
}

/**
 * Scenario 7's yardstick: what keeping one ~1 MB image costs on its own — ImageFiles.writeImage of
 * the catalog's noise PNG from memory (streamed to disk and checked on the way — format, header, chunk CRCs — then renamed), one
 * at a time in this process, with no download, no engine and no store around it.
 */
export async function imageWriteCost(images = 24): Promise<ImageWriteFigures> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'af-bench-write-'));
  try {
    const files = new ImageFiles(dir, { maxBytes: 64 * 2 ** 20 });
    const png = await noisePng(BIG_IMAGE.width, BIG_IMAGE.height);
    // A first round, not counted: the check's code is compiled hot, as it is in a running bot.
    for (let k = 0; k < images; k += 1) await files.writeImage('warm-up', `w${k}`, png);
    const cpu0 = process.cpuUsage();
    const started = performance.now();
    for (let k = 0; k < images; k += 1) await files.writeImage('bench', String(k).padStart(3, '0'), png);
    const wall = performance.now() - started;
    const cpu = process.cpuUsage(cpu0);
    return { images, cpuMsPerImage: (cpu.user + cpu.system) / 1000 / images, wallMsPerImage: wall / images };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
