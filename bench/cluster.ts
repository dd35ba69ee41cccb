/**
 * Scenario 8, distributed mode: 1, 2 and 4 worker processes on one Redis share one provider account
 * (the fake fal server here, enforcing its limit). Each process is the real app with REDIS_URL; the
 * first one also takes the requests. The figure is the makespan ÷ the theoretical minimum for the
 * calls, and the 429s the provider had to send. Skipped (with a line) without a redis-server.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFakeFal } from '../test/fakes/fal.js';
import { hasRedisServer, INSTALL_HINT, startRedisServer } from '../test/redis/server.js';
import type { ClusterChildMessage, ClusterChildSpec, ClusterParentMessage, ClusterRequest } from './cluster-child.js';
import { idealMakespan, maxInWindow } from './ideal.js';
import { PROVIDER, type Scale } from './scenarios.js';

const CHILD = fileURLToPath(new URL('./cluster-child.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const KEY = 'bench-key';
/** 4 tenants × 250 images: 250 calls, as scenario 1's catalog, now from four tenants at once. */
const TENANTS = 4;
const IMAGES_PER_TENANT = 250;

export interface ClusterFigures {
  workers: number;
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

const real = (scaledMs: number, { speed }: Scale) => scaledMs / speed;

class Child {
  private readonly messages: ClusterChildMessage[] = [];
  private readonly waiting: ((m: ClusterChildMessage) => void)[] = [];
  readonly process: ChildProcess;
  readonly exited: Promise<number | null>;

  constructor() {
    this.process = fork(CHILD, [], { cwd: ROOT, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.process.on('message', (m: ClusterChildMessage) => {
      const next = this.waiting.shift();
      if (next) next(m);
      else this.messages.push(m);
    });
    this.exited = new Promise((resolve) => this.process.once('exit', resolve));
  }

  send(message: ClusterParentMessage): void {
    this.process.send(message);
  }

  /** The child's next message; rejects if it exits first or reports an error. */
  async next(): Promise<ClusterChildMessage> {
    const queued = this.messages.shift();
    const message =
      queued ??
      (await Promise.race([
        new Promise<ClusterChildMessage>((resolve) => this.waiting.push(resolve)),
        this.exited.then((code) => Promise.reject(new Error(`bench cluster process exited with code ${code} before answering`))),
      ]));
    if (message.kind === 'error') throw new Error(`bench cluster process failed: ${message.message}`);
    return message;
  }
}

async function runCluster(workers: number, scale: Scale, redisUrl: string): Promise<ClusterFigures> {
  const windowMs = real(PROVIDER.windowMs, scale);
  const fake = await startFakeFal({ key: KEY, latencyMs: real(PROVIDER.callMs, scale), rateLimit: { limit: PROVIDER.limit, intervalMs: windowMs } });
  const outputDir = await mkdtemp(path.join(os.tmpdir(), 'af-bench-cluster-'));
  const children = Array.from({ length: workers }, () => new Child());
  try {
    const spec: ClusterChildSpec = {
      redisUrl,
      prefix: `bench${workers}x${Date.now().toString(36)}`,
      outputDir,
      falUrl: fake.url,
      falKey: KEY,
      concurrency: PROVIDER.concurrency,
      rateLimit: { limit: PROVIDER.limit, intervalMs: windowMs },
      pollIntervalMs: real(PROVIDER.callMs / 10, scale),
      retryBaseMs: real(1_000, scale),
    };
    // One at a time: the first creates the shared folder's marker the others check.
    for (const child of children) {
      child.send({ kind: 'start', spec });
      await child.next();
    }
    const requests: ClusterRequest[] = Array.from({ length: TENANTS }, (_, t) => ({ tenant: `guild-${t}`, prompt: `tenant ${t}: a red fox in snow`, count: IMAGES_PER_TENANT }));
    children[0]!.send({ kind: 'submit', requests });
    const result = await children[0]!.next();
    if (result.kind !== 'result') throw new Error('bench cluster: expected a result');
    const images = TENANTS * IMAGES_PER_TENANT;
    const calls = Math.ceil(IMAGES_PER_TENANT / PROVIDER.imagesPerCall) * TENANTS;
    const makespanMs = (Math.max(...result.finishedAt) - result.t0) * scale.speed;
    const idealMs = idealMakespan({ calls, concurrency: PROVIDER.concurrency, callMs: PROVIDER.callMs, limit: PROVIDER.limit, windowMs: PROVIDER.windowMs });
    const submits = fake.submits();
    const accepted = submits.filter((c) => !c.fault);
    return {
      workers,
      images,
      delivered: result.images,
      calls: accepted.length,
      makespanMs,
      idealMs,
      ratio: makespanMs / idealMs,
      rateLimited: submits.filter((c) => c.fault === 'rate-limit').length,
      maxPerWindow: maxInWindow(accepted.map((c) => c.at), windowMs),
      maxInFlight: fake.maxInFlight(),
    };
  } finally {
    for (const child of children) child.send({ kind: 'stop' });
    await Promise.race([Promise.all(children.map((c) => c.exited)), new Promise((r) => setTimeout(r, 15_000))]);
    for (const child of children) child.process.kill('SIGKILL');
    await fake.close();
    await rm(outputDir, { recursive: true, force: true });
  }
}

/** Scenario 8 for each worker count, or undefined (and a printed line) without a redis-server. */
export async function cluster(scale: Scale, workerCounts = [1, 2, 4]): Promise<ClusterFigures[] | undefined> {
  if (!hasRedisServer()) {
    process.stderr.write(`\nbench: scenario 8 skipped: ${INSTALL_HINT}\n`);
    return undefined;
  }
  const redis = await startRedisServer();
  try {
    const figures: ClusterFigures[] = [];
    for (const workers of workerCounts) figures.push(await runCluster(workers, scale, redis.url));
    return figures;
  } finally {
    await redis.stop();
  }
}
