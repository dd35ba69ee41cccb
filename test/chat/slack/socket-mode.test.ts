/**
 * Socket Mode end to end: the adapter's normal start-up with SLACK_APP_TOKEN set, so the real Bolt
 * SocketModeReceiver, against the Socket Mode fake (apps.connections.open and the WebSocket), which
 * forwards every other Web API call to the Web API fake. Time is scaled: a reconnect waits 500 ms where
 * production waits 5 s, and a failed apps.connections.open is retried after 20 ms (production: 1 s,
 * doubling to a minute).
 */
import { describe, expect, it } from 'vitest';
import { isJobFinished } from '../../../src/core/engine.js';
import { createLogger } from '../../../src/logger.js';
import { startFakeSocketMode, type FakeSocketMode } from '../../fakes/slack-socket.js';
import { startFakeSlack, type FakeSlackMessage } from '../../fakes/slack.js';
import { filesIn, onCleanup } from '../../helpers.js';
import { button, buttonsOf, slackHarness, textOf, type Button, type HarnessOptions } from './harness.js';

const SOCKET_TUNING = { pingTimeoutMs: 500, retry: { retries: 10, factor: 2, minTimeout: 20, maxTimeout: 200, forever: true } };

async function socketHarness(options: Pick<HarnessOptions, 'env' | 'logger' | 'socket'> = {}) {
  const web = await startFakeSlack({ tokens: ['xoxb-test'] });
  onCleanup(() => web.close());
  const socket = await startFakeSocketMode({ forwardTo: web.url });
  onCleanup(() => socket.close());
  const h = await slackHarness({
    fake: web,
    env: { SLACK_APP_TOKEN: 'xapp-test', SLACK_API_URL: socket.apiUrl, ...options.env },
    socket: options.socket ?? SOCKET_TUNING,
    ...(options.logger ? { logger: options.logger } : {}),
  });
  // startSlack resolves once the first connection said hello.
  expect(socket.current()?.id).toBe(1);
  return {
    ...h,
    socket,
    imagine: (text: string, user = 'U1') => socket.slashCommand({ command: '/imagine', text, user_id: user, channel_id: 'C1' }),
    click: (message: FakeSlackMessage, b: Button, user = 'U1') =>
      socket.blockAction({
        user: { id: user, username: `name-${user}`, team_id: 'T1' },
        team: 'T1',
        channel: message.channel,
        message,
        actions: [{ action_id: b.action_id, value: b.value }],
      }),
  };
}

/** The chat.update of `ts` after `since` whose blocks say `text`. */
function updateSaying(h: Awaited<ReturnType<typeof socketHarness>>, ts: string, text: string, since = 0) {
  return h.fake.waitFor((c) => c.method === 'chat.update' && c.args.ts === ts && textOf({ blocks: c.args.blocks as unknown[] }).includes(text), {
    since,
    timeoutMs: 15_000,
  });
}

function expectCleanProtocol(socket: FakeSocketMode) {
  expect(socket.protocolErrors()).toEqual([]);
  expect(socket.opens().every((o) => o.token === 'xapp-test')).toBe(true);
}

describe('Slack in Socket Mode', () => {
  it('acknowledges /imagine by envelope_id, then posts and edits the progress message over the Web API', async () => {
    const h = await socketHarness({ env: { LOCAL_LATENCY_MS: '100' } });
    const ack = await h.imagine('a red fox --count 6');
    // A bare ack: the job is answered in the channel, not in the ack.
    expect(ack).toMatchObject({ connection: 1, payload: undefined });
    expect(h.socket.acks().map((a) => a.envelope_id)).toEqual([ack.envelope_id]);

    const { ts, jobId } = await h.progressPost('C1');
    const { job, facts } = await h.delivered(jobId);
    expect(job.requester).toMatchObject({ tenant: 'T1', userId: 'U1', platform: 'slack', channelId: 'C1' });
    expect(facts).toMatchObject({ channel: 'C1', ts, delivered: true });
    const updates = h.fake.updatesOf('C1', ts);
    expect(updates.some((u) => /Batch [12]\/2/.test(textOf(u)))).toBe(true);
    expect(textOf(h.fake.message('C1', ts))).toContain('Done: 6 images');
    // The gallery went into the message's thread, review buttons and all.
    expect(h.fake.thread('C1', ts).some((m) => buttonsOf(m).some((b) => b.text.text === 'Approve'))).toBe(true);

    // An answer that fits in the ack travels in the ack's payload: help, and a mistake.
    const help = await h.imagine('help');
    expect(help.payload).toMatchObject({ response_type: 'ephemeral' });
    expect(String(help.payload?.text)).toContain('/imagine');
    const mistake = await h.imagine('a fox --count 0');
    expect(String(mistake.payload?.text)).toContain('count');

    // The app-level token went to apps.connections.open only; the Web API saw the bot token only.
    expect(h.socket.opens()).toHaveLength(1);
    expect(h.fake.calls().every((c) => c.token === 'xoxb-test')).toBe(true);
    expectCleanProtocol(h.socket);
  });

  it('an Approve click in an interactive envelope reviews the image', async () => {
    const h = await socketHarness();
    await h.imagine('a lighthouse --count 3');
    const { jobId } = await h.progressPost();
    const { facts } = await h.delivered(jobId);
    const pageTs = facts.pages[0]!.ts!;
    const page = () => h.fake.message('C1', pageTs)!;

    const since = h.fake.lastSeq;
    const ack = await h.click(page(), button(page(), 'Approve', 2));
    expect(ack.connection).toBe(1);
    await updateSaying(h, pageTs, '✅ *#2* approved by name-U1', since);
    expect(await filesIn(h.app, jobId, 'approved')).toEqual(['002.png']);
    expect((await h.app.engine.get(jobId))?.images.map((i) => i.review.status)).toEqual(['pending', 'approved', 'pending']);
    expectCleanProtocol(h.socket);
  });

  it('a refresh in the middle of a job loses no command, review or progress edit', async () => {
    // Three batches of 200 ms one after the other: the refresh lands while they run.
    const h = await socketHarness({ env: { LOCAL_LATENCY_MS: '200' } });
    await h.imagine('a long batch --count 12');
    const first = await h.progressPost();

    // Slack's routine refresh while the job runs: the client closes and asks for a new URL.
    await h.socket.disconnect('refresh_requested');
    expect(isJobFinished((await h.app.engine.get(first.jobId))!)).toBe(false);
    const second = await h.socket.waitForConnection(2);
    expect(h.socket.connections()[0]).toMatchObject({ closedBy: 'client', disconnects: ['refresh_requested'] });
    expect(h.socket.opens().map((o) => o.ok)).toEqual([true, true]);

    // The job's progress kept going over the Web API: its last edit says it is done.
    const { facts } = await h.delivered(first.jobId);
    expect(textOf(h.fake.message('C1', first.ts))).toContain('Done: 12 images');

    // A review and a new command sent after the reconnect are handled, on the new connection.
    const pageTs = facts.pages[0]!.ts!;
    const page = () => h.fake.message('C1', pageTs)!;
    const since = h.fake.lastSeq;
    expect((await h.click(page(), button(page(), 'Approve', 1))).connection).toBe(second.id);
    await updateSaying(h, pageTs, '✅ *#1* approved by name-U1', since);
    expect(await filesIn(h.app, first.jobId, 'approved')).toEqual(['001.png']);

    expect((await h.imagine('after the refresh --count 2')).connection).toBe(second.id);
    const next = await h.progressPost('C1', since);
    expect(next.jobId).not.toBe(first.jobId);
    await h.delivered(next.jobId);
    expectCleanProtocol(h.socket);
  });

  it('reports unhealthy while its socket is down and healthy again once it reconnects', async () => {
    const h = await socketHarness();
    expect(h.adapter.healthy()).toBe(true);
    h.socket.failOpen({ status: 500, times: 5 });
    await h.socket.disconnect('refresh_requested');
    // down for at least the reconnect delay (500 ms here) and the five refused opens
    await expect.poll(() => h.adapter.healthy(), { interval: 5 }).toBe(false);
    await h.socket.waitForConnection(2);
    await expect.poll(() => h.adapter.healthy()).toBe(true);
  });

  it('one HTTP 500 from apps.connections.open during a refresh is retried: the bot keeps running and takes the next command', async () => {
    const unhandled: unknown[] = [];
    const record = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', record);
    onCleanup(() => void process.off('unhandledRejection', record));
    const lines: string[] = [];
    const logger = createLogger('warn', { write: (line: string) => void lines.push(line) });
    const h = await socketHarness({ logger });

    h.socket.failOpen({ status: 500 });
    await h.socket.disconnect('refresh_requested');
    await h.socket.waitForConnection(2);
    expect(h.socket.opens().map((o) => o.status)).toEqual([200, 500, 200]);
    expect(unhandled).toEqual([]);
    await expect.poll(() => h.adapter.healthy()).toBe(true);

    await h.imagine('after a failed refresh --count 2');
    const { jobId } = await h.progressPost();
    await h.delivered(jobId);

    const warning = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => String(l.msg).includes('apps.connections.open failed'));
    expect(warning).toMatchObject({ attempt: 1 });
    expect(String(warning?.err)).toContain('500');
    expect(lines.join('\n')).not.toContain('xapp-test');
    expectCleanProtocol(h.socket);
  });

  it('the production retry policy, not the Web API client’s retries: 0, is what a refresh gets', async () => {
    // No retry tuning: SOCKET_MODE_RETRY's first wait is 1–2 s, the one unscaled wait in this file.
    const h = await socketHarness({ socket: { pingTimeoutMs: SOCKET_TUNING.pingTimeoutMs } });
    h.socket.failOpen({ status: 503 });
    await h.socket.disconnect('refresh_requested');
    await h.socket.waitForConnection(2);
    expect(h.socket.opens().map((o) => o.status)).toEqual([200, 503, 200]);
    expect((await h.imagine('help')).connection).toBe(2);
  });
});
