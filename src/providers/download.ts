/**
 * The one way image bytes enter the process. A provider's output URL is model output — a model can
 * return `http://169.254.169.254/…` or a loopback port — so every URL, and every redirect hop, must
 * land on an allowed host before a byte is sent, and a media host's name must resolve only to public
 * addresses (checked inside the socket's own DNS lookup, so the address checked is the address
 * connected to: no rebinding between check and use). Bodies are streamed under a byte cap.
 *
 * Refusals all read the same, whatever was behind the URL: a message that differed by closed port,
 * private address or redirect target would let a model probe the network it cannot reach.
 */
import dns from 'node:dns';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import net, { type LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import { DOWNLOAD_RETRY_CAP_MS, ProviderError } from '../core/provider.js';
import type { FileFetcher } from '../core/ports.js';
import { retryAfterMs } from './http.js';

export interface DownloadPolicy {
  /** built-in provider media hosts: https only, default port only, the host itself or any subdomain
   *  (e.g. 'fal.media' matches 'v3.fal.media'); their resolved addresses must be public */
  mediaHosts: readonly string[];
  /** origins allowed explicitly (from FAL_BASE_URL / REPLICATE_BASE_URL): scheme, host AND port must match;
   *  plain http allowed; any address (loopback fine — it was allowed explicitly) */
  trustedOrigins: readonly string[];
  /** DOWNLOAD_HOSTS entries, `host` (port 443) or `host:port`: https only; any address (explicit) */
  extraHosts: readonly string[];
  /** bytes allowed for one image; more is refused while streaming, never buffered past it */
  maxBytes: number;
  /** one download's time limit (connect to last byte, redirects included) @default 30000 */
  timeoutMs?: number;
  /** @default 5 */
  maxRedirects?: number;
  /** DNS lookup (tests inject one); @default dns.lookup */
  lookup?: (hostname: string) => Promise<{ address: string; family: number }[]>;
}

/** fal serves outputs from its CDN: fal.media and its numbered shards (v2, v3, v3b …). */
export const FAL_MEDIA_HOSTS: readonly string[] = ['fal.media'];
/** Replicate serves outputs from replicate.delivery shards (pbxt., tjzk. …). */
export const REPLICATE_MEDIA_HOSTS: readonly string[] = ['replicate.delivery'];

const NOT_ALLOWED = 'the image URL is not on an allowed download host';
/** Enough of an error body to find `retry_after`, and no more. */
const ERROR_BODY_BYTES = 4096;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

const refused = () => new ProviderError('refused', NOT_ALLOWED);
const tooLarge = (maxBytes: number) =>
  new ProviderError('refused', `the image is larger than ${+(maxBytes / 2 ** 20).toPrecision(3)} MiB (MAX_IMAGE_BYTES)`);

/** True for a globally routable unicast address (IPv4-mapped IPv6 judged as the IPv4 inside). */
export function isPublicAddress(address: string): boolean {
  try {
    return ipaddr.process(address).range() === 'unicast';
  } catch {
    return false;
  }
}

/** What a URL may do under the policy: undefined = refused; `checkAddress` = resolve to public only. */
function ruleFor(url: URL, policy: DownloadPolicy): { checkAddress: boolean } | undefined {
  if (url.username || url.password) return undefined;
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return undefined;
  const trusted = policy.trustedOrigins.some((origin) => {
    const allowed = parseOrigin(origin);
    return allowed !== undefined && allowed === url.origin;
  });
  if (trusted) return { checkAddress: false };
  if (url.protocol !== 'https:') return undefined;
  // URL drops the scheme's default port, so '' is 443 on both sides of these comparisons.
  const extra = policy.extraHosts.some((entry) => {
    const allowed = parseHostEntry(entry);
    return allowed !== undefined && allowed.hostname === url.hostname && allowed.port === url.port;
  });
  if (extra) return { checkAddress: false };
  if (url.port !== '') return undefined;
  const host = url.hostname;
  const media = policy.mediaHosts.some((h) => {
    const name = h.toLowerCase();
    return host === name || host.endsWith(`.${name}`);
  });
  return media ? { checkAddress: true } : undefined;
}

function parseOrigin(origin: string): string | undefined {
  try {
    const url = new URL(origin);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.origin : undefined;
  } catch {
    return undefined;
  }
}

function parseHostEntry(entry: string): URL | undefined {
  try {
    const url = new URL(`https://${entry.trim()}`);
    // 'host/path' or 'user@host' is not a host entry; ignore it rather than widen it.
    return url.pathname === '/' && !url.search && !url.hash && !url.username && !url.password ? url : undefined;
  } catch {
    return undefined;
  }
}

/** True when the URL may be fetched under the policy (scheme/host/port only, no DNS). */
export function allowedUrl(url: string, policy: DownloadPolicy): boolean {
  try {
    return ruleFor(new URL(url), policy) !== undefined;
  } catch {
    return false;
  }
}

const bareHost = (url: URL) => url.hostname.replace(/^\[(.*)\]$/, '$1');

/** Refused inside the socket's lookup: not a network failure, a refusal. */
class AddressRefused extends Error {}

/**
 * A net lookup that resolves every address of the name and refuses the connection when any one of
 * them is not public (a name with one private address is pointed at us on purpose).
 */
function guardedLookup(resolve: NonNullable<DownloadPolicy['lookup']>): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname).then(
      (found) => {
        const family = typeof options.family === 'number' ? options.family : 0;
        const usable = family === 4 || family === 6 ? found.filter((a) => a.family === family) : found;
        if (found.some((a) => !isPublicAddress(a.address))) return callback(new AddressRefused(), '', 0);
        const first = usable[0];
        if (!first) return callback(Object.assign(new Error('no address'), { code: 'ENOTFOUND' }), '', 0);
        // With autoSelectFamily Node asks for every address; otherwise for one.
        if (options.all) return callback(null, usable);
        callback(null, first.address, first.family);
      },
      (error: NodeJS.ErrnoException) => callback(error, '', 0),
    );
  };
}

const systemLookup = async (hostname: string) => dns.promises.lookup(hostname, { all: true, verbatim: true });

/** Streams one image URL's bytes under the policy. */
export function createDownloader(
  policy: DownloadPolicy,
): (url: string, signal?: AbortSignal) => Promise<AsyncIterable<Uint8Array>> {
  const timeoutMs = policy.timeoutMs ?? 30_000;
  const maxRedirects = policy.maxRedirects ?? 5;
  const lookup = guardedLookup(policy.lookup ?? systemLookup);
  // Reused sockets skip the lookup, which is safe: the pool is keyed by scheme, host and port, and
  // the rule for a (scheme, host, port) never changes for this policy.
  const agents = { 'http:': new http.Agent({ keepAlive: true }), 'https:': new https.Agent({ keepAlive: true }) };

  return async (url, signal) => {
    const deadline = AbortSignal.timeout(timeoutMs);
    const stop = signal ? AbortSignal.any([signal, deadline]) : deadline;
    // Why the download stopped, in the words the caller gets; the caller's own abort stays an abort.
    const failure = (error: unknown): unknown => {
      if (error instanceof ProviderError) return error;
      if (error instanceof AddressRefused) return refused();
      if (deadline.aborted) return new ProviderError('timeout', 'image download timed out', { cause: error });
      if (signal?.aborted) return signal.reason;
      return new ProviderError('network', 'image download failed: connection error', { cause: error });
    };

    let target: URL;
    try {
      target = new URL(url);
    } catch {
      throw refused();
    }
    for (let hop = 0; ; hop += 1) {
      const rule = ruleFor(target, policy);
      if (!rule) throw refused();
      // Node skips the lookup for a literal address, so a literal is checked here, before connecting.
      const host = bareHost(target);
      if (rule.checkAddress && net.isIP(host) !== 0 && !isPublicAddress(host)) throw refused();

      let res: IncomingMessage;
      try {
        res = await send(target, host, rule.checkAddress ? lookup : undefined, agents[target.protocol as 'http:' | 'https:'], stop);
      } catch (error) {
        throw failure(error);
      }
      const status = res.statusCode ?? 0;
      if (REDIRECTS.has(status) && res.headers.location !== undefined) {
        res.destroy();
        if (hop >= maxRedirects) throw refused();
        try {
          target = new URL(res.headers.location, target);
        } catch {
          throw refused();
        }
        continue;
      }
      if (status >= 200 && status < 300) {
        const length = Number(res.headers['content-length']);
        if (Number.isFinite(length) && length > policy.maxBytes) {
          res.destroy();
          throw tooLarge(policy.maxBytes);
        }
        return capped(res, policy.maxBytes, stop, failure);
      }
      throw await statusError(res, status);
    }
  };
}

/** Sends one GET with no credentials of any kind; resolves at the response head. */
function send(
  target: URL,
  host: string,
  lookup: LookupFunction | undefined,
  agent: http.Agent,
  stop: AbortSignal,
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    if (stop.aborted) return reject(stop.reason instanceof Error ? stop.reason : new Error('aborted'));
    const request = (target.protocol === 'https:' ? https : http).request({
      method: 'GET',
      hostname: host,
      port: target.port || undefined,
      path: `${target.pathname}${target.search}`,
      agent,
      headers: { accept: 'image/*', 'user-agent': 'art-factory' },
      ...(lookup ? { lookup } : {}),
    });
    let response: IncomingMessage | undefined;
    // The listener outlives this promise: an abort must also end a body that is being streamed.
    const onAbort = () => {
      const reason = stop.reason instanceof Error ? stop.reason : new Error('aborted');
      request.destroy(reason);
      response?.destroy(reason);
    };
    stop.addEventListener('abort', onAbort, { once: true });
    // `on`, not `once`: a socket error after the response head is reported here too (the body's
    // reader sees it as well), and a second error with no listener would crash the process.
    request.on('error', (error) => {
      stop.removeEventListener('abort', onAbort);
      reject(error);
    });
    request.once('response', (res) => {
      response = res;
      res.once('close', () => stop.removeEventListener('abort', onAbort));
      resolve(res);
    });
    request.end();
  });
}

/** The body, one chunk at a time; passing maxBytes destroys the response before the chunk is yielded. */
async function* capped(
  res: IncomingMessage,
  maxBytes: number,
  stop: AbortSignal,
  failure: (error: unknown) => unknown,
): AsyncGenerator<Uint8Array> {
  let total = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxBytes) throw tooLarge(maxBytes);
      yield chunk;
    }
    // A body cut short by an abort can end quietly instead of throwing; it is not a whole image.
    if (stop.aborted || !res.complete) throw stop.reason ?? new Error('incomplete body');
  } catch (error) {
    throw failure(error);
  } finally {
    res.destroy();
  }
}

/** A non-2xx answer from an allowed host: transient (429, 5xx) or not, never a lane-wide pause. */
async function statusError(res: IncomingMessage, status: number): Promise<ProviderError> {
  if (status !== 429 && status < 500) {
    res.destroy();
    return new ProviderError('failed', `image download failed (HTTP ${status})`, { status });
  }
  const body = await smallBody(res);
  const headers = new Headers();
  const header = res.headers['retry-after'];
  if (typeof header === 'string') {
    try {
      headers.set('retry-after', header);
    } catch {
      // an unusable header is no header
    }
  }
  const wait = retryAfterMs(headers, body);
  // An image host's 429 is that host's trouble: 'server' retries this image with the normal backoff,
  // where 'rate_limited' would pause every call to the provider.
  return new ProviderError('server', `image download failed (HTTP ${status})`, {
    status,
    ...(wait === undefined ? {} : { retryAfterMs: Math.min(DOWNLOAD_RETRY_CAP_MS, wait) }),
  });
}

/** At most ERROR_BODY_BYTES of an error body, parsed as JSON when it is JSON. */
async function smallBody(res: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= ERROR_BODY_BYTES) break;
    }
  } catch {
    // a broken error body still leaves the status to report
  } finally {
    res.destroy();
  }
  const text = Buffer.concat(chunks).subarray(0, ERROR_BODY_BYTES).toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** What a provider is given to fetch one output image. */
export type Downloader = ReturnType<typeof createDownloader>;

/**
 * A FileFetcher (core/ports.ts) on this layer: one downloader per policy, the URL checked before any
 * request, the bytes gathered (files fetched this way are small: the policy's cap).
 */
export function createFileFetcher(options: { lookup?: DownloadPolicy['lookup'] } = {}): FileFetcher {
  const downloaders = new Map<string, Downloader>();
  return async (url, wanted) => {
    const policy: DownloadPolicy = {
      mediaHosts: wanted.hosts,
      trustedOrigins: wanted.origins,
      extraHosts: [],
      maxBytes: wanted.maxBytes,
      timeoutMs: wanted.timeoutMs,
      maxRedirects: 2,
      ...(options.lookup ? { lookup: options.lookup } : {}),
    };
    if (!allowedUrl(url, policy)) throw new ProviderError('invalid', 'the file is not on a host it may be fetched from');
    const key = JSON.stringify(wanted);
    let download = downloaders.get(key);
    if (!download) downloaders.set(key, (download = createDownloader(policy)));
    const chunks: Uint8Array[] = [];
    for await (const chunk of await download(url)) chunks.push(chunk);
    return Buffer.concat(chunks);
  };
}
