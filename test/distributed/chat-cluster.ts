/**
 * Chat processes on one Redis, for the distributed delivery tests: each is a complete app (its own
 * connections and BullMQ workers, as a process would have) with its chat adapter, sharing the Redis
 * prefix and the output folder with the others, and one chat fake between them all.
 */
import path from 'node:path';
import type { App } from '../../src/app.js';
import { isJobFinished } from '../../src/core/engine.js';
import type { Job } from '../../src/core/types.js';
import { startSlack, type SlackAdapter } from '../../src/chat/slack/index.js';
import { pollUntil } from '../fakes/http.js';
import { postSlashCommand, type FakeSlack, type FakeSlackMessage } from '../fakes/slack.js';
import { buildApp, onCleanup, tempDir } from '../helpers.js';
import { redisUrl, testPrefix } from '../redis/redis.js';
import { factsOf, SECRET, type SlackFacts } from '../chat/slack/harness.js';

/** What every process of one cluster shares: Redis and its prefix, the output folder. */
export async function clusterEnv(extra: Record<string, string> = {}): Promise<Record<string, string>> {
  const shared = await tempDir();
  return {
    REDIS_URL: redisUrl,
    REDIS_PREFIX: testPrefix(),
    OUTPUT_DIR: path.join(shared, 'output'),
    LOCAL_LATENCY_MS: '40',
    LOCAL_CONCURRENCY: '2',
    TENANT_DAILY_IMAGES: '0',
    GLOBAL_DAILY_IMAGES: '0',
    ...extra,
  };
}

/** Short lock lapses: nobody dies here, but a failing test should not hang on a lock for long. */
export const LOCKS = { queueLockMs: 5_000, jobLockMs: 5_000 };

export interface SlackProcess {
  app: App & { dir: string };
  adapter: SlackAdapter;
  /** its receiver's URL; undefined for a process that takes no commands */
  url: string | undefined;
  token: string;
}

export interface SlackProcessOptions {
  /** the bot token this process calls Slack with (the fake records it per call) @default 'xoxb-test' */
  token?: string;
  receive?: boolean;
  /** @default 100 (scaled: production waits 2 s) */
  updateIntervalMs?: number;
  env?: Record<string, string>;
  /** runs before the adapter starts (and so before its delivery looks at the outbox) */
  beforeStart?: (app: App) => void;
}

export async function slackProcess(fake: FakeSlack, env: Record<string, string>, options: SlackProcessOptions = {}): Promise<SlackProcess> {
  const token = options.token ?? 'xoxb-test';
  const app = await buildApp({
    env: { SLACK_BOT_TOKEN: token, SLACK_SIGNING_SECRET: SECRET, SLACK_API_URL: fake.apiUrl, ...env, ...options.env },
    ...LOCKS,
  });
  options.beforeStart?.(app);
  // As the composition root does: the adapter first, then the engine resumes unfinished jobs.
  const adapter = await startSlack(app, {
    port: 0,
    host: '127.0.0.1',
    updateIntervalMs: options.updateIntervalMs ?? 100,
    ...(options.receive === false ? { receive: false } : {}),
  });
  onCleanup(() => adapter.stop());
  await app.engine.resume();
  return { app, adapter, url: adapter.port === undefined ? undefined : `http://127.0.0.1:${adapter.port}/slack/events`, token };
}

/** Sends /imagine to one process's receiver; resolves with the HTTP status of the ack. */
export async function imagine(process: SlackProcess, text: string, params: { user_id?: string } = {}): Promise<number> {
  if (!process.url) throw new Error('this process takes no commands');
  return (await postSlashCommand(process.url, SECRET, { command: '/imagine', text, ...params })).status;
}

export const topLevel = (fake: FakeSlack, channel = 'C1'): FakeSlackMessage[] => fake.messages(channel).filter((m) => m.thread_ts === undefined);

export const jobIdIn = (message: { blocks?: unknown[] | undefined }): string | undefined =>
  /Job `(\d{8}-[0-9a-f]{8})`/.exec(JSON.stringify(message.blocks))?.[1];

/** Resolves once the job's gallery is fully posted and its progress message says so. */
export async function delivered(fake: FakeSlack, app: App, jobId: string): Promise<{ job: Job; facts: SlackFacts }> {
  const { value } = await pollUntil(
    () => app.engine.get(jobId),
    (job) => job !== undefined && isJobFinished(job) && factsOf(job)?.delivered === true,
    { timeoutMs: 20_000, intervalMs: 20 },
  );
  const facts = factsOf(value!)!;
  await pollUntil(
    async () => fake.message(facts.channel, facts.ts),
    (message) => JSON.stringify(message?.blocks).includes('review them in the thread'),
    { timeoutMs: 10_000, intervalMs: 20 },
  );
  return { job: value!, facts };
}

/** Records, per job, which of the apps emitted an engine event for it (by index in `apps`). */
export function eventsByApp(apps: App[], event: 'progress' | 'finished'): Map<string, number[]> {
  const seen = new Map<string, number[]>();
  apps.forEach((app, index) => {
    const note = (job: Readonly<Job>) => {
      const list = seen.get(job.id) ?? [];
      if (!list.includes(index)) list.push(index);
      seen.set(job.id, list);
    };
    if (event === 'progress') app.engine.on('progress', (_, job) => note(job));
    else app.engine.on('finished', note);
  });
  return seen;
}

/** The gaps, in ms, between consecutive calls of `method` on one message (by `ts`), in arrival order. */
export function gapsOf(fake: FakeSlack, method: string, ts: string): number[] {
  const at = fake
    .calls(method)
    .filter((call) => call.args.ts === ts)
    .map((call) => call.at);
  return at.slice(1).map((time, i) => time - at[i]!);
}
