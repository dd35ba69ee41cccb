/**
 * The core on in-memory ports: the real Engine with MemoryJobs, MemoryFiles and a ScriptedProvider,
 * no env, no SQLite, no disk, no sharp. Time is vitest's fake clock: production delays (1 s backoff,
 * 5-minute Retry-After caps) cost nothing, and every wait can be asserted to the millisecond.
 */
import { vi } from 'vitest';
import { Engine, type EngineSettings } from '../../src/core/engine.js';
import type { ImagineRequest, Requester } from '../../src/core/types.js';
import { MemoryFiles } from './memory-files.js';
import { MemoryJobs } from './memory-jobs.js';
import { ScriptedProvider } from './scripted-provider.js';

export interface MemoryCore {
  engine: Engine;
  jobs: MemoryJobs;
  files: MemoryFiles;
  provider: ScriptedProvider;
}

export interface MemoryCoreOptions {
  provider?: ScriptedProvider;
  jobs?: MemoryJobs;
  files?: MemoryFiles;
  settings?: Partial<EngineSettings>;
}

/** The production defaults where the core has them (backoff 1 s ×1.5 up to 10 s, poll interval from the provider). */
export function memoryCore(options: MemoryCoreOptions = {}): MemoryCore {
  const provider = options.provider ?? new ScriptedProvider();
  const jobs = options.jobs ?? new MemoryJobs();
  const files = options.files ?? new MemoryFiles();
  const engine = new Engine({
    jobs,
    files,
    providers: { [provider.name]: provider },
    settings: {
      lanes: { [provider.name]: { concurrency: 2 } },
      maxAttempts: 3,
      callTimeoutMs: 60_000,
      tenantMaxRunningJobs: 5,
      tenantMaxQueuedJobs: 10,
      prices: {},
      ...options.settings,
    },
  });
  return { engine, jobs, files, provider };
}

/**
 * Moves the fake clock from timer to timer until `work` settles, and returns its result. Each timer
 * fires at its own time, so what it starts sees that exact time.
 */
export async function settle<T>(work: Promise<T>, maxSteps = 10_000): Promise<T> {
  let settled = false;
  const watched = work.finally(() => (settled = true));
  watched.catch(() => {});
  for (let step = 0; !settled; step += 1) {
    if (step >= maxSteps) throw new Error(`still not settled after ${maxSteps} timers (at ${Date.now()} ms)`);
    await vi.advanceTimersToNextTimerAsync();
  }
  return watched;
}

export function request(count: number, extra: Partial<ImagineRequest> = {}): ImagineRequest {
  return { prompt: 'a red fox in snow', count, provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1', ...extra };
}

export function requester(tenant = 'guild-1', userId = 'user-1'): Requester {
  return { tenant, userId, userName: `name-${userId}`, platform: 'cli' };
}
