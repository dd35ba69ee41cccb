// Shared plumbing for the provider fakes (fal.ts, replicate.ts): a loopback
// node:http server, JSON helpers, the call log, the fault-rule book with its
// seeded RNG, and a fetch wrapper that refuses to leave 127.0.0.1.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

// ---------------------------------------------------------------- public types

export type FaultTarget = 'submit' | 'status' | 'result' | 'cancel' | 'file';

export type Fault =
  | { kind: 'rate-limit'; retryAfterSeconds: number; where?: 'header' | 'body' | 'both' } // 429; default where: 'both'
  | { kind: 'server-error'; status?: number } // default 500
  | { kind: 'hang' } // never answers until close()
  | { kind: 'drop' } // sends the headers and a few bytes, then drops the connection
  | { kind: 'unauthorized' } // 401, as the real API answers a bad/expired key
  | { kind: 'partial'; images: number } // fewer images than asked
  | { kind: 'failed'; message?: string }; // the generation itself fails

export interface FaultRule {
  on: FaultTarget;
  fault: Fault;
  /** Applies to the next N matching calls (default 1). Ignored when `probability` is set. */
  times?: number;
  /** Lets this many matching calls through before the rule applies (e.g. 2 = the 3rd call). */
  after?: number;
  /** Applies to each matching call with this chance, drawn from the fake's seeded RNG. */
  probability?: number;
}

export interface RecordedCall {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  body: unknown;
  /** Epoch ms when the request arrived. */
  at: number;
  fault?: Fault['kind'];
  /** The wait a 429 told the client (in Retry-After and/or the body), in seconds: what tests hold the client to. */
  retryAfterSeconds?: number;
}

export interface FakeOptions {
  /** If set, requests whose credentials differ get 401. */
  key?: string;
  /** Time from submit to completion, in ms (default 30). */
  latencyMs?: number;
  /** Seed of the RNG used for `probability` rules (default 1). */
  rngSeed?: number;
  /** A prompt containing this word is flagged NSFW (default 'NSFW-TEST'). */
  nsfwWord?: string;
}

export interface FakeCommon {
  /** Base URL of the fake (fal: the origin; replicate: origin + '/v1'). */
  url: string;
  /** Every request, in arrival order (faulted ones too, with `fault` set). */
  calls: RecordedCall[];
  /** Only the create/submit calls. */
  submits(): RecordedCall[];
  inject(rule: FaultRule): void;
  clearFaults(): void;
  /** Time from submit to completion for later submits. */
  setLatency(ms: number): void;
  /** Stops the server and destroys every socket, hanging requests included. */
  close(): Promise<void>;
}

// Faults that replace the HTTP answer, versus faults that change what the
// generation produces (those are consumed by the provider logic, not here).
export type HttpFault = Extract<Fault, { kind: 'rate-limit' | 'server-error' | 'hang' | 'unauthorized' | 'drop' }>;
export type GenerationFault = Extract<Fault, { kind: 'partial' | 'failed' }>;

export function isHttpFault(f: Fault): f is HttpFault {
  return f.kind === 'rate-limit' || f.kind === 'server-error' || f.kind === 'hang' || f.kind === 'unauthorized' || f.kind === 'drop';
}
export function isGenerationFault(f: Fault): f is GenerationFault {
  return f.kind === 'partial' || f.kind === 'failed';
}

// ---------------------------------------------------------------- seeded RNG

/** mulberry32: tiny, fast, good enough for reproducible fault schedules. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------- fault rules

interface ActiveRule {
  rule: FaultRule;
  remaining: number; // only meaningful without probability
  skip: number; // matching calls still let through
}

/**
 * Holds injected rules and decides, call by call, whether one fires.
 * The RNG is private to the book so that only probability rolls consume it:
 * the same seed and the same sequence of matching calls give the same faults.
 */
export class FaultBook {
  private rules: ActiveRule[] = [];
  private readonly rng: () => number;

  constructor(seed: number) {
    this.rng = mulberry32(seed);
  }

  inject(rule: FaultRule): void {
    if (rule.probability !== undefined && !(rule.probability >= 0 && rule.probability <= 1)) {
      throw new RangeError(`probability must be within [0, 1], got ${rule.probability}`);
    }
    this.rules.push({ rule, remaining: rule.times ?? 1, skip: rule.after ?? 0 });
  }

  clear(): void {
    this.rules = [];
  }

  /**
   * First rule (in injection order) for `target` whose fault passes `accept`
   * and fires now. `accept` lets the HTTP layer and the generation logic pick
   * their own kinds of faults off the same target without eating each other's.
   */
  take<F extends Fault>(target: FaultTarget, accept: (f: Fault) => f is F): F | undefined {
    for (const active of this.rules) {
      const { rule } = active;
      if (rule.on !== target || !accept(rule.fault)) continue;
      if (active.skip > 0) {
        active.skip -= 1;
        continue;
      }
      if (rule.probability !== undefined) {
        if (this.rng() < rule.probability) return rule.fault;
        continue;
      }
      if (active.remaining <= 0) continue;
      active.remaining -= 1;
      if (active.remaining === 0) this.rules = this.rules.filter((r) => r !== active);
      return rule.fault;
    }
    return undefined;
  }
}

// ---------------------------------------------------------------- provider-side rate limit

/**
 * A provider's own limit, as the fakes enforce it when asked (`rateLimit` option): at most `limit`
 * accepted requests in any rolling window of `intervalMs`. Only accepted requests count.
 */
export class RollingLimit {
  private readonly accepted: number[] = [];

  constructor(readonly limit: number, readonly intervalMs: number) {
    if (!(Number.isInteger(limit) && limit >= 1 && intervalMs > 0)) {
      throw new RangeError(`rateLimit must be { limit ≥ 1, intervalMs > 0 }, got ${limit} / ${intervalMs}`);
    }
  }

  /** 0 = accepted (and counted); else ms until the oldest counted request leaves the window. */
  admit(now: number): number {
    while (this.accepted.length > 0 && this.accepted[0]! <= now - this.intervalMs) this.accepted.shift();
    if (this.accepted.length < this.limit) {
      this.accepted.push(now);
      return 0;
    }
    return Math.max(1, this.accepted[0]! + this.intervalMs - now);
  }
}

// ---------------------------------------------------------------- HTTP helpers

export interface ParsedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  raw: string;
  body: unknown; // parsed JSON, the raw text if it was not JSON, undefined if empty
}

export async function readRequest(req: IncomingMessage): Promise<ParsedRequest> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks).toString('utf8');
  let body: unknown;
  if (raw.length > 0) {
    try {
      body = JSON.parse(raw);
    } catch {
      body = raw;
    }
  }
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return {
    method: (req.method ?? 'GET').toUpperCase(),
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
    headers,
    raw,
    body,
  };
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

export function sendBytes(res: ServerResponse, status: number, bytes: Buffer, contentType: string): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': bytes.length });
  res.end(bytes);
}

/** Error bodies differ per provider; each fake supplies its own. */
export interface ErrorDialect {
  rateLimited(retryAfterSeconds: number, where: 'header' | 'body' | 'both'): { body: unknown; headers: Record<string, string> };
  unauthorized(): unknown;
  serverError(status: number): unknown;
}

export function plainObject(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

// ---------------------------------------------------------------- the server core

export interface FakeCore {
  readonly origin: string;
  readonly calls: RecordedCall[];
  readonly faults: FaultBook;
  readonly options: Required<Omit<FakeOptions, 'key'>> & { key: string | undefined };
  latencyMs: number;
  /** Record the request (always) and return the entry so a fault can be noted on it. */
  record(req: ParsedRequest): RecordedCall;
  /** Answer with an HTTP-level fault; 'hang' leaves the request open until close(). */
  sendHttpFault(res: ServerResponse, call: RecordedCall, fault: HttpFault, dialect: ErrorDialect): void;
  /** A sleep that ends early when the fake closes (for Prefer: wait). */
  sleep(ms: number): Promise<void>;
  readonly closed: boolean;
  close(): Promise<void>;
}

export type Handler = (core: FakeCore, req: ParsedRequest, res: ServerResponse) => Promise<void> | void;

/** Starts a node:http server on 127.0.0.1, port 0, around `handler`. */
export async function startCore(options: FakeOptions | undefined, handler: Handler): Promise<FakeCore> {
  const opts = {
    key: options?.key,
    latencyMs: options?.latencyMs ?? 30,
    rngSeed: options?.rngSeed ?? 1,
    nsfwWord: options?.nsfwWord ?? 'NSFW-TEST',
  };
  const calls: RecordedCall[] = [];
  const faults = new FaultBook(opts.rngSeed);
  const wakers = new Set<() => void>();
  let closed = false;

  const server = createServer((req, res) => {
    readRequest(req)
      .then((parsed) => handler(core, parsed, res))
      .catch((err: unknown) => {
        // A bug in a fake should surface as a loud 500, not a silent hang.
        if (!res.headersSent && !res.destroyed) {
          sendJson(res, 500, { detail: `fake server bug: ${err instanceof Error ? err.stack : String(err)}` });
        }
      });
  });
  // Keep-alive sockets would otherwise hold close() open until they time out.
  server.keepAliveTimeout = 1000;

  const port = await listenOnLoopback(server);

  const core: FakeCore = {
    origin: `http://127.0.0.1:${port}`,
    calls,
    faults,
    options: opts,
    latencyMs: opts.latencyMs,
    get closed() {
      return closed;
    },
    record(req) {
      const call: RecordedCall = {
        method: req.method,
        path: req.path,
        query: req.query,
        headers: req.headers,
        body: req.body,
        at: Date.now(),
      };
      calls.push(call);
      return call;
    },
    sendHttpFault(res, call, fault, dialect) {
      call.fault = fault.kind;
      switch (fault.kind) {
        case 'hang':
          return; // the socket is destroyed by close()
        case 'drop':
          // A promised body cut short: the client sees the connection end mid-download.
          res.writeHead(200, { 'content-type': 'image/png', 'content-length': 100_000 });
          res.write(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
          setTimeout(() => res.destroy(), 5);
          return;
        case 'unauthorized':
          return sendJson(res, 401, dialect.unauthorized());
        case 'server-error': {
          const status = fault.status ?? 500;
          return sendJson(res, status, dialect.serverError(status));
        }
        case 'rate-limit': {
          call.retryAfterSeconds = fault.retryAfterSeconds;
          const { body, headers } = dialect.rateLimited(fault.retryAfterSeconds, fault.where ?? 'both');
          return sendJson(res, 429, body, headers);
        }
      }
    },
    sleep(ms) {
      if (closed) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          wakers.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, ms);
        wakers.add(wake);
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const wake of [...wakers]) wake();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Destroys idle keep-alive sockets and hanging requests alike.
        server.closeAllConnections();
      });
    },
  };
  return core;
}

// ---------------------------------------------------------------- test helpers

/**
 * A fetch that refuses every host but 127.0.0.1, for handing to the real
 * clients: a test that forgot to redirect a URL fails loudly instead of
 * reaching the internet. Throws a plain Error (not a TypeError "fetch failed")
 * so the fal client does not treat it as a retryable network error.
 */
export const loopbackFetch: typeof fetch = async (input, init) => {
  const href = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  const { hostname } = new URL(href);
  if (hostname !== '127.0.0.1') {
    throw new Error(`loopbackFetch: refusing to reach ${hostname} (${href})`);
  }
  return fetch(input, init);
};

/** Polls `probe` every `intervalMs` until `done` holds, or fails after `timeoutMs`. */
export async function pollUntil<T>(
  probe: () => Promise<T>,
  done: (value: T) => boolean,
  { intervalMs = 5, timeoutMs = 5000 }: { intervalMs?: number; timeoutMs?: number } = {},
): Promise<{ value: T; seen: T[] }> {
  const deadline = Date.now() + timeoutMs;
  const seen: T[] = [];
  for (;;) {
    const value = await probe();
    seen.push(value);
    if (done(value)) return { value, seen };
    if (Date.now() > deadline) throw new Error(`pollUntil: gave up after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Listens on 127.0.0.1, on a port the OS chooses; resolves with it. */
export async function listenOnLoopback(server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

// ---------------------------------------------------------------- webhook deliveries

/** What can go wrong with the next webhook deliveries (see `WebhookOutbox.inject`). */
export type WebhookFault =
  | { kind: 'drop' } // never sent
  | { kind: 'bad-signature' } // sent with a signature that does not verify
  | { kind: 'old-timestamp'; seconds?: number } // signed correctly, but dated this long ago (default 600)
  | { kind: 'replay' } // sent twice, the same bytes and headers, the second once the first is answered
  | { kind: 'unknown-id' } // about a request id nobody submitted, instead of the real one
  | { kind: 'delay'; ms: number }; // sent this much later

/** One webhook POST the fake made (or dropped), with the answer it got. */
export interface WebhookDelivery {
  url: string;
  /** the request id the body is about */
  requestId: string;
  headers: Record<string, string>;
  body: string;
  /** Epoch ms when it was sent (or dropped). */
  at: number;
  fault?: WebhookFault['kind'];
  /** the receiver's HTTP status; 0 when it could not be reached; undefined while unanswered or dropped */
  status?: number;
  /** the receiver's answer body (first 300 characters) */
  answer?: string;
}

/** How a provider signs a delivery. */
export interface WebhookSigner {
  headers(body: string, requestId: string, timestampSeconds: number): Record<string, string>;
  /** the same headers with a signature that does not verify */
  corrupt(headers: Record<string, string>): Record<string, string>;
}

/**
 * Sends a fake's signed webhooks, with the faults injected for them, and keeps a log of every delivery.
 * Timers and sends in flight are dropped by close().
 */
export class WebhookOutbox {
  readonly deliveries: WebhookDelivery[] = [];
  private readonly rules: { fault: WebhookFault; remaining: number }[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(
    private readonly signer: WebhookSigner,
    /** a request id of the provider's form that nobody submitted */
    private readonly unknownId: () => string,
  ) {}

  /** The next `times` deliveries get `fault` (rules apply in the order injected). */
  inject(fault: WebhookFault, times = 1): void {
    this.rules.push({ fault, remaining: times });
  }

  /** Runs `fn` after `ms` unless the fake closes first. */
  later(ms: number, fn: () => void): void {
    if (this.closed) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.closed) fn();
    }, Math.max(0, ms));
    this.timers.add(timer);
  }

  /** Delivers `body(requestId)` to `url`, signed, with the next fault applied. */
  send(url: string, requestId: string, body: (requestId: string) => string): void {
    const rule = this.rules.find((r) => r.remaining > 0);
    if (rule) rule.remaining -= 1;
    const fault = rule?.fault;
    if (fault?.kind === 'delay') return this.later(fault.ms, () => void this.post(url, requestId, body, fault));
    void this.post(url, requestId, body, fault);
  }

  private async post(url: string, realId: string, makeBody: (requestId: string) => string, fault: WebhookFault | undefined): Promise<void> {
    const requestId = fault?.kind === 'unknown-id' ? this.unknownId() : realId;
    const body = makeBody(requestId);
    const seconds = Math.floor(Date.now() / 1000) - (fault?.kind === 'old-timestamp' ? (fault.seconds ?? 600) : 0);
    let headers = { 'content-type': 'application/json', ...this.signer.headers(body, requestId, seconds) };
    if (fault?.kind === 'bad-signature') headers = { ...headers, ...this.signer.corrupt(headers) };
    const record = (): WebhookDelivery => {
      const delivery: WebhookDelivery = { url, requestId, headers, body, at: Date.now(), ...(fault ? { fault: fault.kind } : {}) };
      this.deliveries.push(delivery);
      return delivery;
    };
    if (fault?.kind === 'drop') return void record();
    for (let copy = 0; copy < (fault?.kind === 'replay' ? 2 : 1) && !this.closed; copy += 1) {
      const delivery = record();
      try {
        const response = await loopbackFetch(url, { method: 'POST', headers, body });
        delivery.answer = (await response.text()).slice(0, 300);
        delivery.status = response.status;
      } catch {
        delivery.status = 0;
      }
    }
  }

  close(): void {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }
}
