/**
 * The scenarios: each starts the fake fal queue server here (the parent), runs the real core in a
 * child process against it, and turns both sides' records into figures in scaled time.
 */
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

async function withFake<T>(scale: Scale, bigImages: boolean, run: (fake: FakeFal) => Promise<T>): Promise<T> {
  const options: FakeFalOptions = bigImages ? { pngBytes: await noisePng(BIG_IMAGE.width, BIG_IMAGE.height) } : {};
  // The provider enforces its limit itself in every scenario: a 429 counted is a 429 the bot earned.
  const fake = await startFakeFal({
    key: KEY,
    latencyMs: real(PROVIDER.callMs, scale),
    rateLimit: { limit: PROVIDER.limit, intervalMs: real(PROVIDER.windowMs, scale) },
    ...options,
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
