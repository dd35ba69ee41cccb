/**
 * The child process of a benchmark run: the real core (config → store → providers → engine) and
 * nothing else, so its CPU time and peak RSS are ours alone; the fake provider runs in the parent.
 * Receives one CoreSpec over IPC, runs it, sends back a CoreResult and exits.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseImagineText } from '../commands/imagine.js';
import { createApp, type App } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { LatestThrottle } from '../src/core/throttle.js';
import type { CallStatus, Provider } from '../src/core/provider.js';
import type { Job, ProgressEvent } from '../src/core/types.js';
import { createLogger } from '../src/logger.js';
import { createDownloader, FAL_MEDIA_HOSTS } from '../src/providers/download.js';
import { FalProvider } from '../src/providers/fal.js';
import { loopbackFetch } from '../test/fakes/http.js';
import { benchEnv, type CallFinish, type ChildMessage, type CoreResult, type CoreSpec, type JobOutcome } from './protocol.js';

/** Epoch ms with sub-millisecond resolution, on the wall clock the parent's Date.now() reads. */
const epochNow = () => performance.timeOrigin + performance.now();

async function build(spec: CoreSpec, dir: string): Promise<App> {
  const config = loadConfig({
    ...benchEnv(spec),
    STORE_URL: `sqlite://${path.join(dir, 'store.sqlite')}`,
    OUTPUT_DIR: path.join(dir, 'output'),
    ...spec.env,
  });
  // Rates are scaled (100 per 3 s), which N/s|min|h cannot spell: set the parsed value directly.
  if (spec.rateLimit) config.fal!.rateLimit = spec.rateLimit;
  // Polling instead of the status stream is a provider option no setting spells: build the provider
  // here as createProviders does (same download policy: fal's hosts and the fake's origin, trusted).
  const providers =
    spec.statusStream === false
      ? {
          fal: new FalProvider({
            key: spec.falKey,
            baseUrl: spec.falUrl,
            fetch: loopbackFetch,
            statusStream: false,
            download: createDownloader({
              mediaHosts: FAL_MEDIA_HOSTS,
              trustedOrigins: [new URL(spec.falUrl).origin],
              extraHosts: config.downloadHosts,
              maxBytes: config.maxImageBytes,
            }),
          }),
        }
      : undefined;
  return createApp(config, {
    logger: createLogger('silent'),
    fetch: loopbackFetch,
    ...(providers ? { providers } : {}),
    ...(spec.retryBaseMs !== undefined ? { retryBaseMs: spec.retryBaseMs } : {}),
    ...(spec.pollIntervalMs !== undefined ? { pollIntervalMs: spec.pollIntervalMs } : {}),
  });
}

/**
 * When each image file was written (epoch), by job and file name: wraps the writeImage of the instance
 * the engine holds. A call's images are on disk once the last of them is.
 */
function instrumentWrites(app: App): Map<string, number> {
  const written = new Map<string, number>();
  const writeImage = app.files.writeImage.bind(app.files);
  app.files.writeImage = async (jobId, baseName, source) => {
    const stored = await writeImage(jobId, baseName, source);
    written.set(`${jobId}/${path.basename(stored.file)}`, epochNow());
    return stored;
  };
  return written;
}

/** Per request id (epoch): when the core learned the call had ended (stream or poll), and when its result arrived. */
interface CallStages {
  seen: Map<string, number>;
  fetched: Map<string, number>;
}

/**
 * Notes each call's stages by wrapping the fal provider instance the engine holds (its status stream,
 * its status polls, its result). Only the first time counts: a call is seen ended once.
 */
function instrumentProvider(app: App): CallStages {
  const stages: CallStages = { seen: new Map(), fetched: new Map() };
  const fal = app.providers.fal;
  if (!fal) return stages;
  const mark = (map: Map<string, number>, requestId: string) => void (map.has(requestId) || map.set(requestId, epochNow()));
  const ended = (status: CallStatus) => status.state !== 'queued' && status.state !== 'running';
  const { watch, status, result } = { watch: fal.watch?.bind(fal), status: fal.status.bind(fal), result: fal.result.bind(fal) };
  Object.assign(fal, {
    ...(watch
      ? {
          watch: async (requestId: string, model: string, signal: AbortSignal) => {
            const answer = await watch(requestId, model, signal);
            if (ended(answer)) mark(stages.seen, requestId);
            return answer;
          },
        }
      : {}),
    status: async (requestId: string, model: string, signal?: AbortSignal) => {
      const answer = await status(requestId, model, signal);
      if (ended(answer)) mark(stages.seen, requestId);
      return answer;
    },
    result: async (requestId: string, model: string, signal?: AbortSignal) => {
      const answer = await result(requestId, model, signal);
      mark(stages.fetched, requestId);
      return answer;
    },
  } satisfies Partial<Provider>);
  return stages;
}

/**
 * The calls of a finished job that delivered their batch's images alone (one request id, every image
 * delivered), with when the last of those images was written. Batches retried with a second call, or
 * topped up after a partial output, are left out: their images came from more than one call.
 */
function callFinishes(job: Job, written: Map<string, number>, recorded: Map<string, number>, stages: CallStages): CallFinish[] {
  const out: CallFinish[] = [];
  for (const batch of job.batches) {
    const requestId = batch.requestIds.length === 1 ? batch.requestIds[0]! : undefined;
    if (!requestId || batch.state !== 'done' || batch.delivered !== batch.size) continue;
    const times = job.images.filter((image) => image.batchIndex === batch.index).map((image) => written.get(`${job.id}/${path.basename(image.file)}`));
    if (times.length !== batch.size || times.some((t) => t === undefined)) continue;
    const recordedAt = recorded.get(`${job.id}/${batch.index}`);
    const [seenAt, fetchedAt] = [stages.seen.get(requestId), stages.fetched.get(requestId)];
    out.push({
      requestId,
      images: batch.size,
      onDiskAt: Math.max(...(times as number[])),
      ...(recordedAt !== undefined ? { recordedAt } : {}),
      ...(seenAt !== undefined ? { seenAt } : {}),
      ...(fetchedAt !== undefined ? { fetchedAt } : {}),
    });
  }
  return out;
}

/** Times every job save and manifest write (wrapping the instances the engine holds, nothing else). */
function instrumentStore(app: App): CoreResult['store'] {
  const store = { saves: 0, saveMs: 0, saveMaxMs: 0, manifests: 0, manifestMs: 0, lastJobBytes: 0 };
  const save = app.jobs.save.bind(app.jobs);
  app.jobs.save = async (job) => {
    const started = performance.now();
    try {
      return await save(job);
    } finally {
      const took = performance.now() - started;
      store.saves += 1;
      store.saveMs += took;
      store.saveMaxMs = Math.max(store.saveMaxMs, took);
    }
  };
  const writeManifest = app.files.writeManifest.bind(app.files);
  app.files.writeManifest = async (jobId, manifest) => {
    const started = performance.now();
    try {
      return await writeManifest(jobId, manifest);
    } finally {
      store.manifests += 1;
      store.manifestMs += performance.now() - started;
    }
  };
  return store;
}

async function countFiles(app: App, jobId: string): Promise<number> {
  const dir = path.join(app.files.jobDir(jobId), 'pending-review');
  return (await readdir(dir).catch(() => [] as string[])).filter((f) => !f.includes('.part-')).length;
}

/**
 * One 1-image job accepted and finished before the run, as on a bot that has been up a while: the
 * first use of each path (the store's statements, the provider's client, the image check) is then
 * not what the run's first requests pay.
 */
async function warmUp(app: App): Promise<void> {
  const { engine } = app;
  let id: string | undefined;
  let ended = false;
  let resolve: () => void = () => {};
  const done = new Promise<void>((r) => (resolve = r));
  const onFinished = (job: Job) => {
    if (job.requester.tenant !== 'warm-up') return;
    ended = true;
    if (id === undefined || job.id === id) resolve();
  };
  engine.on('finished', onFinished);
  try {
    const parsed = parseImagineText('warming up --count 1 --ar 1:1 --provider fal', app.limits);
    id = (await engine.submit(parsed, { tenant: 'warm-up', userId: 'warm-up', platform: 'playground' })).id;
    if (ended) resolve();
    await done;
  } finally {
    engine.off('finished', onFinished);
  }
}

export async function runCore(spec: CoreSpec): Promise<CoreResult> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'af-bench-'));
  const app = await build(spec, dir);
  const { engine } = app;
  const store = instrumentStore(app);
  const written = instrumentWrites(app);
  const stages = instrumentProvider(app);
  /** `jobId/batchIndex` → epoch of the first progress event showing that batch done */
  const recorded = new Map<string, number>();
  let t0 = 0;
  try {
    const outcomes: JobOutcome[] = spec.requests.map((_, request) => ({ request, images: 0, files: 0 }));
    const finished = new Map<string, Job>();
    let allAccepted = false;
    let settle: () => void = () => {};
    const done = new Promise<void>((resolve) => (settle = resolve));
    const check = () => {
      if (allAccepted && outcomes.every((o) => o.refused || (o.jobId && finished.has(o.jobId)))) settle();
    };

    // The watched job, as a chat adapter sees it: every progress event offered to a LatestThrottle.
    const watch = spec.watch;
    const watchedUser = watch ? spec.requests[watch.request]!.user : undefined;
    const sends: { at: number; batchesDone: number }[] = [];
    const batchDoneAt: number[] = [];
    const throttle = watch
      ? new LatestThrottle<ProgressEvent>({
          intervalMs: watch.throttleMs,
          send: async (_key, state) => {
            sends.push({ at: Date.now() - t0, batchesDone: state.batchesDone });
            await sleep(watch.editMs); // the chat platform's round trip for one edit
          },
        })
      : undefined;
    engine.on('progress', (event, job) => {
      // Every batch newly done (the event's currentBatch is only the one that moved last).
      const now = epochNow();
      for (const batch of job.batches) if (batch.state === 'done' && !recorded.has(`${job.id}/${batch.index}`)) recorded.set(`${job.id}/${batch.index}`, now);
      if (!throttle || job.requester.userId !== watchedUser) return;
      while (batchDoneAt.length < event.batchesDone) batchDoneAt.push(Date.now() - t0);
      throttle.push(event.jobId, event);
    });

    let stopping = false;
    engine.on('finished', (job) => {
      finished.set(job.id, job);
      if (throttle && job.requester.userId === watchedUser) void throttle.flush(job.id).then(() => throttle.forget(job.id));
      const stopAfter = spec.stopWhenFinished;
      if (stopAfter && !stopping && stopAfter.every((r) => outcomes[r]!.jobId && finished.has(outcomes[r]!.jobId))) {
        stopping = true;
        for (const active of engine.activeJobs()) void engine.cancel(active.id, { id: 'bench' }).catch(() => {});
      }
      check();
    });

    if (spec.warmUp) {
      await warmUp(app);
      Object.assign(store, { saves: 0, saveMs: 0, saveMaxMs: 0, manifests: 0, manifestMs: 0, lastJobBytes: 0 });
    }
    const baselineRssMb = process.memoryUsage().rss / 2 ** 20;
    const loop = monitorEventLoopDelay({ resolution: 5 });
    loop.enable();
    const cpu0 = process.cpuUsage();
    t0 = Date.now();
    const limits = app.limits;
    const accept = async (index: number): Promise<void> => {
      const request = spec.requests[index]!;
      const wait = t0 + request.atMs - Date.now();
      if (wait > 0) await sleep(wait);
      const arrived = Math.max(t0 + request.atMs, t0);
      const outcome = outcomes[index]!;
      try {
        const parsed = parseImagineText(request.text, limits);
        const job = await engine.submit(parsed, { tenant: request.tenant, userId: request.user, platform: 'playground' });
        const now = Date.now();
        Object.assign(outcome, { jobId: job.id, acceptMs: now - arrived, acceptedAt: now - t0 });
      } catch (error) {
        outcome.refused = (error as Error).message;
      }
    };
    await Promise.all(spec.requests.map((_, index) => accept(index)));
    allAccepted = true;
    check();
    // acceptOnly: the jobs are left to the engine's stop (below); none of them is reported finished.
    if (!spec.acceptOnly) await done;
    const cpu = process.cpuUsage(cpu0);
    loop.disable();
    const calls: CallFinish[] = [];

    for (const outcome of outcomes) {
      const job = outcome.jobId ? finished.get(outcome.jobId) : undefined;
      if (!job) continue;
      outcome.finishedAt = Date.parse(job.finishedAt ?? job.updatedAt) - t0;
      outcome.state = job.state;
      outcome.images = job.images.length;
      outcome.files = await countFiles(app, job.id);
      store.lastJobBytes = Math.max(store.lastJobBytes, JSON.stringify(job).length);
      calls.push(...callFinishes(job, written, recorded, stages));
    }
    await sleep(watch ? watch.editMs * 2 : 0); // let the final flush land
    return {
      t0,
      jobs: outcomes,
      cpuUserMs: cpu.user / 1000,
      cpuSystemMs: cpu.system / 1000,
      baselineRssMb,
      maxRssMb: process.resourceUsage().maxRSS / 1024,
      store,
      ...(watch ? { edits: { sends, batchDoneAt } } : {}),
      calls,
      loopDelay: { p99Ms: loop.percentile(99) / 1e6, maxMs: loop.max / 1e6 },
    };
  } finally {
    await app.close();
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.send) {
  // Nothing keeps the child alive but the run's own work: if it waits on something that never comes
  // (a job whose end is never reported), Node would exit with 0 and say nothing. Say it instead.
  let reported = false;
  process.once('beforeExit', () => {
    if (reported) return;
    reported = true;
    process.send!({ kind: 'error', message: 'the event loop emptied before the run finished (a job never reported its end)' } satisfies ChildMessage, () =>
      process.exit(1),
    );
  });
  process.once('message', (spec: CoreSpec) => {
    runCore(spec).then(
      (result) => {
        reported = true;
        process.send!({ kind: 'result', result } satisfies ChildMessage, () => process.exit(0));
      },
      (error: unknown) => {
        reported = true;
        const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
        process.send!({ kind: 'error', message } satisfies ChildMessage, () => process.exit(1));
      },
    );
  });
}
