/**
 * The bot's public HTTP server (reachable at PUBLIC_URL): a small route table on node:http. Today it
 * receives the providers' webhooks (src/web/webhooks.ts) and serves the review page (src/web/review-page.ts),
 * whose routes also answer with bytes (images) and server-sent-event streams. Every request is
 * untrusted: a body is read only for a route that wants one, and only up to a cap; an unknown path is
 * 404, a known path with another method 405. A refusal is answered with one line of reason, and
 * logged as one line (method, path, status, reason) — never the headers, the query or the body.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../core/ports.js';

/** The largest request body read @default 1 MiB */
export const MAX_BODY_BYTES = 1024 * 1024;

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface WebRequest {
  method: Method;
  /** the path without the query */
  path: string;
  /** values of the route's `:name` segments */
  params: Record<string, string>;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  /** the raw body, as received (signatures are computed over these bytes); empty for GET */
  body: Buffer;
}

export interface WebAnswer {
  status: number;
  /** a string is sent as text, a Buffer as bytes of `contentType`; anything else as JSON */
  body?: unknown;
  /** the type of a Buffer body @default 'application/octet-stream' */
  contentType?: string;
  headers?: Record<string, string>;
  /** why a request was refused: sent as `{"error": reason}` when there is no body, and logged */
  reason?: string;
  /**
   * A server-sent-events stream instead of a body (status 200): the socket stays open, `open` writes
   * frames through the stream it is given and returns what to undo when the client goes away (or the
   * server stops); the server adds a keep-alive comment now and then.
   */
  stream?: (events: EventStream) => (() => void) | void;
}

/** One open server-sent-events stream. */
export interface EventStream {
  /** writes `event: <event>` with `data` as JSON; nothing once closed */
  send(event: string, data: unknown): void;
  /** ends the stream from our side (the client's EventSource reconnects unless told otherwise) */
  close(): void;
  readonly closed: boolean;
}

export interface Route {
  method: Method;
  /** `/webhooks/fal`, or with named segments: `/review/:job/:image` */
  path: string;
  /** sent with every answer of this route, refusals included (Content-Security-Policy, nosniff, …) */
  headers?: Record<string, string>;
  handle(request: WebRequest): Promise<WebAnswer>;
}

export interface WebServerOptions {
  port: number;
  /** @default '0.0.0.0' */
  host?: string;
  routes?: Route[];
  log: Logger;
  /** @default MAX_BODY_BYTES */
  maxBodyBytes?: number;
  /** how long a client may take to send a whole request; an open event stream is not cut by it @default 30 s */
  requestTimeoutMs?: number;
  /** how often an open event stream gets a keep-alive comment (proxies close silent connections) @default 15 s */
  keepAliveMs?: number;
}

export interface WebServer {
  /** where it listens (`http://host:port`; 127.0.0.1 stands for 0.0.0.0) */
  url: string;
  port: number;
  /** adds routes; a request is matched against them in the order they were added */
  add(...routes: Route[]): void;
  stop(): Promise<void>;
}

interface CompiledRoute {
  route: Route;
  pattern: RegExp;
  names: string[];
}

function compile(route: Route): CompiledRoute {
  const names: string[] = [];
  const source = route.path
    .split('/')
    .map((segment) => {
      if (!segment.startsWith(':')) return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      names.push(segment.slice(1));
      return '([^/]+)';
    })
    .join('/');
  return { route, pattern: new RegExp(`^${source}$`), names };
}

class BodyTooLarge extends Error {}

/** The body, or BodyTooLarge past `max` bytes (a declared length past it is refused before reading). */
async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) throw new BodyTooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > max) throw new BodyTooLarge();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function send(res: ServerResponse, answer: WebAnswer, extra: Record<string, string> = {}): void {
  const body = answer.body !== undefined ? answer.body : answer.reason !== undefined ? { error: answer.reason } : { ok: true };
  const bytes = Buffer.isBuffer(body);
  const data = bytes ? body : typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(answer.status, {
    'content-type': bytes ? (answer.contentType ?? 'application/octet-stream') : typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
    'content-length': Buffer.byteLength(data),
    'cache-control': 'no-store',
    ...answer.headers,
    ...extra,
  });
  res.end(data);
}

/** Opens an event stream on `res`; its undo runs once, when either side closes it. */
function openStream(
  res: ServerResponse,
  open: NonNullable<WebAnswer['stream']>,
  headers: Record<string, string>,
  keepAliveMs: number,
  streams: Set<ServerResponse>,
): void {
  // No request or idle timeout applies to an answer that is meant to stay open.
  res.socket?.setTimeout(0);
  res.writeHead(200, {
    'cache-control': 'no-store',
    ...headers,
    'content-type': 'text/event-stream; charset=utf-8',
    connection: 'keep-alive',
    // nginx and friends buffer answers unless told not to, which holds every frame back
    'x-accel-buffering': 'no',
  });
  res.write(': connected\n\n');
  streams.add(res);
  let closed = false;
  let undo: (() => void) | void = undefined;
  const events: EventStream = {
    send(event, data) {
      if (closed) return;
      res.write(`event: ${event.replace(/[\r\n]/g, '')}\ndata: ${JSON.stringify(data)}\n\n`);
    },
    close() {
      if (!closed) res.end();
      finish();
    },
    get closed() {
      return closed;
    },
  };
  const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), keepAliveMs);
  keepAlive.unref();
  function finish() {
    if (closed) return;
    closed = true;
    clearInterval(keepAlive);
    streams.delete(res);
    undo?.();
  }
  res.on('close', finish);
  undo = open(events);
  // the client may have gone while `open` ran
  if (closed) undo?.();
}

/** Routes and how a request reaches one: the public server's, and the playground's for the pages they share. */
export interface RouteTable {
  add(...routes: Route[]): void;
  /** Answers `req` when a route's path matches it (false: none does, the request is left to the caller). */
  handle(req: IncomingMessage, res: ServerResponse): Promise<boolean>;
  /** ends every open event stream */
  closeStreams(): void;
}

export function routeTable(options: Pick<WebServerOptions, 'routes' | 'log' | 'maxBodyBytes' | 'keepAliveMs'>): RouteTable {
  const { log } = options;
  const maxBodyBytes = options.maxBodyBytes ?? MAX_BODY_BYTES;
  const routes: CompiledRoute[] = (options.routes ?? []).map(compile);
  const streams = new Set<ServerResponse>();

  const refuse = (res: ServerResponse, method: string, path: string, answer: WebAnswer, extra: Record<string, string> = {}) => {
    log.warn({ method: method.slice(0, 10), path: path.slice(0, 200), status: answer.status, reason: answer.reason }, 'web: request refused');
    send(res, answer, extra);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<boolean> => {
    const url = new URL(req.url ?? '/', 'http://bot.invalid');
    const method = (req.method ?? 'GET').toUpperCase();
    const path = url.pathname;
    const matching = routes.map((compiled) => ({ compiled, match: compiled.pattern.exec(path) })).filter((m) => m.match);
    if (matching.length === 0) return false;
    const found = matching.find((m) => m.compiled.route.method === method);
    if (!found) {
      const allow = [...new Set(matching.map((m) => m.compiled.route.method))].join(', ');
      refuse(res, method, path, { status: 405, reason: `method ${method.slice(0, 10)} not allowed here (allowed: ${allow})` }, { allow });
      return true;
    }
    let body: Buffer;
    try {
      body = method === 'GET' ? Buffer.alloc(0) : await readBody(req, maxBodyBytes);
    } catch (error) {
      if (!(error instanceof BodyTooLarge)) throw error;
      // The rest of the body is not read: the connection is closed once the answer is out.
      refuse(res, method, path, { status: 413, reason: `body larger than ${maxBodyBytes} bytes` }, { connection: 'close' });
      return true;
    }
    const { compiled } = found;
    const routeHeaders = compiled.route.headers ?? {};
    let params: Record<string, string>;
    try {
      params = Object.fromEntries(compiled.names.map((name, i) => [name, decodeURIComponent(found.match![i + 1]!)]));
    } catch {
      refuse(res, method, path, { status: 400, reason: 'malformed path', headers: routeHeaders });
      return true;
    }
    const given = await compiled.route.handle({ method: method as Method, path, params, query: url.searchParams, headers: req.headers, body });
    const answer = { ...given, headers: { ...routeHeaders, ...given.headers } };
    if (answer.status >= 400) refuse(res, method, path, answer);
    else if (answer.stream) openStream(res, answer.stream, answer.headers, options.keepAliveMs ?? 15_000, streams);
    else send(res, answer);
    return true;
  };

  return {
    add(...added) {
      routes.push(...added.map(compile));
    },
    handle,
    closeStreams() {
      for (const stream of streams) stream.end();
    },
  };
}

export async function startWebServer(options: WebServerOptions): Promise<WebServer> {
  const { log } = options;
  const table = routeTable(options);
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (await table.handle(req, res)) return;
    // Scanners knock on every door: not worth a warning each.
    log.debug({ method: req.method?.slice(0, 10), path: req.url?.split('?')[0]?.slice(0, 200) }, 'web: no such path');
    send(res, { status: 404, reason: 'no such path' });
  };

  const requestTimeout = options.requestTimeoutMs ?? 30_000;
  // Node looks for requests past their timeout this often (its default: 30 s).
  const server: Server = createServer({ connectionsCheckingInterval: Math.min(30_000, requestTimeout) }, (req, res) => {
    handle(req, res).catch((error: unknown) => {
      log.error({ err: error, method: req.method, path: req.url?.split('?')[0]?.slice(0, 200) }, 'web: a request failed');
      if (!res.headersSent) send(res, { status: 500, reason: 'internal error' });
      else res.destroy();
    });
  });
  // A slow sender cannot hold a socket for ever. (This bounds receiving a request: an event stream,
  // whose request was whole when it opened, is not cut by it.)
  server.requestTimeout = requestTimeout;
  server.headersTimeout = Math.min(10_000, server.requestTimeout);
  const host = options.host ?? '0.0.0.0';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shown}:${port}`,
    port,
    add(...added) {
      table.add(...added);
    },
    async stop() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        table.closeStreams();
        server.closeAllConnections();
      });
    },
  };
}
