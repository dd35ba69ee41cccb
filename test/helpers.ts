/**
 * Builds the real core for a test: config from an env object (as the bot reads it), a SQLite store
 * and an output folder in a fresh temp dir, providers that can only reach loopback, and short
 * retry and poll delays (scaled time: 10 ms here stands for a second in production).
 */
import { createServer as createNetServer } from 'node:net';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, expect } from 'vitest';
import { UserError } from '../src/core/errors.js';
import { createApp, type App, type AppOverrides } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import type { Manifest } from '../src/core/manifest.js';
import type { Job } from '../src/core/types.js';
import { createLogger } from '../src/logger.js';
import { loopbackFetch } from './fakes/http.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** Runs after the current test, whatever its outcome. */
export function onCleanup(fn: () => Promise<void> | void): void {
  cleanups.push(async () => void (await fn()));
}

/** The error a promise rejects with (fails the test if it resolves). */
export async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** The UserError a synchronous call throws (fails the test if it returns). */
export function userErrorOf(run: () => unknown): UserError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(UserError);
    return error as UserError;
  }
  throw new Error('expected a rejection, got a result');
}

export async function tempDir(prefix = 'af-test-'): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface TestAppOptions extends AppOverrides {
  env?: Record<string, string>;
  /** reuse a folder (store + output) to simulate a restart */
  dir?: string;
}

export async function buildApp(options: TestAppOptions = {}): Promise<App & { dir: string }> {
  const dir = options.dir ?? (await tempDir());
  const config = loadConfig({
    STORE_URL: `sqlite://${path.join(dir, 'store.sqlite')}`,
    OUTPUT_DIR: path.join(dir, 'output'),
    TENANT_RATE_LIMIT: '',
    LOG_LEVEL: 'silent',
    ...options.env,
  });
  const app = await createApp(config, {
    logger: createLogger('silent'),
    fetch: loopbackFetch,
    requestTimeoutMs: 2_000,
    retryBaseMs: 10,
    retryMaxMs: 100,
    pollIntervalMs: 10,
    ...options,
  });
  let closed = false;
  const close = app.close.bind(app);
  app.close = async () => {
    if (closed) return;
    closed = true;
    await close();
  };
  onCleanup(() => app.close());
  return Object.assign(app, { dir });
}

export async function readManifest(app: App, jobId: string): Promise<Manifest> {
  return JSON.parse(await readFile(path.join(app.files.jobDir(jobId), 'manifest.json'), 'utf8')) as Manifest;
}

export async function filesIn(app: App, jobId: string, folder: string): Promise<string[]> {
  return (await readdir(path.join(app.files.jobDir(jobId), folder)).catch(() => [] as string[])).sort();
}

export const requester = (tenant = 'guild-1', userId = 'user-1'): Job['requester'] => ({
  tenant,
  userId,
  userName: `name-${userId}`,
  platform: 'cli',
});

/** Resolves when `predicate` holds, checking after each engine progress event. */
export function untilProgress(app: App, predicate: (job: Readonly<Job>) => boolean): Promise<Readonly<Job>> {
  return new Promise((resolve) => {
    const listener = (_: unknown, job: Readonly<Job>) => {
      if (!predicate(job)) return;
      app.engine.off('progress', listener);
      resolve(job);
    };
    app.engine.on('progress', listener);
  });
}

/** A free loopback port, for a server whose public address must be known before it starts (PUBLIC_URL). */
export async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
