/**
 * The child process of a benchmark run: the real core (config → store → providers → engine) and
 * nothing else, so its CPU time and peak RSS are ours alone; the fake provider runs in the parent.
 * Receives one CoreSpec over IPC, runs it, sends back a CoreResult and exits.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseImagineText } from '../commands/imagine.js';
import { createApp, type App } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { LatestThrottle } from '../src/core/throttle.js';
import type { Job, ProgressEvent } from '../src/core/types.js';
import { createLogger } from '../src/logger.js';
import { loopbackFetch } from '../test/fakes/http.js';
import type { ChildMessage, CoreResult, CoreSpec, JobOutcome } from './protocol.js';

async function build(spec: CoreSpec, dir: string): Promise<App> {
  const config = loadConfig({
    FAL_KEY: spec.falKey,
    FAL_BASE_URL: spec.falUrl,
    FAL_CONCURRENCY: String(spec.concurrency),
    STORE_URL: `sqlite://${path.join(dir, 'store.sqlite')}`,
    OUTPUT_DIR: path.join(dir, 'output'),
    MAX_IMAGES_PER_JOB: '1000',
    TENANT_RATE_LIMIT: '',
    // speed is measured here, not quotas: no cap across tenants
    GLOBAL_DAILY_IMAGES: '0',
    HEALTH_PORT: 'off',
    PLAYGROUND: 'off',
    LOG_LEVEL: 'silent',
    ...spec.env,
  });
  // Rates are scaled (100 per 3 s), which N/s|min|h cannot spell: set the parsed value directly.
  if (spec.rateLimit) config.fal!.rateLimit = spec.rateLimit;
  return createApp(config, {
    logger: createLogger('silent'),
    fetch: loopbackFetch,
    retryBaseMs: spec.retryBaseMs,
    pollIntervalMs: spec.pollIntervalMs,
  });
}

/** Times every job save and manifest write (wrapping the instances the engine holds, nothing else). */
function instrumentStore(app: App): CoreResult['store'] {
  const store = { saves: 0, saveMs: 0, manifests: 0, manifestMs: 0, lastJobBytes: 0 };
  const save = app.jobs.save.bind(app.jobs);
  app.jobs.save = async (job) => {
    const started = performance.now();
    try {
      return await save(job);
    } finally {
      store.saves += 1;
      store.saveMs += performance.now() - started;
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

export async function runCore(spec: CoreSpec): Promise<CoreResult> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'af-bench-'));
  const app = await build(spec, dir);
  const { engine } = app;
  const store = instrumentStore(app);
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

    const baselineRssMb = process.memoryUsage().rss / 2 ** 20;
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
    await done;
    const cpu = process.cpuUsage(cpu0);

    for (const outcome of outcomes) {
      const job = outcome.jobId ? finished.get(outcome.jobId) : undefined;
      if (!job) continue;
      outcome.finishedAt = Date.parse(job.finishedAt ?? job.updatedAt) - t0;
      outcome.state = job.state;
      outcome.images = job.images.length;
      outcome.files = await countFiles(app, job.id);
      store.lastJobBytes = Math.max(store.lastJobBytes, JSON.stringify(job).length);
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
