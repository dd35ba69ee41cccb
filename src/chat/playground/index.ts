/**
 * The playground: a local web page that works like a chat channel, so `npm start` with no tokens
 * shows the whole bot. It is a third adapter over the same commands, core, store, view models and
 * delivery — the page types the same `/imagine …` text as Slack, sees progress over server-sent
 * events (its "message" is the job's view, broadcast to every open page), and reviews through the
 * same engine call. Served on loopback only, to requests that name it as their
 * host and come from its own page (guard.ts), and only about the playground's own jobs: with
 * PLAYGROUND=on beside Discord or Slack, the store also holds guilds' jobs, which this page must
 * neither show nor touch.
 */
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { answer, commandList, commandNamed, helpText } from '../../../commands/index.js';
import type { App } from '../../app.js';
import { GENERIC_FAILURE, isUserError } from '../../core/errors.js';
import type { DeliveryReport } from '../../core/ports.js';
import type { Job, Requester } from '../../core/types.js';
import { oneLine, textOf, truncate } from '../../core/text.js';
import { Delivery, type DeliveryPlatform } from '../delivery/index.js';
import type { ChatAdapter } from '../types.js';
import { pagePolicy, refusal } from '../../web/guard.js';
import { reviewRoutes } from '../../web/review-page.js';
import { routeTable } from '../../web/server.js';
import { Thumbnails } from '../../store/thumbnails.js';
import { jobView, TRANSCRIPT_KEY, type TranscriptEntry } from './view.js';

const PUBLIC = path.join(path.dirname(fileURLToPath(import.meta.url)), 'public');
const ASSETS: Record<string, string> = {
  '/': 'index.html',
  '/app.js': 'app.js',
  '/style.css': 'style.css',
};
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
  '.webp': 'image/webp',
  '.jpg': 'image/jpeg',
};
/** keeps the transcript to a size a page loads at once */
const TRANSCRIPT_MAX = 200;
/** The longest command typed: a prompt list as long as the largest prompt file Discord or the CLI take. */
const COMMAND_MAX = 64 * 1024;
/** A request body: the command, JSON-escaped (a character may take 6 bytes as `\uXXXX`, at worst). */
const BODY_MAX = 6 * COMMAND_MAX + 1024;
/** Sent with every answer: no sniffing a JSON or image answer into a script, no framing, no leaks. */
const SECURITY_HEADERS: Record<string, string> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  // other sites may not even embed our images or read them as opaque responses
  'cross-origin-resource-policy': 'same-origin',
};
const PAGE_POLICY = pagePolicy("'self'");
const NOT_FOUND = { error: 'Not found' };

export interface Playground extends ChatAdapter {
  url: string;
  port: number;
}

/**
 * Every open page is the playground's one channel: a job's "message" is its view, broadcast on each
 * change, so there is nothing to store about where it is and no gallery to post (the view has the images).
 */
const everywhere = z.object({}).default({});

export async function startPlayground(
  app: App,
  /** `delivery`: the process's, shared with the other adapters @default one of its own */
  options: { port?: number; host?: string; delivery?: Delivery } = {},
): Promise<Playground> {
  const requester: Requester = {
    tenant: 'playground',
    userId: 'playground-user',
    userName: os.userInfo().username || 'you',
    platform: 'playground',
  };
  const streams = new Set<ServerResponse>();
  const broadcast = (event: string, data: unknown) => {
    const frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const stream of streams) stream.write(frame);
  };
  const show = async (job: Readonly<Job>, delivery?: DeliveryReport) => broadcast('job', jobView(job, app, delivery));
  const platform: DeliveryPlatform<Record<string, never>> = {
    name: 'playground',
    target: everywhere,
    // Progress reaches the page at most every 250 ms per job, always the latest state.
    editIntervalMs: 250,
    postProgress: async (job, card) => {
      await show(job, card.delivery);
      return {};
    },
    editProgress: (_, job, card) => show(job, card.delivery),
  };
  const courier = (options.delivery ?? new Delivery(app)).register(platform);

  /** Whether a job is the playground's own: only those are shown, reviewed, cancelled or served here. */
  const ours = (job: Readonly<Job> | undefined): job is Job =>
    job?.requester.platform === 'playground' && job.requester.tenant === requester.tenant;

  /** Answers 403 for another platform's job (nothing changes) or 404 for none, and says so; false when it is ours. */
  async function refuseForeign(res: ServerResponse, jobId: string): Promise<boolean> {
    const job = await app.engine.get(jobId);
    if (ours(job)) return false;
    if (job) sendJson(res, 403, { error: `Forbidden: job ${jobId} is not a playground job; it can only be reviewed where it was made.` });
    else sendJson(res, 404, NOT_FOUND);
    return true;
  }

  async function transcript(): Promise<TranscriptEntry[]> {
    return (await app.keyv.get<TranscriptEntry[]>(TRANSCRIPT_KEY)) ?? [];
  }

  /**
   * Adds a line to the page's history: one read-modify-write at a time, in this process and, when
   * several processes share the store, across them (else two commands at once could drop one).
   */
  let remembering: Promise<unknown> = Promise.resolve();
  function remember(entry: TranscriptEntry): Promise<void> {
    const write = async () => {
      const entries = [...(await transcript()), entry].slice(-TRANSCRIPT_MAX);
      await app.keyv.set(TRANSCRIPT_KEY, entries);
    };
    const next = remembering.then(() => (app.shared ? app.shared.locks.run('playground-transcript', write) : write()));
    remembering = next.catch(() => undefined);
    return next;
  }

  /** One line typed on the page, dispatched through the command registry. */
  async function command(text: string): Promise<{ status: number; body: unknown }> {
    const trimmed = text.trim();
    const [name = ''] = trimmed.split(/\s+/);
    if (name === '/help' || name === 'help') return { status: 200, body: { reply: helpText(app.limits) } };
    const found = name.startsWith('/') ? commandNamed(name.slice(1)) : undefined;
    if (!found) return { status: 400, body: { error: `Unknown command \`${name.slice(0, 40)}\`. Try ${commandList()} or /help.` } };
    const input = trimmed.slice(name.length).trim();
    // The page's one user is the person running the bot on this machine: they may change settings.
    const mayManage = () => Promise.resolve(true);
    const result = await answer(found, { engine: app.engine, limits: app.limits, requester, input, mayManage }, (error) =>
      app.logger.error({ err: error, command: found.name }, 'playground command failed'),
    );
    if (result.kind === 'refused') return { status: 400, body: { error: result.text } };
    if (result.kind === 'failed') return { status: 500, body: { error: result.text } };
    if (result.kind === 'text') return { status: 200, body: { reply: result.text } };
    const { job } = result;
    await remember({ text: trimmed, jobId: job.id, at: new Date().toISOString() });
    await courier.follow(job);
    return { status: 200, body: { job: jobView(job, app) } };
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://playground');
    if (url.pathname.startsWith('/review/') && (await reviews.handle(req, res))) return;
    const asset = ASSETS[url.pathname];
    if (req.method === 'GET' && asset) return sendFile(res, path.join(PUBLIC, asset));

    if (req.method === 'GET' && url.pathname === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      res.write(': connected\n\n');
      streams.add(res);
      req.on('close', () => streams.delete(res));
      return;
    }
    if (req.method === 'GET' && url.pathname === '/api/state') {
      const entries = await transcript();
      const jobs = await Promise.all(entries.map(async (entry) => {
        const job = entry.jobId ? await app.engine.get(entry.jobId) : undefined;
        return { ...entry, job: ours(job) ? jobView(job, app) : null };
      }));
      return sendJson(res, 200, { entries: jobs, providers: app.limits.providers, defaultProvider: app.limits.defaultProvider, maxImages: app.limits.maxImagesPerJob });
    }
    if (req.method === 'POST' && url.pathname === '/api/command') {
      const body = await readJson(req);
      const text = typeof body?.text === 'string' ? body.text : '';
      // Refused whole, never cut: a prompt list cut short would make a job of the lines left.
      if (text.length > COMMAND_MAX) {
        return sendJson(res, 400, { error: `The command is longer than ${COMMAND_MAX} characters; split the prompt list into several jobs.` });
      }
      const answer = await command(text);
      return sendJson(res, answer.status, answer.body);
    }
    const review = /^\/api\/jobs\/([\w-]{1,40})\/images\/(\d{1,5})\/review$/.exec(url.pathname);
    if (req.method === 'POST' && review) {
      const body = await readJson(req);
      const status = body?.status;
      if (status !== 'approved' && status !== 'rejected' && status !== 'pending') {
        const given = status === undefined ? 'nothing' : `\`${truncate(oneLine(textOf(status)).replace(/`/g, "'"), 40)}\``;
        return sendJson(res, 400, { error: `Expected \`status\` to be approved, rejected or pending, got ${given}.` });
      }
      if (await refuseForeign(res, review[1]!)) return;
      return answerJob(res, app.engine.review(review[1]!, Number(review[2]), status, { id: requester.userId, name: requester.userName }));
    }
    const cancel = /^\/api\/jobs\/([\w-]{1,40})\/cancel$/.exec(url.pathname);
    if (req.method === 'POST' && cancel) {
      if (await refuseForeign(res, cancel[1]!)) return;
      return answerJob(res, app.engine.cancel(cancel[1]!, { id: requester.userId, name: requester.userName }));
    }
    // "Retry N failed" and "Reroll": the job runs again, and its card follows it like a new one.
    const retry = /^\/api\/jobs\/([\w-]{1,40})\/retry$/.exec(url.pathname);
    if (req.method === 'POST' && retry) {
      if (await refuseForeign(res, retry[1]!)) return;
      return answerJob(res, rerun(app.engine.retryFailed(retry[1]!, { id: requester.userId, name: requester.userName })));
    }
    const upscale = /^\/api\/jobs\/([\w-]{1,40})\/upscale$/.exec(url.pathname);
    if (req.method === 'POST' && upscale) {
      if (await refuseForeign(res, upscale[1]!)) return;
      return answerJob(res, rerun(app.engine.upscaleApproved(upscale[1]!, { id: requester.userId, name: requester.userName })));
    }
    const reroll = /^\/api\/jobs\/([\w-]{1,40})\/images\/(\d{1,5})\/reroll$/.exec(url.pathname);
    if (req.method === 'POST' && reroll) {
      if (await refuseForeign(res, reroll[1]!)) return;
      return answerJob(res, rerun(app.engine.reroll(reroll[1]!, Number(reroll[2]), { id: requester.userId, name: requester.userName })));
    }
    const image = /^\/images\/([\w-]{1,40})\/(pending-review|approved|rejected|final)\/([\w.-]{1,40})$/.exec(url.pathname);
    if (req.method === 'GET' && image && !image[3]!.startsWith('.')) {
      if (await refuseForeign(res, image[1]!)) return;
      return sendImage(res, app, image[1]!, `${image[2]!}/${image[3]!}`);
    }
    sendJson(res, 404, NOT_FOUND);
  }

  /** A job running again is followed like a new one: its progress reaches every open page. */
  async function rerun(work: Promise<Job>): Promise<Job> {
    const job = await work;
    await courier.follow(job);
    return job;
  }

  async function answerJob(res: ServerResponse, work: Promise<Job>): Promise<void> {
    try {
      const view = jobView(await work, app);
      broadcast('job', view);
      sendJson(res, 200, { job: view });
    } catch (error) {
      if (isUserError(error)) return sendJson(res, error.code === 'not_found' ? 404 : 409, { error: error.message });
      throw error;
    }
  }

  // Filled in once the port is bound; until then every request is refused.
  let allowedHosts: string[] = [];
  const reviews = routeTable({ log: app.logger });
  const server: Server = createServer((req, res) => {
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
    const refused = refusal(allowedHosts, req, 'this playground');
    if (refused) {
      // the request's body is never read: nothing it says can change anything
      app.logger.warn({ method: req.method, url: req.url?.slice(0, 200), reason: refused }, 'playground refused a request');
      return sendJson(res, 403, { error: refused });
    }
    route(req, res).catch((error: unknown) => {
      app.logger.error({ err: error, url: req.url }, 'playground request failed');
      if (!res.headersSent) sendJson(res, 500, { error: GENERIC_FAILURE });
      else res.end();
    });
  });
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? app.config.playground.port, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  allowedHosts = loopbackHosts(host, port);
  // The review page, as the public server has it, for the playground's own jobs: on loopback, no token.
  reviews.add(
    ...reviewRoutes({
      engine: app.engine,
      files: app.files,
      thumbnails: new Thumbnails(),
      feed: app.reviewFeed,
      access: { kind: 'loopback', hosts: allowedHosts, reviewer: { tenant: requester.tenant, userId: requester.userId, name: requester.userName ?? 'you' } },
      now: Date.now,
      log: app.logger,
    }),
  );
  const heartbeat = setInterval(() => {
    for (const stream of streams) stream.write(': keep-alive\n\n');
  }, 15_000);
  heartbeat.unref();

  return {
    name: 'playground',
    url: `http://${host}:${port}`,
    port,
    healthy: () => server.listening,
    async stop() {
      clearInterval(heartbeat);
      await courier.stop();
      for (const stream of streams) stream.end();
      reviews.closeStreams();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
    },
  };
}

/** The `Host` values a browser sends for this server: the address it listens on, and localhost. */
function loopbackHosts(host: string, port: number): string[] {
  const hosts = [`127.0.0.1:${port}`, `localhost:${port}`];
  // a wildcard address is not a name anyone reaches the server by
  if (host !== '0.0.0.0' && host !== '::') hosts.push(host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);
  return [...new Set(hosts)];
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function sendFile(res: ServerResponse, file: string, cache = 'no-cache'): Promise<void> {
  const data = await readFile(file).catch(() => undefined);
  if (!data) return sendJson(res, 404, NOT_FOUND);
  const type = TYPES[path.extname(file)] ?? 'application/octet-stream';
  if (type.startsWith('text/html')) res.setHeader('content-security-policy', PAGE_POLICY);
  res.writeHead(200, { 'content-type': type, 'cache-control': cache });
  res.end(data);
}

/** One of a job's images, from storage (another process may have downloaded it into the bucket). */
async function sendImage(res: ServerResponse, app: App, jobId: string, file: string): Promise<void> {
  const data = await app.files.read(jobId, file).catch((error: NodeJS.ErrnoException) => {
    // Only "no such image" is a 404; a store that fails is the request's failure (500, logged).
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (!data) return sendJson(res, 404, NOT_FOUND);
  res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'private, max-age=3600' });
  res.end(data);
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown> | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > BODY_MAX) return undefined;
    chunks.push(chunk as Buffer);
  }
  try {
    const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    return parsed && typeof parsed === 'object' ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
