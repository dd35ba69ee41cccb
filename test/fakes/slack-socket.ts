/**
 * A fake of Slack's Socket Mode: `apps.connections.open` over HTTP and the WebSocket it hands out, on
 * one node:http server on 127.0.0.1. Every other Web API method is forwarded to `forwardTo` (a
 * FakeSlack's `url`), so the bot keeps one `slackApiUrl` for both, as it does against Slack.
 *
 *     const web = await startFakeSlack();
 *     const socket = await startFakeSocketMode({ forwardTo: web.url });
 *     // SLACK_APP_TOKEN=xapp-test, SLACK_API_URL=socket.apiUrl, then start the bot
 *     await socket.waitForConnection();
 *     const ack = await socket.slashCommand({ command: '/imagine', text: 'a fox' });
 *
 * The protocol, as @slack/socket-mode 3.1 reads it and Slack documents it:
 * - `POST /api/apps.connections.open` with the app-level token as `Authorization: Bearer xapp-…`
 *   answers HTTP 200 `{ ok: true, url: 'ws://127.0.0.1:PORT/link/?ticket=…&app_id=…' }`. No token
 *   (or one only in the body) is `not_authed`, a token that is not an app-level one is
 *   `not_allowed_token_type`, an unknown one `invalid_auth`. Each ticket opens one connection.
 * - On connect the server sends `{ type: 'hello', num_connections, debug_info, connection_info }`.
 * - Envelopes: `{ envelope_id, type: 'slash_commands' | 'interactive' | 'events_api', payload,
 *   accepts_response_payload }` (events also carry `retry_attempt` and `retry_reason`). The client
 *   acknowledges on the socket with `{ envelope_id, payload? }`.
 * - `{ type: 'disconnect', reason }` asks the client to close and reconnect through
 *   apps.connections.open again (`refresh_requested` is Slack's routine refresh).
 *
 * What is the fake's own choice: an envelope sent while no connection is open waits for the next
 * one to say hello (Slack holds and retries events; a slash command would fail after 3 s instead, so
 * tests send commands only once connected). An envelope must be acknowledged on the connection it was
 * sent on: if that connection closes first, `send` rejects. Anything the client sends that is not a
 * valid ack of a pending envelope is kept in `protocolErrors()`.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { blockActionPayload, slashCommandBody, type BlockActionParams, type SlashCommandParams } from './slack.js';
import { buffer as readBody } from 'node:stream/consumers';

export type EnvelopeType = 'slash_commands' | 'interactive' | 'events_api';
export type DisconnectReason = 'refresh_requested' | 'warning' | 'link_disabled';

export interface FakeSocketModeOptions {
  /** Accepted app-level tokens. @default ['xapp-test'] */
  appTokens?: string[];
  /** `connection_info.app_id` and the ticket URL's `app_id`. @default 'A1' */
  appId?: string;
  /** Base URL (`http://127.0.0.1:PORT`) that other `/api/*` methods are forwarded to. Without it they answer `unknown_method`. */
  forwardTo?: string;
  /** How long `send` waits for an ack before it rejects. @default 10000 */
  ackTimeoutMs?: number;
}

export interface SocketEnvelope {
  envelope_id: string;
  type: EnvelopeType;
  payload: Record<string, unknown>;
  accepts_response_payload: boolean;
  retry_attempt?: number;
  retry_reason?: string;
}

/** What the client sent back for one envelope. */
export interface SocketAck {
  envelope_id: string;
  /** The response payload, when the client sent one (an ephemeral answer to a slash command, say). */
  payload: Record<string, unknown> | undefined;
  /** The connection it came on. */
  connection: number;
}

/** One apps.connections.open call and what the fake answered. */
export interface OpenCall {
  /** 1, 2, 3, … in arrival order. */
  seq: number;
  /** Bearer token of the Authorization header. */
  token: string | undefined;
  status: number;
  response: Record<string, unknown> | string;
  /** true when a WebSocket URL was handed out. */
  ok: boolean;
}

export interface SocketConnectionInfo {
  /** 1, 2, 3, … in order of connection. */
  id: number;
  ticket: string;
  /** Who closed it, once closed. */
  closedBy: 'client' | 'server' | undefined;
  /** Envelopes sent on it, in order. */
  envelopes: string[];
  /** The `disconnect` reasons sent on it. */
  disconnects: DisconnectReason[];
}

export interface SendOptions {
  /** @default true for slash_commands, false otherwise (Slack sets it per payload type). */
  acceptsResponsePayload?: boolean;
  /** @default a fresh id */
  envelopeId?: string;
}

export interface FakeSocketMode {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** `http://127.0.0.1:PORT/api/` — the bot's SLACK_API_URL. */
  readonly apiUrl: string;
  readonly port: number;

  opens(): OpenCall[];
  connections(): SocketConnectionInfo[];
  /** The connection that is open and said hello, if any. */
  current(): SocketConnectionInfo | undefined;
  /** Resolves once `count` connections in all have said hello (1: the first one). @default count 1 */
  waitForConnection(count?: number, opts?: { timeoutMs?: number }): Promise<SocketConnectionInfo>;

  /** Sends an envelope on the open connection (or the next one) and resolves with its ack. */
  send(type: EnvelopeType, payload: Record<string, unknown>, opts?: SendOptions): Promise<SocketAck>;
  /** A slash command as Slack sends it over the socket: the form fields of an HTTP one, as an object. */
  slashCommand(params: SlashCommandParams, opts?: SendOptions): Promise<SocketAck>;
  /** A `block_actions` payload (a button click) in an `interactive` envelope. */
  blockAction(params: BlockActionParams, opts?: SendOptions): Promise<SocketAck>;
  /** An Events API callback wrapping `event`. */
  event(event: Record<string, unknown>, opts?: SendOptions): Promise<SocketAck>;

  /** Sends `{ type: 'disconnect', reason }` and resolves once the client has closed that connection. */
  disconnect(reason?: DisconnectReason, opts?: { timeoutMs?: number }): Promise<void>;
  /** Cuts the open connection without a word (a network failure). */
  drop(): void;
  /** The next `times` apps.connections.open calls answer HTTP `status` (default 500), or HTTP 200 `{ ok: false, error }` when `error` is given. */
  failOpen(opts?: { status?: number; error?: string; times?: number }): void;

  /** Every ack received, in order. */
  acks(): SocketAck[];
  /** Frames the client sent that were not a valid ack of a pending envelope. */
  protocolErrors(): string[];
  close(): Promise<void>;
}

interface Pending {
  envelope: SocketEnvelope;
  connection: number | undefined;
  resolve: (ack: SocketAck) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

interface Live {
  info: SocketConnectionInfo;
  ws: WebSocket;
}

const HOP_BY_HOP = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive']);


function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(body));
}

/** The form fields of an HTTP slash command, as the object a Socket Mode envelope carries. */
export function slashCommandPayload(params: SlashCommandParams): Record<string, unknown> {
  return Object.fromEntries(new URLSearchParams(slashCommandBody(params)));
}

export async function startFakeSocketMode(options: FakeSocketModeOptions = {}): Promise<FakeSocketMode> {
  const appTokens = options.appTokens ?? ['xapp-test'];
  const appId = options.appId ?? 'A1';
  const ackTimeoutMs = options.ackTimeoutMs ?? 10_000;

  const opens: OpenCall[] = [];
  const tickets = new Set<string>();
  const all: SocketConnectionInfo[] = [];
  let live: Live | undefined;
  const pending = new Map<string, Pending>();
  const waiting: Pending[] = [];
  const acks: SocketAck[] = [];
  const errors: string[] = [];
  let openFaults: { status: number; error: string | undefined; remaining: number }[] = [];
  const helloWaiters = new Set<{ count: number; resolve: (c: SocketConnectionInfo) => void }>();
  const closeWaiters = new Map<number, () => void>();
  let port = 0;

  const transmit = (p: Pending, target: Live): void => {
    p.connection = target.info.id;
    target.info.envelopes.push(p.envelope.envelope_id);
    pending.set(p.envelope.envelope_id, p);
    target.ws.send(JSON.stringify(p.envelope));
  };

  const onHello = (target: Live): void => {
    live = target;
    for (const p of waiting.splice(0)) transmit(p, target);
    for (const waiter of helloWaiters) {
      if (all.length >= waiter.count) {
        helloWaiters.delete(waiter);
        waiter.resolve(all[waiter.count - 1]!);
      }
    }
  };

  const onAck = (connection: number, raw: string): void => {
    let message: unknown;
    try {
      message = JSON.parse(raw);
    } catch {
      errors.push(`connection ${connection}: not JSON: ${raw.slice(0, 200)}`);
      return;
    }
    const id = (message as { envelope_id?: unknown } | null)?.envelope_id;
    const p = typeof id === 'string' ? pending.get(id) : undefined;
    if (!p) {
      errors.push(`connection ${connection}: not the ack of a pending envelope: ${raw.slice(0, 200)}`);
      return;
    }
    if (p.connection !== connection) {
      errors.push(`connection ${connection}: acked envelope ${p.envelope.envelope_id} sent on connection ${p.connection}`);
      return;
    }
    const payload = (message as { payload?: unknown }).payload;
    if (payload !== undefined && (payload === null || typeof payload !== 'object' || Array.isArray(payload))) {
      errors.push(`connection ${connection}: the ack's payload is not an object: ${raw.slice(0, 200)}`);
      return;
    }
    // socket-mode sends `payload: {}` with a bare ack: an empty object carries no answer.
    const answer = payload && Object.keys(payload).length > 0 ? (payload as Record<string, unknown>) : undefined;
    if (answer && !p.envelope.accepts_response_payload) {
      errors.push(`connection ${connection}: a response payload for envelope ${p.envelope.envelope_id}, which accepts none`);
    }
    pending.delete(p.envelope.envelope_id);
    clearTimeout(p.timer);
    const ack: SocketAck = { envelope_id: p.envelope.envelope_id, payload: answer, connection };
    acks.push(ack);
    p.resolve(ack);
  };

  const onClosed = (target: Live, by: 'client' | 'server'): void => {
    target.info.closedBy ??= by;
    if (live === target) live = undefined;
    for (const p of [...pending.values()]) {
      if (p.connection !== target.info.id) continue;
      pending.delete(p.envelope.envelope_id);
      clearTimeout(p.timer);
      p.reject(new Error(`fakeSocketMode: connection ${target.info.id} closed before envelope ${p.envelope.envelope_id} (${p.envelope.type}) was acked`));
    }
    closeWaiters.get(target.info.id)?.();
  };

  const openConnection = (token: string | undefined): { status: number; response: Record<string, unknown> | string } => {
    const fault = openFaults.find((f) => f.remaining > 0);
    if (fault) {
      fault.remaining -= 1;
      if (fault.error !== undefined) return { status: 200, response: { ok: false, error: fault.error } };
      return { status: fault.status, response: `fake Slack: HTTP ${fault.status}` };
    }
    // Slack takes the app-level token from the Authorization header only.
    if (token === undefined || token === '') return { status: 200, response: { ok: false, error: 'not_authed' } };
    if (!token.startsWith('xapp-')) return { status: 200, response: { ok: false, error: 'not_allowed_token_type' } };
    if (!appTokens.includes(token)) return { status: 200, response: { ok: false, error: 'invalid_auth' } };
    const ticket = randomUUID();
    tickets.add(ticket);
    return { status: 200, response: { ok: true, url: `ws://127.0.0.1:${port}/link/?ticket=${ticket}&app_id=${appId}` } };
  };

  const forward = async (req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> => {
    if (!options.forwardTo) {
      sendJson(res, 200, { ok: false, error: 'unknown_method' });
      return;
    }
    const headers: Record<string, string> = {};
    for (const [key, value] of Object.entries(req.headers)) {
      if (typeof value === 'string' && !HOP_BY_HOP.has(key)) headers[key] = value;
    }
    const answer = await fetch(new URL(req.url ?? '/', options.forwardTo), {
      method: req.method ?? 'POST',
      headers,
      ...(req.method === 'GET' || req.method === 'HEAD' ? {} : { body }),
      redirect: 'manual',
    });
    const out: Record<string, string> = {};
    for (const name of ['content-type', 'retry-after']) {
      const value = answer.headers.get(name);
      if (value !== null) out[name] = value;
    }
    res.writeHead(answer.status, out);
    res.end(Buffer.from(await answer.arrayBuffer()));
  };

  const server = createServer((req, res) => {
    const handle = async () => {
      const body = await readBody(req);
      const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
      if (path === '/api/apps.connections.open' && req.method === 'POST') {
        const auth = req.headers.authorization;
        const token = auth?.startsWith('Bearer ') ? auth.slice('Bearer '.length) : undefined;
        const { status, response } = openConnection(token);
        opens.push({ seq: opens.length + 1, token, status, response, ok: typeof response === 'object' && response.ok === true });
        if (typeof response === 'string') {
          res.writeHead(status, { 'content-type': 'text/plain' });
          res.end(response);
        } else sendJson(res, status, response);
      } else if (path.startsWith('/api/')) {
        await forward(req, res, body);
      } else {
        sendJson(res, 404, { ok: false, error: 'not_found' });
      }
    };
    handle().catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 502, { ok: false, error: 'fake_forward_failed', detail: String(err) });
      else res.destroy();
    });
  });

  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const ticket = url.searchParams.get('ticket') ?? '';
    // A ticket is good for one connection, as Slack's are: a reconnect must ask for a new URL.
    if (url.pathname !== '/link/' || !tickets.delete(ticket)) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const info: SocketConnectionInfo = { id: all.length + 1, ticket, closedBy: undefined, envelopes: [], disconnects: [] };
      all.push(info);
      const target: Live = { info, ws };
      ws.on('message', (data, isBinary) => {
        if (isBinary) errors.push(`connection ${info.id}: a binary frame`);
        else onAck(info.id, Buffer.isBuffer(data) ? data.toString('utf8') : String(data));
      });
      ws.on('close', () => onClosed(target, 'client'));
      ws.on('error', (err) => errors.push(`connection ${info.id}: ${String(err)}`));
      ws.send(
        JSON.stringify({
          type: 'hello',
          num_connections: 1,
          debug_info: { host: 'applink-fake', build_number: 1, approximate_connection_time: 18_060 },
          connection_info: { app_id: appId },
        }),
      );
      onHello(target);
    });
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  const base = `http://127.0.0.1:${port}`;

  const send = (type: EnvelopeType, payload: Record<string, unknown>, opts: SendOptions = {}): Promise<SocketAck> => {
    const envelope: SocketEnvelope = {
      envelope_id: opts.envelopeId ?? randomUUID(),
      type,
      payload,
      accepts_response_payload: opts.acceptsResponsePayload ?? type === 'slash_commands',
      ...(type === 'events_api' ? { retry_attempt: 0, retry_reason: '' } : {}),
    };
    return new Promise<SocketAck>((resolve, reject) => {
      const p: Pending = {
        envelope,
        connection: undefined,
        resolve,
        reject,
        timer: setTimeout(() => {
          pending.delete(envelope.envelope_id);
          const queued = waiting.indexOf(p);
          if (queued !== -1) waiting.splice(queued, 1);
          reject(new Error(`fakeSocketMode: no ack of envelope ${envelope.envelope_id} (${type}) within ${ackTimeoutMs} ms${p.connection === undefined ? ' (no connection was open)' : ''}`));
        }, ackTimeoutMs),
      };
      if (live) transmit(p, live);
      else waiting.push(p);
    });
  };

  const fake: FakeSocketMode = {
    url: base,
    apiUrl: `${base}/api/`,
    port,
    opens: () => structuredClone(opens),
    connections: () => structuredClone(all),
    current: () => (live ? structuredClone(live.info) : undefined),
    waitForConnection(count = 1, opts = {}) {
      if (all.length >= count) return Promise.resolve(structuredClone(all[count - 1]!));
      const timeoutMs = opts.timeoutMs ?? 10_000;
      return new Promise((resolve, reject) => {
        const waiter = {
          count,
          resolve: (c: SocketConnectionInfo) => {
            clearTimeout(timer);
            resolve(structuredClone(c));
          },
        };
        const timer = setTimeout(() => {
          helloWaiters.delete(waiter);
          const tried = opens.map((o) => `#${o.seq} ${o.status} ${JSON.stringify(o.response)}`).join('; ') || 'none';
          reject(new Error(`fakeSocketMode: connection ${count} did not open within ${timeoutMs} ms (${all.length} so far; apps.connections.open calls: ${tried})`));
        }, timeoutMs);
        helloWaiters.add(waiter);
      });
    },
    send,
    slashCommand: (params, opts) => send('slash_commands', slashCommandPayload(params), opts),
    blockAction: (params, opts) => send('interactive', blockActionPayload(params), opts),
    event(event, opts) {
      const now = Date.now() / 1000;
      return send(
        'events_api',
        {
          token: 'verification-token',
          team_id: 'T1',
          api_app_id: appId,
          event: { event_ts: now.toFixed(6), ...event },
          type: 'event_callback',
          event_id: `Ev${randomUUID().replace(/-/g, '').slice(0, 10).toUpperCase()}`,
          event_time: Math.floor(now),
          authorizations: [{ enterprise_id: null, team_id: 'T1', user_id: 'U0BOT', is_bot: true, is_enterprise_install: false }],
          is_ext_shared_channel: false,
        },
        opts,
      );
    },
    disconnect(reason = 'refresh_requested', opts = {}) {
      const target = live;
      if (!target) return Promise.reject(new Error('fakeSocketMode.disconnect: no connection is open'));
      // From now on envelopes wait for the next connection, as they would at Slack.
      live = undefined;
      target.info.disconnects.push(reason);
      const timeoutMs = opts.timeoutMs ?? 10_000;
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          closeWaiters.delete(target.info.id);
          target.ws.terminate();
          reject(new Error(`fakeSocketMode: the client did not close connection ${target.info.id} within ${timeoutMs} ms of a '${reason}' disconnect`));
        }, timeoutMs);
        closeWaiters.set(target.info.id, () => {
          closeWaiters.delete(target.info.id);
          clearTimeout(timer);
          resolve();
        });
        target.ws.send(JSON.stringify({ type: 'disconnect', reason, debug_info: { host: 'applink-fake' } }));
      });
    },
    drop() {
      const target = live;
      if (!target) return;
      target.info.closedBy = 'server';
      target.ws.terminate();
    },
    failOpen(opts = {}) {
      openFaults.push({ status: opts.status ?? 500, error: opts.error, remaining: opts.times ?? 1 });
    },
    acks: () => structuredClone(acks),
    protocolErrors: () => [...errors],
    async close() {
      openFaults = [];
      for (const p of [...pending.values(), ...waiting.splice(0)]) {
        clearTimeout(p.timer);
        p.reject(new Error('fakeSocketMode closed'));
      }
      pending.clear();
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => {
        wss.close(() => resolve());
      });
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
  return fake;
}
