/**
 * The Socket Mode fake, driven by the real @slack/web-api client, a raw `ws` client (to say what a
 * well-behaved client would not) and a real Bolt app on Bolt's SocketModeReceiver.
 *
 * What these tests pin down about socket-mode 3.1 (through Bolt 5.1), which the adapter relies on:
 * - a `disconnect` message makes the client close the socket and call apps.connections.open again;
 * - ack() sends `{ envelope_id, payload }` on the socket (`payload: {}` when bare);
 * - the app-level token travels as `Authorization: Bearer xapp-…`.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { App, LogLevel, SocketModeReceiver, webApi } from '@slack/bolt';
import { startFakeSocketMode, type FakeSocketMode } from './slack-socket.js';
import { startFakeSlack, type FakeSlack } from './slack.js';

let web: FakeSlack;
let socket: FakeSocketMode;
const closers: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  web = await startFakeSlack({ tokens: ['xoxb-test'] });
  socket = await startFakeSocketMode({ forwardTo: web.url, ackTimeoutMs: 5_000 });
});

afterEach(async () => {
  while (closers.length > 0) await closers.pop()!();
  await socket.close();
  await web.close();
});

const client = (token?: string) => new webApi.WebClient(token, { slackApiUrl: socket.apiUrl, retryConfig: { retries: 0 } });

/** A raw client on a fresh URL: every text frame it receives, parsed, in order. */
async function rawConnection(): Promise<{ ws: WebSocket; frames: Record<string, any>[]; next: () => Promise<Record<string, any>> }> {
  const { url } = await client('xapp-test').apps.connections.open();
  const ws = new WebSocket(url!);
  closers.push(async () => ws.terminate());
  const frames: Record<string, any>[] = [];
  let waiter: (() => void) | undefined;
  ws.on('message', (data) => {
    frames.push(JSON.parse(String(data)) as Record<string, any>);
    waiter?.();
  });
  let read = 0;
  const next = async () => {
    while (frames.length <= read) await new Promise<void>((resolve) => (waiter = resolve));
    return frames[read++]!;
  };
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  return { ws, frames, next };
}

describe('the Socket Mode fake', () => {
  it('apps.connections.open wants the app-level token in the Authorization header', async () => {
    const opened = await client('xapp-test').apps.connections.open();
    expect(opened.url).toMatch(new RegExp(`^ws://127\\.0\\.0\\.1:${socket.port}/link/\\?ticket=[0-9a-f-]{36}&app_id=A1$`));

    const errorOf = (token?: string) => client(token).apps.connections.open().then(() => 'ok', (e: { data?: { error?: string } }) => e.data?.error);
    expect(await errorOf('xoxb-test')).toBe('not_allowed_token_type');
    expect(await errorOf('xapp-someone-else')).toBe('invalid_auth');
    expect(await errorOf(undefined)).toBe('not_authed');
    expect(socket.opens().map((o) => [o.token, o.ok])).toEqual([
      ['xapp-test', true],
      ['xoxb-test', false],
      ['xapp-someone-else', false],
      [undefined, false],
    ]);
  });

  it('a URL opens one connection, which starts with hello', async () => {
    const { url } = await client('xapp-test').apps.connections.open();
    const ws = new WebSocket(url!);
    closers.push(async () => ws.terminate());
    const hello = await new Promise<Record<string, any>>((resolve) => ws.once('message', (data) => resolve(JSON.parse(String(data)))));
    expect(hello).toMatchObject({ type: 'hello', num_connections: 1, connection_info: { app_id: 'A1' } });
    expect(hello.debug_info.approximate_connection_time).toBeGreaterThan(0);
    expect(socket.current()?.id).toBe(1);

    // The same ticket again is refused at the handshake.
    const again = new WebSocket(url!);
    const status = await new Promise<number | undefined>((resolve) => {
      again.once('unexpected-response', (_req, res) => resolve(res.statusCode));
      again.once('open', () => resolve(undefined));
    });
    expect(status).toBe(401);
    expect(socket.connections()).toHaveLength(1);
  });

  it('resolves a send with its ack, and keeps every frame that is not a valid ack', async () => {
    const raw = await rawConnection();
    await raw.next(); // hello

    const sent = socket.send('slash_commands', { command: '/imagine', text: 'a fox' });
    const envelope = await raw.next();
    expect(envelope).toMatchObject({ type: 'slash_commands', payload: { command: '/imagine' }, accepts_response_payload: true });
    raw.ws.send(JSON.stringify({ envelope_id: envelope.envelope_id, payload: { text: 'on it' } }));
    expect(await sent).toEqual({ envelope_id: envelope.envelope_id, payload: { text: 'on it' }, connection: 1 });

    // An event accepts no response payload; a bare ack is `payload: {}`.
    const event = socket.event({ type: 'member_joined_channel', user: 'U0BOT', channel: 'C9' });
    const eventEnvelope = await raw.next();
    expect(eventEnvelope).toMatchObject({ type: 'events_api', accepts_response_payload: false, retry_attempt: 0, payload: { type: 'event_callback' } });
    raw.ws.send(JSON.stringify({ envelope_id: eventEnvelope.envelope_id, payload: { text: 'not allowed here' } }));
    expect((await event).payload).toEqual({ text: 'not allowed here' });

    raw.ws.send('not json');
    raw.ws.send(JSON.stringify({ envelope_id: envelope.envelope_id })); // acked already
    raw.ws.send(JSON.stringify({ envelope_id: 'never-sent' }));
    await expect.poll(() => socket.protocolErrors().length).toBe(4);
    expect(socket.protocolErrors().join('\n')).toMatch(/accepts none[\s\S]*not JSON[\s\S]*not the ack[\s\S]*not the ack/);
    expect(socket.acks().map((a) => a.envelope_id)).toEqual([envelope.envelope_id, eventEnvelope.envelope_id]);
  });

  it('rejects a send whose connection closes before the ack; one sent while none is open waits for the next', async () => {
    const first = await rawConnection();
    await first.next();
    const lost = socket.send('interactive', { type: 'block_actions' });
    const envelope = await first.next();
    expect(envelope.accepts_response_payload).toBe(false);
    socket.drop();
    await expect(lost).rejects.toThrow(/connection 1 closed before envelope .* was acked/);
    expect(socket.connections()[0]!.closedBy).toBe('server');
    expect(socket.current()).toBeUndefined();

    const waiting = socket.send('interactive', { type: 'block_actions', n: 2 });
    const second = await rawConnection();
    expect((await second.next()).type).toBe('hello');
    const delivered = await second.next();
    expect(delivered.payload).toEqual({ type: 'block_actions', n: 2 });
    second.ws.send(JSON.stringify({ envelope_id: delivered.envelope_id, payload: {} }));
    expect(await waiting).toEqual({ envelope_id: delivered.envelope_id, payload: undefined, connection: 2 });
  });

  it('a real Bolt app acks a slash command over the socket, and reconnects through apps.connections.open after a disconnect', async () => {
    const app = new App({
      token: 'xoxb-test',
      botId: 'B1',
      botUserId: 'U0BOT',
      logLevel: LogLevel.ERROR,
      clientOptions: { slackApiUrl: socket.apiUrl, retryConfig: { retries: 0 } },
      receiver: new SocketModeReceiver({
        appToken: 'xapp-test',
        logLevel: LogLevel.ERROR,
        clientPingTimeout: 300,
        installerOptions: { clientOptions: { slackApiUrl: socket.apiUrl } },
      }),
    });
    const handled: string[] = [];
    app.command('/echo', async ({ command, ack, client: web2 }) => {
      await ack({ text: `echo: ${command.text}` });
      await web2.chat.postMessage({ channel: command.channel_id, text: `posted: ${command.text}` });
      handled.push(command.text);
    });
    await app.start();
    closers.push(async () => {
      // Bolt's stop() does not wait for the close handshake: wait here, or closing the fake cuts it.
      await app.stop();
      await expect.poll(() => socket.current()).toBeUndefined();
    });
    expect(socket.current()?.id).toBe(1);

    const ack = await socket.slashCommand({ command: '/echo', text: 'one', channel_id: 'C1' });
    expect(ack.payload).toEqual({ text: 'echo: one' });
    await expect.poll(() => handled).toEqual(['one']);
    expect(web.calls('chat.postMessage').map((c) => c.args.text)).toEqual(['posted: one']);

    await socket.disconnect('refresh_requested');
    const second = await socket.waitForConnection(2);
    expect(socket.connections()[0]).toMatchObject({ closedBy: 'client', disconnects: ['refresh_requested'] });
    expect(socket.opens().map((o) => o.ok)).toEqual([true, true]);
    expect((await socket.slashCommand({ command: '/echo', text: 'two', channel_id: 'C1' })).connection).toBe(second.id);
    await expect.poll(() => handled).toEqual(['one', 'two']);
    expect(socket.protocolErrors()).toEqual([]);
  });

  it('failOpen answers HTTP 500, or HTTP 200 with ok: false, the next times', async () => {
    socket.failOpen({ status: 500 });
    socket.failOpen({ error: 'internal_error' });
    const first = await client('xapp-test').apps.connections.open().catch((e: unknown) => e);
    expect(first).toBeInstanceOf(Error);
    expect(first).toMatchObject({ code: 'slack_webapi_http_error', statusCode: 500 });
    const second = await client('xapp-test').apps.connections.open().catch((e: unknown) => e);
    expect(second).toMatchObject({ code: 'slack_webapi_platform_error', data: { error: 'internal_error' } });
    expect((await client('xapp-test').apps.connections.open()).ok).toBe(true);
    expect(socket.opens().map((o) => o.status)).toEqual([500, 200, 200]);
  });

  it('forwards every other Web API method to forwardTo, token and all; answers unknown_method without one', async () => {
    const identity = await client('xoxb-test').auth.test();
    expect(identity).toMatchObject({ ok: true, user_id: 'U0BOT', bot_id: 'B1' });
    const posted = await client('xoxb-test').chat.postMessage({ channel: 'C1', text: 'hi', blocks: [{ type: 'section', text: { type: 'mrkdwn', text: 'hi' } }] });
    expect(web.message('C1', posted.ts!)?.blocks).toHaveLength(1);
    expect(web.calls().map((c) => [c.method, c.token])).toEqual([
      ['auth.test', 'xoxb-test'],
      ['chat.postMessage', 'xoxb-test'],
    ]);
    expect(await client('xoxb-wrong').auth.test().catch((e: { data?: { error?: string } }) => e.data?.error)).toBe('invalid_auth');

    const alone = await startFakeSocketMode();
    closers.push(() => alone.close());
    const lonely = new webApi.WebClient('xoxb-test', { slackApiUrl: alone.apiUrl, retryConfig: { retries: 0 } });
    expect(await lonely.auth.test().catch((e: { data?: { error?: string } }) => e.data?.error)).toBe('unknown_method');
  });
});
