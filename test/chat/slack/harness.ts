/**
 * The real core (buildApp, local provider) + the real Bolt app of src/chat/slack + the Slack fake,
 * driven with requests signed as Slack signs them. Time is scaled: progress edits are spaced by
 * 100 ms here where production waits 2 s, unless a test asks for the production interval.
 */
import type { AppOverrides } from '../../../src/app.js';
import { isJobFinished } from '../../../src/core/engine.js';
import type { Job } from '../../../src/core/types.js';
import { readFacts } from '../../../src/chat/delivery/facts.js';
import { slackPage, slackTarget, type PageFacts, type SlackTarget } from '../../../src/chat/slack/platform.js';
import { startSlack, type SlackAdapter, type SlackOptions } from '../../../src/chat/slack/index.js';
import { pollUntil } from '../../fakes/http.js';
import {
  postBlockAction,
  postSigned,
  postSlashCommand,
  startFakeSlack,
  type FakeSlack,
  type FakeSlackMessage,
  type FakeSlackOptions,
  type SlackCall,
  type SlashCommandParams,
} from '../../fakes/slack.js';
import { buildApp, onCleanup } from '../../helpers.js';

export const SECRET = 'test-secret';

export interface SlackFacts extends SlackTarget {
  pages: PageFacts[];
  delivered: boolean;
}

/** What Slack's delivery stored about a job's messages (job.chat.slack), once its progress message is posted. */
export function factsOf(job: Pick<Job, 'chat'>): SlackFacts | undefined {
  const facts = readFacts(job.chat?.['slack'], slackTarget, slackPage);
  return facts.target && { ...facts.target, pages: facts.pages.map((page) => page ?? {}), delivered: facts.delivered };
}

export interface HarnessOptions {
  env?: Record<string, string>;
  fake?: FakeSlack;
  fakeOptions?: FakeSlackOptions;
  /** reuse a store + output folder (a restart) */
  dir?: string;
  /** @default 100 (scaled: production uses 2000) */
  updateIntervalMs?: number;
  /** replaces the providers built from config */
  providers?: AppOverrides['providers'];
  logger?: AppOverrides['logger'];
  /** Socket Mode tuning (with SLACK_APP_TOKEN in `env`): scaled reconnect and retry delays */
  socket?: SlackOptions['socket'];
}

export type Harness = Awaited<ReturnType<typeof slackHarness>>;

export async function slackHarness(options: HarnessOptions = {}) {
  const fake = options.fake ?? (await startFakeSlack(options.fakeOptions));
  if (!options.fake) onCleanup(() => fake.close());
  const app = await buildApp({
    env: {
      LOCAL_LATENCY_MS: '50',
      LOCAL_CONCURRENCY: '1',
      SLACK_BOT_TOKEN: 'xoxb-test',
      SLACK_SIGNING_SECRET: SECRET,
      SLACK_API_URL: fake.apiUrl,
      ...options.env,
    },
    ...(options.dir ? { dir: options.dir } : {}),
    ...(options.providers ? { providers: options.providers } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  });
  // As the composition root does: the adapter first, then the engine resumes unfinished jobs.
  const adapter: SlackAdapter = await startSlack(app, {
    port: 0,
    host: '127.0.0.1',
    updateIntervalMs: options.updateIntervalMs ?? 100,
    ...(options.socket ? { socket: options.socket } : {}),
  });
  onCleanup(() => adapter.stop());
  await app.engine.resume();
  const url = `http://127.0.0.1:${adapter.port}/slack/events`;

  const harness = {
    fake,
    app,
    adapter,
    url,
    imagine: (text: string, params: SlashCommandParams = {}) => postSlashCommand(url, SECRET, { command: '/imagine', text, ...params }),
    jobs: (params: SlashCommandParams = {}) => postSlashCommand(url, SECRET, { command: '/jobs', ...params }),
    settings: (text: string, params: SlashCommandParams = {}) => postSlashCommand(url, SECRET, { command: '/settings', text, ...params }),

    /** The next top-level progress message posted in `channel`, and the job it is about. */
    async progressPost(channel = 'C1', since = 0): Promise<{ call: SlackCall; ts: string; jobId: string }> {
      const call = await fake.waitFor(
        (c) => c.method === 'chat.postMessage' && c.ok && c.args.channel === channel && c.args.thread_ts === undefined,
        { since, timeoutMs: 10_000 },
      );
      const jobId = /Job `(\d{8}-[0-9a-f]{8})`/.exec(JSON.stringify(call.args.blocks))?.[1];
      if (!jobId) throw new Error('the progress message names no job');
      return { call, ts: String(call.response.ts), jobId };
    },

    /** Resolves once the job's gallery is fully posted and (unless told not to wait) its progress message says so. */
    async delivered(jobId: string, app2 = app, { waitForNote = true } = {}): Promise<{ job: Job; facts: SlackFacts }> {
      const { value } = await pollUntil(
        () => app2.engine.get(jobId),
        (job) => job !== undefined && isJobFinished(job) && factsOf(job)?.delivered === true,
        { timeoutMs: 15_000, intervalMs: 20 },
      );
      const facts = factsOf(value!)!;
      if (!waitForNote) return { job: value!, facts };
      await pollUntil(
        async () => fake.message(facts.channel, facts.ts),
        (message) => JSON.stringify(message?.blocks).includes('review them in the thread'),
        { timeoutMs: 10_000, intervalMs: 20 },
      );
      return { job: value!, facts };
    },

    /** Clicks a button of a message, as `user` of `team`. */
    click(message: FakeSlackMessage, button: Button, user = 'U1', team = 'T1', extra: { response_url?: string } = {}) {
      return postBlockAction(url, SECRET, {
        user: { id: user, username: `name-${user}`, team_id: team },
        team,
        channel: message.channel,
        message,
        actions: [{ action_id: button.action_id, value: button.value }],
        ...extra,
      });
    },

    /** A signed Events API callback saying the bot joined `channel`. */
    botJoined(channel: string) {
      const now = Date.now() / 1000;
      const body = JSON.stringify({
        token: 'verification-token',
        team_id: 'T1',
        api_app_id: 'A1',
        type: 'event_callback',
        event_id: `Ev${Math.floor(now * 1000)}`,
        event_time: Math.floor(now),
        authorizations: [{ team_id: 'T1', user_id: 'U0BOT', is_bot: true, is_enterprise_install: false }],
        event: { type: 'member_joined_channel', user: 'U0BOT', channel, channel_type: 'C', team: 'T1', event_ts: now.toFixed(6) },
      });
      return postSigned(url, SECRET, body, { contentType: 'application/json' });
    },
  };
  return harness;
}

export interface Button {
  action_id: string;
  value: string;
  text: { text: string };
  style?: string;
}

/** Every button of a message's blocks, in order. */
export function buttonsOf(message: { blocks?: unknown[] } | undefined): Button[] {
  const buttons: Button[] = [];
  for (const block of (message?.blocks ?? []) as { type: string; elements?: Button[] }[]) {
    if (block.type === 'actions') buttons.push(...(block.elements ?? []));
  }
  return buttons;
}

/** The button of `label` (Approve, Reject, Undo, Cancel) for image `index` (by its value). */
export function button(message: { blocks?: unknown[] } | undefined, label: string, index?: number): Button {
  const found = buttonsOf(message).find((b) => b.text.text === label && (index === undefined || b.value.endsWith(`:${index}`)));
  if (!found) throw new Error(`no ${label} button${index === undefined ? '' : ` for image ${index}`}`);
  return found;
}

export function textOf(message: { text?: string; blocks?: unknown[] } | undefined): string {
  return `${message?.text ?? ''}\n${JSON.stringify(message?.blocks ?? [])}`;
}

/** Every mrkdwn / plain text a chat call carries: its `text` and each text inside its blocks. */
export function textsOf(args: { text?: unknown; blocks?: unknown }): string[] {
  const texts: string[] = typeof args.text === 'string' ? [args.text] : [];
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(walk);
    else if (node && typeof node === 'object') {
      for (const [key, value] of Object.entries(node)) {
        if (key === 'text' && typeof value === 'string') texts.push(value);
        else walk(value);
      }
    }
  };
  walk(args.blocks);
  return texts;
}

/** Slack's three escapes undone: what the reader sees. */
export const unescapeMrkdwn = (text: string) => text.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
