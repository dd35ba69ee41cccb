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
import { BenchChildError, howItEnded, OutputTail } from './fork.js';
import { idealMakespan, maxInWindow } from './ideal.js';
import type { Failed } from './report.js';
import { PROVIDER, type RunFigures, type Scale } from './scenarios.js';

const CHILD = fileURLToPath(new URL('./cluster-child.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const KEY = 'bench-key';
/** 4 tenants × 250 images: 250 calls, as scenario 1's catalog, now from four tenants at once. */
const TENANTS = 4;
const IMAGES_PER_TENANT = 250;

export interface ClusterFigures extends RunFigures {
  workers: number;
}

/** One process count's figures, or why it has none (the other counts still run). */
export type ClusterOutcome = ClusterFigures | (Failed & { workers: number });

const real = (scaledMs: number, { speed }: Scale) => scaledMs / speed;

/**
 * One bench process. Its end is taken from 'close' (after its IPC channel was read to the end, so no
 * answer sent before it exited is lost); its output is kept so that any failure shows it.
 */
class Child {
  private readonly messages: ClusterChildMessage[] = [];
  private readonly waiting: ((m: ClusterChildMessage) => void)[] = [];
  private readonly output: OutputTail;
  readonly process: ChildProcess;
  readonly exited: Promise<string>;

  constructor() {
    this.process = fork(CHILD, [], { cwd: ROOT, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    this.output = new OutputTail(this.process, true);
    this.process.on('message', (m: ClusterChildMessage) => {
      const next = this.waiting.shift();
      if (next) next(m);
      else this.messages.push(m);
    });
    // A failed send to a process that already died: its 'close' tells the rest.
    this.process.on('error', () => {});
    this.exited = new Promise((resolve) => this.process.once('close', (code, signal) => resolve(howItEnded(code, signal))));
  }

  /** Sends, unless the process is gone (then its next() reports why). */
  send(message: ClusterParentMessage): void {
    if (this.process.connected) this.process.send(message, () => {});
  }

  /** The child's next message; rejects (with its output) if it exits first or reports an error. */
  async next(): Promise<ClusterChildMessage> {
    const queued = this.messages.shift();
    const message =
      queued ??
      (await Promise.race([
        new Promise<ClusterChildMessage>((resolve) => this.waiting.push(resolve)),
        this.exited.then((how) => Promise.reject(new BenchChildError(`bench cluster process exited with ${how} before answering`, this.output.toString()))),
      ]));
    if (message.kind === 'error') throw new BenchChildError(`bench cluster process failed: ${message.message}`, this.output.toString());
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

/**
 * Scenario 8 for each worker count, or undefined (and a printed line) without a redis-server. A count
 * that fails is reported as such and the next one still runs.
 */
export async function cluster(scale: Scale, workerCounts = [1, 2, 4]): Promise<ClusterOutcome[] | undefined> {
  if (!hasRedisServer()) {
    process.stderr.write(`\nbench: scenario 8 skipped: ${INSTALL_HINT}\n`);
    return undefined;
  }
  const redis = await startRedisServer();
  try {
    const figures: ClusterOutcome[] = [];
    for (const workers of workerCounts) {
      try {
        figures.push(await runCluster(workers, scale, redis.url));
      } catch (error) {
        const failed = error instanceof Error ? error.message : String(error);
        process.stderr.write(`\nbench: scenario 8 with ${workers} process(es) failed, going on:\n${failed}\n`);
        figures.push({ workers, failed });
      }
    }
    return figures;
  } finally {
    await redis.stop();
  }
}
