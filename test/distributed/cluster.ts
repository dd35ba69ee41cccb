/**
 * A cluster for fault tests: several bot processes on the test Redis, one key prefix, one shared
 * output folder and one fal fake (its own account). Each process gets a fal key of its own, so the
 * fake's call log says which process sent what (the fake is started without a key: any is accepted).
 */
import path from 'node:path';
import type { App } from '../../src/app.js';
import type { FakeFal, RecordedCall } from '../fakes/fal.js';
import { botEnv } from '../bot-process.js';
import { buildApp, tempDir } from '../helpers.js';
import { redisUrl, testPrefix } from '../redis/redis.js';

export interface Cluster {
  /** env every process of the cluster shares (Redis, prefix, the fake, the shared OUTPUT_DIR) */
  env: Record<string, string>;
  /** the shared output folder */
  outputDir: string;
  /** the folder the child processes use as HOME */
  dir: string;
}

export async function cluster(fal: FakeFal, extra: Record<string, string> = {}): Promise<Cluster> {
  const dir = await tempDir('af-cluster-');
  const outputDir = path.join(dir, 'output');
  const env = {
    REDIS_URL: redisUrl,
    REDIS_PREFIX: testPrefix(),
    FAL_KEY: 'fal-shared',
    FAL_BASE_URL: fal.url,
    OUTPUT_DIR: outputDir,
    MAX_IMAGES_PER_JOB: '1000',
    TENANT_DAILY_IMAGES: '0',
    GLOBAL_DAILY_IMAGES: '0',
    ...extra,
  };
  return { env, outputDir, dir };
}

/** The fal key a process of the cluster calls with: `fal-<name>`. */
export function falKey(name: string): string {
  return `fal-${name}`;
}

/** Env of a real bot process (`art-factory start`, playground on a free port) in the cluster. */
export function processEnv(c: Cluster, name: string, extra: Record<string, string> = {}): Record<string, string> {
  return { ...botEnv(c.dir), ...c.env, FAL_KEY: falKey(name), ...extra };
}

/** A complete app in this test process, as a process of the cluster would build it. */
export function inProcess(c: Cluster, name: string, extra: Record<string, string> = {}): Promise<App & { dir: string }> {
  return buildApp({ env: { ...c.env, FAL_KEY: falKey(name), ...extra } });
}

/** Which process of the cluster sent a call (from its fal key), or undefined (image files carry none). */
export function sender(call: RecordedCall): string | undefined {
  return /^Key fal-(.+)$/.exec(call.headers.authorization ?? '')?.[1];
}

/** The request id a status, result or file call is about. */
export function requestIdOf(call: RecordedCall): string | undefined {
  return /\/requests\/([^/]+)/.exec(call.path)?.[1] ?? /^\/files\/([^/]+)\//.exec(call.path)?.[1];
}

export type CallKind = 'submit' | 'status' | 'result' | 'file' | 'other';

export function kindOf(call: RecordedCall): CallKind {
  if (call.path.startsWith('/files/')) return 'file';
  if (call.method === 'POST') return 'submit';
  if (call.method === 'GET' && /\/status(\/stream)?$/.test(call.path)) return 'status';
  if (call.method === 'GET' && /\/requests\/[^/]+$/.test(call.path)) return 'result';
  return 'other';
}

/** What one submit asked for: the batch it belongs to (a job's prompt and the batch's seed). */
export function batchKey(call: RecordedCall): string {
  const body = call.body as { prompt?: unknown; seed?: unknown };
  return JSON.stringify([body.prompt, body.seed]);
}

/**
 * Calls `listener` with each call the moment the fake records it: before the fake answers, so a
 * SIGKILL sent from here lands at an exact step of the sender (after a submit reached fal, before its
 * answer could be saved), not some polling interval later.
 */
export function onArrival(fal: FakeFal, listener: (call: RecordedCall) => void): void {
  const calls = fal.calls;
  const push = calls.push.bind(calls);
  calls.push = (...items: RecordedCall[]) => {
    const length = push(...items);
    for (const item of items) listener(item);
    return length;
  };
}
