/**
 * The Slack fake, driven by the real @slack/bolt App and @slack/web-api client over HTTP.
 *
 * These tests also pin down Bolt 5.1 / web-api 8.2 behaviour our adapter relies on:
 * - `app.start({ port: 0, host })` resolves to the node http.Server (read `.address().port`).
 * - ack() sends the HTTP 200 at once; the rest of the listener runs after Slack got its answer,
 *   so a test must wait for the API calls (fake.waitFor), not for the HTTP response.
 * - API failures are thrown as coded errors: see the rate-limit, not_in_channel and HTTP tests.
 */
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  App,
  LogLevel,
  verifySlackRequest,
  webApi,
  type BlockAction,
  type ButtonAction,
  type RespondFn,
  type ViewSubmitAction,
} from '@slack/bolt';
import {
  blockActionPayload,
  postBlockAction,
  postSigned,
  postSlashCommand,
  postViewSubmission,
  signSlackRequest,
  slashCommandBody,
  startFakeSlack,
  type FakeSlack,
  type SlackCall,
  viewSubmissionPayload,
} from './slack.js';

const SECRET = 'test-secret';

type ClientOptions = NonNullable<ConstructorParameters<typeof App>[0]>['clientOptions'];

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
}
function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

let fake: FakeSlack;
let apps: App[] = [];

beforeEach(async () => {
  fake = await startFakeSlack({
    users: { UADMIN: { name: 'ada', is_admin: true }, UOWNER: { is_owner: true } },
  });
});

afterEach(async () => {
  for (const app of apps) await app.stop();
  apps = [];
  await fake.close();
});

/** The real Bolt app against the fake; stopped in afterEach. */
async function startBolt(
  setup: (app: App) => void,
  clientOptions: Partial<NonNullable<ClientOptions>> = {},
): Promise<{ app: App; url: string }> {
  const app = new App({
    token: 'xoxb-test',
    signingSecret: SECRET,
    botId: 'B1',
    botUserId: 'U0BOT',
    logLevel: LogLevel.ERROR,
    clientOptions: { slackApiUrl: fake.apiUrl, retryConfig: { retries: 0 }, ...clientOptions },
  });
  setup(app);
  // Bolt 5 HTTPReceiver#start resolves to the listening http.Server (typed as https.Server).
  const server = await app.start({ port: 0, host: '127.0.0.1' });
  apps.push(app);
  const { port } = server.address() as AddressInfo;
  return { app, url: `http://127.0.0.1:${port}/slack/events` };
}

/** /imagine: ack, post a progress message, edit it. Errors are captured, not thrown after ack. */
function imagineHandler(app: App, seen: { runs: number; text?: string; error: Deferred<unknown> }): void {
  app.command('/imagine', async ({ ack, command, client }) => {
    seen.runs += 1;
    seen.text = command.text;
    await ack();
    try {
      const posted = await client.chat.postMessage({ channel: command.channel_id, text: 'Batch 0/3 …' });
      await client.chat.update({ channel: command.channel_id, ts: posted.ts ?? '', text: 'Batch 1/3 …' });
    } catch (error) {
      seen.error.resolve(error);
    }
  });
}

describe('slash commands through the real Bolt app', () => {
  it('a signed command gets 200 and the handler posts then edits its message', async () => {
    const seen = { runs: 0, text: undefined as string | undefined, error: deferred<unknown>() };
    const { url } = await startBolt((app) => imagineHandler(app, seen));

    const res = await postSlashCommand(url, SECRET, {
      command: '/imagine',
      text: 'a red fox --count 12',
      user_id: 'U1',
      user_name: 'alice',
      team_id: 'T1',
      channel_id: 'C1',
      response_url: fake.responseUrl('cmd-1'),
      trigger_id: '123.456.abc',
    });
    expect(res.status).toBe(200);
    expect(res.body).toBe(''); // a bare ack()

    const update = await fake.waitFor((c) => c.method === 'chat.update', { timeoutMs: 2000 });
    const post = fake.calls('chat.postMessage')[0];
    expect(post).toBeDefined();
    expect(post!.seq).toBeLessThan(update.seq);
    expect(post!.token).toBe('xoxb-test');
    // Bolt's per-team client adds team_id to every call.
    expect(post!.args).toMatchObject({ channel: 'C1', text: 'Batch 0/3 …', team_id: 'T1' });
    expect(update.args.ts).toBe(post!.response.ts);
    expect(update.response).toMatchObject({ ok: true, channel: 'C1', ts: post!.response.ts, text: 'Batch 1/3 …' });

    expect(seen.runs).toBe(1);
    expect(seen.text).toBe('a red fox --count 12');
    const ts = String(post!.response.ts);
    expect(ts).toMatch(/^\d{10}\.\d{6}$/);
    expect(fake.message('C1', ts)?.text).toBe('Batch 1/3 …');
    expect(fake.updatesOf('C1', ts).map((v) => v.text)).toEqual(['Batch 1/3 …']);
  });

  it('Bolt keeps no memory of requests: the same signed bytes posted twice run the handler twice', async () => {
    const seen = { runs: 0, error: deferred<unknown>() };
    const { url } = await startBolt((app) => imagineHandler(app, seen));
    const body = slashCommandBody({ text: 'a replayed fox', trigger_id: '123.456.replay' });
    // The body is the same string every time it is built, so a replay is byte for byte the original.
    expect(slashCommandBody({ text: 'a replayed fox', trigger_id: '123.456.replay' })).toBe(body);
    expect(new URLSearchParams(body).get('trigger_id')).toBe('123.456.replay');
    const timestamp = Math.floor(Date.now() / 1000) - 120;
    const first = await postSigned(url, SECRET, body, { timestamp });
    const again = await postSigned(url, SECRET, body, { timestamp });
    expect([first.status, again.status]).toEqual([200, 200]);
    const firstUpdate = await fake.waitFor((c) => c.method === 'chat.update', { timeoutMs: 2000 });
    await fake.waitFor((c) => c.method === 'chat.update', { since: firstUpdate.seq, timeoutMs: 2000 });
    expect(seen.runs).toBe(2);
  });

  it('a bad signature gets 401 and the handler never runs', async () => {
    const seen = { runs: 0, error: deferred<unknown>() };
    const { url } = await startBolt((app) => imagineHandler(app, seen));
    const res = await postSlashCommand(url, SECRET, { text: 'a fox' }, { badSignature: true });
    expect(res.status).toBe(401);
    expect(seen.runs).toBe(0);
    expect(fake.calls()).toEqual([]);
  });

  it('a timestamp older than 5 minutes gets 401', async () => {
    const seen = { runs: 0, error: deferred<unknown>() };
    const { url } = await startBolt((app) => imagineHandler(app, seen));
    const stale = Math.floor(Date.now() / 1000) - 5 * 60 - 10;
    const res = await postSlashCommand(url, SECRET, { text: 'a fox' }, { timestamp: stale });
    expect(res.status).toBe(401);
    expect(seen.runs).toBe(0);
  });

  it('Bolt answers 400 when the form content type carries a charset', async () => {
    const seen = { runs: 0, error: deferred<unknown>() };
    const { url } = await startBolt((app) => imagineHandler(app, seen));
    const res = await postSlashCommand(
      url,
      SECRET,
      { text: 'a fox' },
      { contentType: 'application/x-www-form-urlencoded; charset=utf-8' },
    );
    expect(res.status).toBe(400);
    expect(seen.runs).toBe(0);
  });

  it('not_in_channel surfaces as a platform error; response_url is the fallback', async () => {
    fake.notInChannel('C2');
    const seen = { runs: 0, error: deferred<unknown>() };
    const { url } = await startBolt((app) => {
      app.command('/imagine', async ({ ack, command, client, respond }) => {
        seen.runs += 1;
        await ack();
        try {
          await client.chat.postMessage({ channel: command.channel_id, text: 'Batch 0/1' });
        } catch (error) {
          seen.error.resolve(error);
          await respond({ response_type: 'ephemeral', text: 'Invite me to this channel first.' });
        }
      });
    });
    const res = await postSlashCommand(url, SECRET, {
      channel_id: 'C2',
      text: 'a fox',
      response_url: fake.responseUrl('cmd-2'),
    });
    expect(res.status).toBe(200);

    const error = (await seen.error.promise) as webApi.WebAPIPlatformError;
    expect(error).toBeInstanceOf(Error);
    expect(error.code).toBe(webApi.ErrorCode.PlatformError); // 'slack_webapi_platform_error'
    expect(error.data.error).toBe('not_in_channel');
    expect(error.message).toBe('An API error occurred: not_in_channel');

    await fake.waitFor((c) => c.method === 'response_url');
    expect(fake.responses('cmd-2')).toEqual([
      expect.objectContaining({
        accepted: true,
        body: { response_type: 'ephemeral', text: 'Invite me to this channel first.' },
      }),
    ]);
    expect(fake.messages('C2')).toEqual([]);

    // conversations.join (public channel) clears it, as in Slack.
    await apps[0]!.client.conversations.join({ channel: 'C2' });
    const posted = await apps[0]!.client.chat.postMessage({ channel: 'C2', text: 'now I am in' });
    expect(posted.ok).toBe(true);
  });
});

describe('block actions through the real Bolt app', () => {
  it('a button click reaches the handler with its value, and the handler re-renders', async () => {
    const got = deferred<BlockAction<ButtonAction>>();
    const value = deferred<string | undefined>();
    const { app, url } = await startBolt((a) => {
      a.action<BlockAction<ButtonAction>>('approve', async ({ ack, body, action, client }) => {
        await ack();
        value.resolve(action.value);
        got.resolve(body);
        await client.chat.update({ channel: body.channel?.id ?? '', ts: body.message?.ts ?? '', text: 'Approved by <@U1>' });
      });
    });

    const blocks = [
      { type: 'section', text: { type: 'mrkdwn', text: 'image 1' } },
      {
        type: 'actions',
        block_id: 'review:job1:0',
        elements: [
          { type: 'button', action_id: 'approve', value: 'job1:0', text: { type: 'plain_text', text: 'Approve' } },
          { type: 'button', action_id: 'reject', value: 'job1:0', text: { type: 'plain_text', text: 'Reject' } },
        ],
      },
    ];
    const posted = await app.client.chat.postMessage({ channel: 'C1', text: 'gallery', blocks });
    const message = fake.message('C1', posted.ts ?? '');
    expect(message?.blocks).toEqual(blocks);

    const res = await postBlockAction(url, SECRET, {
      user: { id: 'U1', username: 'alice', team_id: 'T1' },
      team: { id: 'T1', domain: 'fake-team' },
      channel: { id: 'C1', name: 'general' },
      message: message!,
      actions: [{ action_id: 'approve', value: 'job1:0', type: 'button' }],
      response_url: fake.responseUrl('act-1'),
      trigger_id: '1.2.3',
    });
    expect(res.status).toBe(200);
    expect(await value.promise).toBe('job1:0');
    const body = await got.promise;
    expect(body.type).toBe('block_actions');
    expect(body.user.id).toBe('U1');
    expect(body.container).toMatchObject({ type: 'message', message_ts: posted.ts, channel_id: 'C1', is_ephemeral: false });
    expect(body.actions[0]).toMatchObject({ action_id: 'approve', block_id: 'review:job1:0', type: 'button' });
    expect(body.actions[0]?.action_ts).toMatch(/^\d+\.\d+$/);

    await fake.waitFor((c) => c.method === 'chat.update' && c.ok);
    expect(fake.message('C1', posted.ts ?? '')?.text).toBe('Approved by <@U1>');
    // chat.update without blocks keeps the previous blocks, as Slack does.
    expect(fake.message('C1', posted.ts ?? '')?.blocks).toEqual(blocks);
  });

  it("response_url's 6th use is refused (Bolt's respond() throws RespondError 404)", async () => {
    const outcome = deferred<{ ok: number; error: unknown }>();
    const { url } = await startBolt((app) => {
      app.action('approve', async ({ ack, respond }) => {
        await ack();
        let ok = 0;
        const r: RespondFn = respond;
        for (let i = 1; i <= 6; i += 1) {
          try {
            await r({ text: `update ${i}`, replace_original: false });
            ok += 1;
          } catch (error) {
            outcome.resolve({ ok, error });
            return;
          }
        }
        outcome.resolve({ ok, error: undefined });
      });
    });
    const res = await postBlockAction(url, SECRET, {
      user: 'U1',
      channel: 'C1',
      message: { ts: '1700000000.000100', text: 'gallery' },
      actions: [{ action_id: 'approve', value: 'x' }],
      response_url: fake.responseUrl('act-6'),
    });
    expect(res.status).toBe(200);

    const { ok, error } = await outcome.promise;
    expect(ok).toBe(5);
    expect(error).toMatchObject({ code: 'slack_bolt_respond_error', statusCode: 404 });
    const log = fake.responses('act-6');
    expect(log).toHaveLength(6);
    expect(log.filter((r) => r.accepted)).toHaveLength(5);
    expect(log[5]).toMatchObject({ accepted: false, status: 404 });
    expect(fake.calls('response_url')[5]?.response).toEqual({ ok: false, error: 'used_url' });
  });
});

describe('modals through the real Bolt app', () => {
  const modal = {
    type: 'modal' as const,
    callback_id: 'numbers',
    private_metadata: '{"job":"j1"}',
    title: { type: 'plain_text' as const, text: 'Review by number' },
    submit: { type: 'plain_text' as const, text: 'Review' },
    blocks: [
      { type: 'input' as const, block_id: 'approve', optional: true, label: { type: 'plain_text' as const, text: 'Approve' }, element: { type: 'plain_text_input' as const, action_id: 'n' } },
      { type: 'input' as const, block_id: 'reject', optional: true, label: { type: 'plain_text' as const, text: 'Reject' }, element: { type: 'plain_text_input' as const, action_id: 'n' } },
    ],
  };

  it('views.open exchanges a trigger once and answers the opened view; app.view gets the submission and answers errors as JSON', async () => {
    const submitted = deferred<{ values: unknown; metadata: string; user: string }>();
    const { app, url } = await startBolt((a) => {
      a.view<ViewSubmitAction>('numbers', async ({ ack, body, view }) => {
        submitted.resolve({ values: view.state.values, metadata: view.private_metadata, user: body.user.id });
        const approve = view.state.values['approve']?.['n']?.value;
        if (approve === 'x') await ack({ response_action: 'errors', errors: { approve: 'not a number' } });
        else await ack();
      });
    });
    const opened = await app.client.views.open({ trigger_id: '1.2.abc', view: modal });
    expect(opened.view).toMatchObject({ id: expect.stringMatching(/^V/), callback_id: 'numbers', private_metadata: '{"job":"j1"}', state: { values: {} } });
    await expect(app.client.views.open({ trigger_id: '1.2.abc', view: modal })).rejects.toMatchObject({ data: { error: 'exchanged_trigger_id' } });
    await expect(app.client.views.open({ trigger_id: '1.2.abd', view: { ...modal, title: { type: 'plain_text', text: 'A title far longer than Slack takes' } } })).rejects.toMatchObject({
      data: { error: 'invalid_arguments', response_metadata: { messages: ['[ERROR] must be less than 25 characters [json-pointer:/view/title/text]'] } },
    });
    const [view] = fake.views();
    expect(fake.views()).toHaveLength(1);

    const refused = await postViewSubmission(url, SECRET, { view: view!.view, user: 'U1', values: { approve: { n: 'x' } } });
    expect(refused.status).toBe(200);
    expect(refused.headers['content-type']).toBe('application/json');
    expect(JSON.parse(refused.body)).toEqual({ response_action: 'errors', errors: { approve: 'not a number' } });
    expect(await submitted.promise).toEqual({
      values: { approve: { n: { type: 'plain_text_input', value: 'x' } }, reject: { n: { type: 'plain_text_input', value: null } } },
      metadata: '{"job":"j1"}',
      user: 'U1',
    });
    const closed = await postViewSubmission(url, SECRET, { view: view!.view, user: 'U1', values: { approve: { n: '1-5' } } });
    expect(closed).toMatchObject({ status: 200, body: '' });
    expect(() => viewSubmissionPayload({ view: view!.view, user: 'U1', values: { nope: { n: '1' } } })).toThrow('the view has no input nope/n');
  });
});

describe('web-api errors and fault injection', () => {
  it('ratelimited with the default client: waits Retry-After, then a WebAPIRequestError', async () => {
    // rejectRateLimitedCalls defaults to false: web-api emits `rate_limited`, pauses its whole queue
    // for Retry-After seconds, then throws a plain Error that its own catch wraps into a
    // WebAPIRequestError (code 'slack_webapi_request_error', no retryAfter field: the seconds are only
    // in `original.message`). With the default retryConfig it would retry (10 times in ~30 min);
    // with retries: 0 that error reaches the caller.
    fake.rateLimit('chat.update', { retryAfterSeconds: 1 });
    const seen = { runs: 0, error: deferred<unknown>() };
    const { app, url } = await startBolt((a) => imagineHandler(a, seen));

    await postSlashCommand(url, SECRET, { text: 'a fox' });
    const error = (await seen.error.promise) as webApi.WebAPIRequestError & { retryAfter?: number };
    expect(error).toBeInstanceOf(webApi.WebAPIRequestError);
    expect(error.code).toBe(webApi.ErrorCode.RequestError);
    expect(error.retryAfter).toBeUndefined();
    expect(error.original.message).toMatch(/^A rate limit was exceeded \(url: .*chat\.update, retry-after: 1\)$/);
    expect(error.message).toBe(`A request error occurred: ${error.original.message}`);
    expect(fake.calls('chat.update')[0]).toMatchObject({ status: 429, error: 'ratelimited' });

    // The client emits `rate_limited` (seconds) before it sleeps.
    const limited = deferred<number>();
    app.client.on(webApi.WebClientEvent.RATE_LIMITED, (seconds: number) => limited.resolve(seconds));
    fake.rateLimit('chat.update', { retryAfterSeconds: 0 });
    await expect(app.client.chat.update({ channel: 'C1', ts: '1', text: 'x' })).rejects.toThrow(/rate limit/);
    expect(await limited.promise).toBe(0);
  });

  it('ratelimited with rejectRateLimitedCalls: WebAPIRateLimitedError with code and retryAfter, at once', async () => {
    const { app } = await startBolt(() => {}, { rejectRateLimitedCalls: true });
    const posted = await app.client.chat.postMessage({ channel: 'C1', text: 'Batch 0/3' });
    fake.rateLimit('chat.update', { retryAfterSeconds: 30, times: 2 });
    const error = await app.client.chat
      .update({ channel: 'C1', ts: posted.ts ?? '', text: 'Batch 1/3' })
      .then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(webApi.WebAPIRateLimitedError);
    expect(error).toMatchObject({ code: webApi.ErrorCode.RateLimitedError, retryAfter: 30 });
    expect((error as Error).message).toBe('A rate-limit has been reached, you may retry this request in 30 seconds');
    // times: 2 → the second call is limited too, the third goes through.
    await expect(app.client.chat.update({ channel: 'C1', ts: posted.ts ?? '', text: 'x' })).rejects.toMatchObject({
      retryAfter: 30,
    });
    await app.client.chat.update({ channel: 'C1', ts: posted.ts ?? '', text: 'Batch 1/3' });
    expect(fake.calls('chat.update').map((c) => c.status)).toEqual([429, 429, 200]);
  });

  it('failNext answers {ok:false,error} once (or n times); serverError is a WebAPIHTTPError', async () => {
    const { app } = await startBolt(() => {});
    fake.failNext('chat.postMessage', 'channel_not_found');
    await expect(app.client.chat.postMessage({ channel: 'C1', text: 'a' })).rejects.toMatchObject({
      code: webApi.ErrorCode.PlatformError,
      data: { ok: false, error: 'channel_not_found' },
    });
    expect((await app.client.chat.postMessage({ channel: 'C1', text: 'a' })).ok).toBe(true);

    fake.failNext('*', 'invalid_auth', 2);
    await expect(app.client.users.info({ user: 'U1' })).rejects.toMatchObject({ data: { error: 'invalid_auth' } });
    await expect(app.client.auth.test()).rejects.toMatchObject({ data: { error: 'invalid_auth' } });
    expect((await app.client.auth.test()).user_id).toBe('U0BOT');

    fake.serverError('chat.update', { status: 503 });
    await expect(app.client.chat.update({ channel: 'C1', ts: '1', text: 'x' })).rejects.toMatchObject({
      code: webApi.ErrorCode.HTTPError,
      statusCode: 503,
    });
  });

  it('filesUploadV2 completes the three steps against the fake and the bytes arrive', async () => {
    const { app } = await startBolt(() => {});
    const parent = await app.client.chat.postMessage({ channel: 'C1', text: 'gallery' });
    const bytes = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 256));

    const result = await app.client.filesUploadV2({
      channel_id: 'C1',
      thread_ts: parent.ts ?? '',
      file: bytes,
      filename: 'fox-1.png',
      title: 'Fox 1',
    });

    expect(fake.calls().map((c: SlackCall) => c.method)).toEqual([
      'chat.postMessage',
      'files.getUploadURLExternal',
      'upload',
      'files.completeUploadExternal',
    ]);
    expect(fake.calls('files.getUploadURLExternal')[0]?.args).toMatchObject({ filename: 'fox-1.png', length: '3000' });
    const complete = fake.calls('files.completeUploadExternal')[0];
    expect(complete?.args).toMatchObject({ channel_id: 'C1', thread_ts: parent.ts });
    const fileId = String((complete?.args.files as Array<{ id: string }>)[0]?.id);

    const file = fake.file(fileId);
    expect(file?.bytes?.equals(bytes)).toBe(true);
    expect(file?.completed).toBe(true);
    expect(file?.title).toBe('Fox 1');
    expect(file?.shares).toEqual([{ channel_id: 'C1', thread_ts: parent.ts, initial_comment: undefined, blocks: undefined }]);

    // filesUploadV2 answers { ok, files: [<one completeUploadExternal response per channel/thread group>] }.
    expect(result.ok).toBe(true);
    const completion = result.files[0] as unknown as { ok: boolean; files: Array<{ id: string; title: string }> };
    expect(completion.files[0]).toMatchObject({ id: fileId, title: 'Fox 1' });

    // url_private serves the bytes.
    const download = await fetch(file!.urlPrivate, { headers: { Authorization: 'Bearer xoxb-test' } });
    expect(Buffer.from(await download.arrayBuffer()).equals(bytes)).toBe(true);
  });
});

describe('the fake on its own', () => {
  it('keeps messages per channel with their update history; ts is unique and increasing', async () => {
    const { app } = await startBolt(() => {});
    const a = await app.client.chat.postMessage({ channel: 'C1', text: 'one' });
    const b = await app.client.chat.postMessage({ channel: 'C1', text: 'two', thread_ts: a.ts ?? '' });
    await app.client.chat.postMessage({ channel: 'C9', text: 'elsewhere' });
    expect(Number(b.ts)).toBeGreaterThan(Number(a.ts));
    expect(a.ts).toBe('1700000000.000100');
    expect(a.message).toMatchObject({ text: 'one', user: 'U0BOT', bot_id: 'B1' });

    await app.client.chat.update({ channel: 'C1', ts: a.ts ?? '', text: 'one v2', blocks: [{ type: 'divider' }] });
    await app.client.chat.update({ channel: 'C1', ts: a.ts ?? '', text: 'one v3' });
    await app.client.chat.update({ channel: 'C1', ts: a.ts ?? '', text: 'one v4', blocks: [] });

    expect(fake.messages('C1').map((m) => m.text)).toEqual(['one v4', 'two']);
    expect(fake.thread('C1', a.ts ?? '').map((m) => m.text)).toEqual(['two']);
    expect(fake.updatesOf('C1', a.ts ?? '').map((v) => [v.text, v.blocks?.length])).toEqual([
      ['one v2', 1],
      ['one v3', 1],
      ['one v4', undefined],
    ]);
    await expect(app.client.chat.update({ channel: 'C1', ts: '1.2', text: 'x' })).rejects.toMatchObject({
      data: { error: 'message_not_found' },
    });
    await app.client.chat.delete({ channel: 'C1', ts: b.ts ?? '' });
    expect(fake.messages('C1')).toHaveLength(1);
  });

  it('answers users.info, postEphemeral, conversations.info, unknown methods and JSON bodies', async () => {
    const { app } = await startBolt(() => {});
    const admin = await app.client.users.info({ user: 'UADMIN' });
    expect(admin.user).toMatchObject({ id: 'UADMIN', name: 'ada', is_admin: true, is_owner: false });
    expect((await app.client.users.info({ user: 'UOWNER' })).user).toMatchObject({ is_owner: true, is_admin: false });
    expect((await app.client.users.info({ user: 'USOMEONE' })).user).toMatchObject({ is_admin: false, is_owner: false });

    const eph = await app.client.chat.postEphemeral({ channel: 'C1', user: 'U1', text: 'only you' });
    expect(eph.message_ts).toMatch(/^\d+\.\d+$/);
    expect(fake.ephemerals('C1')).toEqual([expect.objectContaining({ user: 'U1', text: 'only you' })]);

    fake.notInChannel('C3');
    expect((await app.client.conversations.info({ channel: 'C3' })).channel?.is_member).toBe(false);

    await expect(app.client.apiCall('chat.scheduleNothing', {})).rejects.toMatchObject({
      data: { error: 'unknown_method' },
    });

    const raw = await fetch(`${fake.apiUrl}chat.postMessage`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json; charset=utf-8', Authorization: 'Bearer xoxb-test' },
      body: JSON.stringify({ channel: 'C5', blocks: [{ type: 'divider' }] }),
    });
    expect(raw.status).toBe(200);
    expect(await raw.json()).toMatchObject({ ok: true, channel: 'C5' });
    expect(fake.calls('chat.postMessage').at(-1)).toMatchObject({ token: 'xoxb-test', args: { channel: 'C5' } });

    const anon = await fetch(`${fake.apiUrl}auth.test`, { method: 'POST' });
    expect(await anon.json()).toEqual({ ok: false, error: 'not_authed' });
  });

  it('rejects Block Kit past its limits with invalid_blocks', async () => {
    const { app } = await startBolt(() => {});
    const blocks = Array.from({ length: 51 }, () => ({ type: 'divider' }));
    await expect(app.client.chat.postMessage({ channel: 'C1', text: 'x', blocks })).rejects.toMatchObject({
      data: { error: 'invalid_blocks', errors: ['no more than 50 items allowed [json-pointer:/blocks]'] },
    });
    const tooMany = Array.from({ length: 26 }, (_, i) => ({
      type: 'button' as const,
      action_id: `a${i}`,
      text: { type: 'plain_text' as const, text: 'x' },
    }));
    await expect(
      app.client.chat.postMessage({ channel: 'C1', text: 'x', blocks: [{ type: 'actions', elements: tooMany }] }),
    ).rejects.toMatchObject({ data: { error: 'invalid_blocks' } });
    await expect(
      app.client.chat.postMessage({
        channel: 'C1',
        text: 'x',
        blocks: [{ type: 'image', image_url: 'file:///tmp/a.png', alt_text: 'a' }],
      }),
    ).rejects.toMatchObject({ data: { error: 'invalid_blocks' } });
  });

  it('a bound response_url can replace the original message; expired urls are refused', async () => {
    const { app } = await startBolt(() => {});
    const posted = await app.client.chat.postMessage({ channel: 'C1', text: 'gallery page 1' });
    const url = fake.responseUrl('bound', { channel: 'C1', ts: posted.ts ?? '' });
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ replace_original: true, text: 'gallery page 2' }),
    });
    expect(res.status).toBe(200);
    expect(fake.message('C1', posted.ts ?? '')?.text).toBe('gallery page 2');
    expect(fake.updatesOf('C1', posted.ts ?? '')[0]?.via).toBe('response_url');

    fake.expireResponseUrl('bound');
    const late = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"text":"x"}' });
    expect(late.status).toBe(404);
    expect(await late.json()).toEqual({ ok: false, error: 'expired_url' });
  });

  it('waitFor resolves on past or future calls and times out with a readable list', async () => {
    const { app } = await startBolt(() => {});
    await app.client.chat.postMessage({ channel: 'C1', text: 'first' });
    const past = await fake.waitFor((c) => c.method === 'chat.postMessage');
    expect(past.seq).toBe(1);

    const future = fake.waitFor((c) => c.args.text === 'second', { since: fake.lastSeq });
    await app.client.chat.postMessage({ channel: 'C1', text: 'second' });
    expect((await future).seq).toBe(2);

    await expect(fake.waitFor((c) => c.method === 'chat.update', { timeoutMs: 50 })).rejects.toThrow(
      /no matching call within 50 ms \(2 calls recorded\)\. Most recent:\n {2}#1 chat\.postMessage .*"text":"first".* -> 200 ok/,
    );
  });

  it('delay() holds a call back until its time or release(); the client sees it arrive late', async () => {
    const { app } = await startBolt(() => {});
    // Far longer than the test: only release() can end the wait, so nothing here depends on timing.
    const held = fake.delay('chat.postMessage', 60_000);
    let done = false;
    const pending = app.client.chat.postMessage({ channel: 'C1', text: 'slow' }).then((r) => {
      done = true;
      return r;
    });
    while (held.held === 0) await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    expect(fake.calls('chat.postMessage')).toHaveLength(0); // recorded when answered
    held.release();
    expect((await pending).ok).toBe(true);
    expect(held.held).toBe(0);
    expect(fake.calls('chat.postMessage')).toHaveLength(1);
  });

  it('refuses an unknown or missing token and a JSON body that does not parse, and changes nothing', async () => {
    const call = (method: string, init: { token?: string; type?: string; body?: string }) =>
      fetch(`${fake.apiUrl}${method}`, {
        method: 'POST',
        headers: {
          'Content-Type': init.type ?? 'application/json; charset=utf-8',
          ...(init.token !== undefined ? { Authorization: `Bearer ${init.token}` } : {}),
        },
        body: init.body ?? JSON.stringify({ channel: 'C1', text: 'hello' }),
      }).then(async (r) => ({ status: r.status, body: await r.json() }));

    expect(await call('chat.postMessage', { token: 'xoxb-other' })).toEqual({ status: 200, body: { ok: false, error: 'invalid_auth' } });
    expect(await call('chat.postMessage', {})).toEqual({ status: 200, body: { ok: false, error: 'not_authed' } });
    // A token inside a JSON body is not read, as on Slack: only the Authorization header counts.
    expect(await call('chat.postMessage', { body: JSON.stringify({ token: 'xoxb-test', channel: 'C1', text: 'hello' }) })).toEqual({
      status: 200,
      body: { ok: false, error: 'not_authed' },
    });
    expect(await call('chat.postMessage', { token: 'xoxb-test', body: '{"channel": "C1", "text": "hel' })).toEqual({
      status: 200,
      body: { ok: false, error: 'invalid_json' },
    });
    // A form body may carry its token as a field.
    expect(await call('auth.test', { type: 'application/x-www-form-urlencoded', body: 'token=xoxb-other' })).toEqual({
      status: 200,
      body: { ok: false, error: 'invalid_auth' },
    });
    expect(fake.messages('C1')).toEqual([]);
    expect(fake.calls().map((c) => c.error)).toEqual(['invalid_auth', 'not_authed', 'not_authed', 'invalid_json', 'invalid_auth']);

    expect(await call('chat.postMessage', { token: 'xoxb-test' })).toMatchObject({ status: 200, body: { ok: true, channel: 'C1' } });
    expect(fake.messages('C1').map((m) => m.text)).toEqual(['hello']);
  });

  it('accepts the tokens it is told instead of the default', async () => {
    const strict = await startFakeSlack({ tokens: ['xoxb-the-right-one'] });
    try {
      const client = new webApi.WebClient('xoxb-test', { slackApiUrl: strict.apiUrl, retryConfig: { retries: 0 } });
      await expect(client.auth.test()).rejects.toMatchObject({ data: { ok: false, error: 'invalid_auth' } });
      const right = new webApi.WebClient('xoxb-the-right-one', { slackApiUrl: strict.apiUrl, retryConfig: { retries: 0 } });
      expect((await right.auth.test()).user_id).toBe('U0BOT');
    } finally {
      await strict.close();
    }
  });

  it('signSlackRequest agrees with Bolt, and blockActionPayload has the real shape', () => {
    const body = 'command=%2Fimagine&text=fox';
    const ts = Math.floor(Date.now() / 1000);
    const headers = signSlackRequest(SECRET, body, ts);
    expect(headers['X-Slack-Signature']).toMatch(/^v0=[0-9a-f]{64}$/);
    expect(() =>
      verifySlackRequest({
        signingSecret: SECRET,
        body,
        headers: {
          'x-slack-signature': headers['X-Slack-Signature'],
          'x-slack-request-timestamp': Number(headers['X-Slack-Request-Timestamp']),
        },
      }),
    ).not.toThrow();

    const payload = blockActionPayload({
      user: 'U1',
      channel: 'C1',
      message: { ts: '1.2', blocks: [{ type: 'actions', block_id: 'b9', elements: [{ type: 'button', action_id: 'reject' }] }] },
      actions: [{ action_id: 'reject', value: 'v' }],
    });
    expect(payload).toMatchObject({
      type: 'block_actions',
      user: { id: 'U1', team_id: 'T1' },
      team: { id: 'T1', domain: 'fake-team' },
      container: { type: 'message', message_ts: '1.2', channel_id: 'C1', is_ephemeral: false },
      channel: { id: 'C1' },
      message: { ts: '1.2' },
      api_app_id: 'A1',
      actions: [{ action_id: 'reject', block_id: 'b9', value: 'v', type: 'button' }],
    });
  });
});
