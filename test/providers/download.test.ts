import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { ProviderError } from '../../src/core/provider.js';
import {
  allowedUrl,
  createDownloader,
  FAL_MEDIA_HOSTS,
  isPublicAddress,
  REPLICATE_MEDIA_HOSTS,
  type DownloadPolicy,
} from '../../src/providers/download.js';
import { RETRY_AFTER_CAP_MS, retryAfterMs } from '../../src/providers/http.js';
import { onCleanup, rejectionOf } from '../helpers.js';

const NOT_ALLOWED = 'the image URL is not on an allowed download host';
const MiB = 2 ** 20;

interface Host {
  origin: string;
  port: number;
  /** every request that reached the handler */
  requests: { path: string; headers: IncomingHttpHeaders }[];
  /** TCP connections accepted, requests or not */
  connections: number;
}

/** A loopback image host; the handler answers by path. */
async function startHost(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Host> {
  const server = createServer((req, res) => {
    host.requests.push({ path: req.url ?? '', headers: req.headers });
    handler(req, res);
  });
  server.on('connection', () => {
    host.connections += 1;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const host: Host = { origin: `http://127.0.0.1:${port}`, port, requests: [], connections: 0 };
  onCleanup(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  return host;
}

const png = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');

/** A lookup that records each name it is asked for and answers the given addresses. */
function lookupAnswering(...addresses: string[]) {
  const asked: string[] = [];
  const lookup = async (hostname: string) => {
    asked.push(hostname);
    return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  return { asked, lookup };
}

function policy(overrides: Partial<DownloadPolicy> = {}): DownloadPolicy {
  return {
    mediaHosts: [...FAL_MEDIA_HOSTS, ...REPLICATE_MEDIA_HOSTS],
    trustedOrigins: [],
    extraHosts: [],
    maxBytes: 25 * MiB,
    timeoutMs: 5_000,
    ...overrides,
  };
}

async function collect(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function refusal(p: Promise<unknown>): Promise<ProviderError> {
  const error = await rejectionOf(p);
  expect(error).toBeInstanceOf(ProviderError);
  return error as ProviderError;
}

/** Serves `png` at /image.png, redirects /to?u=URL, and 302-chains /loop/N → /loop/N+1. */
const imageHost = () =>
  startHost((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/image.png') {
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': png.length });
      res.end(png);
    } else if (url.pathname === '/to') {
      res.writeHead(302, { location: url.searchParams.get('u') ?? '/' });
      res.end();
    } else if (url.pathname.startsWith('/loop/')) {
      res.writeHead(302, { location: `/loop/${Number(url.pathname.slice(6)) + 1}` });
      res.end();
    } else {
      res.writeHead(404);
      res.end();
    }
  });

describe('createDownloader: hosts and redirects', () => {
  it('downloads from an explicitly trusted origin, sending no credentials', async () => {
    const a = await imageHost();
    const download = createDownloader(policy({ trustedOrigins: [`${a.origin}/v1`] }));
    expect(await collect(await download(`${a.origin}/image.png`))).toEqual(png);
    expect(a.requests).toHaveLength(1);
    const headers = a.requests[0]!.headers;
    expect(headers.authorization).toBeUndefined();
    expect(headers.cookie).toBeUndefined();
    expect(headers['proxy-authorization']).toBeUndefined();
  });

  it('refuses a loopback server that was not allowed, without a request or a connection', async () => {
    const a = await imageHost();
    const b = await imageHost();
    const download = createDownloader(policy({ trustedOrigins: [a.origin] }));
    const error = await refusal(download(`${b.origin}/image.png`));
    expect(error.kind).toBe('refused');
    expect(error.retryable).toBe(false);
    expect(error.message).toBe(NOT_ALLOWED);
    expect(b.requests).toHaveLength(0);
    expect(b.connections).toBe(0);
  });

  it('refuses a redirect to a host that is not allowed, and that host sees nothing', async () => {
    const a = await imageHost();
    const b = await imageHost();
    const download = createDownloader(policy({ trustedOrigins: [a.origin] }));
    const error = await refusal(download(`${a.origin}/to?u=${encodeURIComponent(`${b.origin}/image.png`)}`));
    expect(error.message).toBe(NOT_ALLOWED);
    expect(a.requests.map((r) => r.path)).toEqual([`/to?u=${encodeURIComponent(`${b.origin}/image.png`)}`]);
    expect(b.connections).toBe(0);
  });

  it('follows a redirect to another path of the same allowed origin', async () => {
    const a = await imageHost();
    const download = createDownloader(policy({ trustedOrigins: [a.origin] }));
    expect(await collect(await download(`${a.origin}/to?u=%2Fimage.png`))).toEqual(png);
    expect(a.requests.map((r) => r.path)).toEqual(['/to?u=%2Fimage.png', '/image.png']);
  });

  it('refuses a redirect chain longer than maxRedirects, and follows one that fits', async () => {
    const a = await imageHost();
    const download = createDownloader(policy({ trustedOrigins: [a.origin], maxRedirects: 2 }));
    const error = await refusal(download(`${a.origin}/loop/0`));
    expect(error.message).toBe(NOT_ALLOWED);
    expect(a.requests.map((r) => r.path)).toEqual(['/loop/0', '/loop/1', '/loop/2']);

    const fits = createDownloader(policy({ trustedOrigins: [a.origin], maxRedirects: 2 }));
    const twoHops = `/to?u=${encodeURIComponent('/to?u=%2Fimage.png')}`;
    expect(await collect(await fits(`${a.origin}${twoHops}`))).toEqual(png);
  });

  it('refuses a URL with userinfo, even on a trusted origin', async () => {
    const a = await imageHost();
    const download = createDownloader(policy({ trustedOrigins: [a.origin] }));
    const error = await refusal(download(`http://user:pass@127.0.0.1:${a.port}/image.png`));
    expect(error.message).toBe(NOT_ALLOWED);
    expect(a.connections).toBe(0);
  });

  it('refuses metadata, IPv6 loopback and https loopback literals without a lookup or a connection', async () => {
    const a = await imageHost();
    const { asked, lookup } = lookupAnswering('8.8.8.8');
    const download = createDownloader(policy({ trustedOrigins: [a.origin], lookup }));
    for (const url of ['http://169.254.169.254/latest/meta-data/', `http://[::1]:${a.port}/image.png`, 'https://127.0.0.1/']) {
      const error = await refusal(download(url));
      expect(error.kind, url).toBe('refused');
      expect(error.message, url).toBe(NOT_ALLOWED);
    }
    expect(asked).toEqual([]);
    expect(a.connections).toBe(0);
  });

  it('refuses a media host whose name resolves to a non-public address, with the same message', async () => {
    const a = await imageHost();
    const notAllowed = await refusal(createDownloader(policy())(`${a.origin}/image.png`));
    for (const address of ['127.0.0.1', '10.0.0.1', '169.254.169.254', '::ffff:127.0.0.1', '::1', '100.64.0.1', 'fd00::1']) {
      const { asked, lookup } = lookupAnswering(address);
      const error = await refusal(createDownloader(policy({ lookup }))('https://v3.fal.media/files/x.png'));
      // 'refused', not 'network': a connection to 127.0.0.1:443 would have failed with ECONNREFUSED.
      expect(error.kind, address).toBe('refused');
      expect(error.message, address).toBe(notAllowed.message);
      expect(asked, address).toEqual(['v3.fal.media']);
    }
  });

  it('checks a literal address on a media host before connecting, since Node skips the lookup for it', async () => {
    const { asked, lookup } = lookupAnswering('8.8.8.8');
    const download = createDownloader(policy({ mediaHosts: ['127.0.0.1', '::1'], lookup }));
    for (const url of ['https://127.0.0.1/x.png', 'https://[::1]/x.png']) {
      // 'refused', not 'network': nothing listens on port 443 here, so a connection would fail loudly.
      expect((await refusal(download(url))).kind, url).toBe('refused');
    }
    expect(asked).toEqual([]);
  });

  it('refuses a name when any one of its addresses is not public', async () => {
    const { asked, lookup } = lookupAnswering('8.8.8.8', '192.168.1.10');
    const error = await refusal(createDownloader(policy({ lookup }))('https://pbxt.replicate.delivery/a/out-0.png'));
    expect(error.message).toBe(NOT_ALLOWED);
    expect(asked).toEqual(['pbxt.replicate.delivery']);
  });
});

describe('isPublicAddress', () => {
  it('accepts global unicast addresses and refuses every special range', () => {
    expect(['8.8.8.8', '151.101.1.1', '2606:4700::1111', '::ffff:8.8.8.8'].filter((a) => !isPublicAddress(a))).toEqual([]);
    const special = [
      '127.0.0.1', '0.0.0.0', '10.1.2.3', '172.16.0.1', '192.168.0.1', '169.254.169.254', '100.64.0.1',
      '224.0.0.1', '255.255.255.255', '240.0.0.1', '::', '::1', 'fe80::1', 'fc00::1', '::ffff:10.0.0.1', 'not-an-ip',
    ];
    expect(special.filter((a) => isPublicAddress(a))).toEqual([]);
  });
});

describe('allowedUrl', () => {
  it('matches a DOWNLOAD_HOSTS entry by host and port, 443 when none is given', () => {
    const p = policy({ extraHosts: ['cdn.example.com', 'images.example.com:8443'] });
    expect(allowedUrl('https://cdn.example.com/a.png', p)).toBe(true);
    expect(allowedUrl('https://cdn.example.com:443/a.png', p)).toBe(true);
    expect(allowedUrl('https://cdn.example.com:8443/a.png', p)).toBe(false);
    expect(allowedUrl('http://cdn.example.com/a.png', p)).toBe(false);
    expect(allowedUrl('https://sub.cdn.example.com/a.png', p)).toBe(false);
    expect(allowedUrl('https://images.example.com:8443/a.png', p)).toBe(true);
    expect(allowedUrl('https://images.example.com/a.png', p)).toBe(false);
    expect(allowedUrl('https://images.example.com:9443/a.png', p)).toBe(false);
  });

  it('matches a media host and its subdomains on https and the default port only', () => {
    const p = policy();
    expect(allowedUrl('https://fal.media/files/x.png', p)).toBe(true);
    expect(allowedUrl('https://v3.fal.media/files/x.png', p)).toBe(true);
    expect(allowedUrl('https://pbxt.replicate.delivery/x/out-0.webp', p)).toBe(true);
    expect(allowedUrl('https://v3.fal.media:8443/files/x.png', p)).toBe(false);
    expect(allowedUrl('http://v3.fal.media/files/x.png', p)).toBe(false);
    expect(allowedUrl('https://evilfal.media/x.png', p)).toBe(false);
    expect(allowedUrl('https://fal.media.evil.example/x.png', p)).toBe(false);
    expect(allowedUrl('https://metadata.google.internal/computeMetadata/v1/', p)).toBe(false);
    expect(allowedUrl('file:///etc/passwd', p)).toBe(false);
    expect(allowedUrl('not a url', p)).toBe(false);
  });

  it('matches a trusted origin by scheme, host and port', () => {
    const p = policy({ trustedOrigins: ['http://127.0.0.1:4010/v1'] });
    expect(allowedUrl('http://127.0.0.1:4010/files/a.png', p)).toBe(true);
    expect(allowedUrl('http://127.0.0.1:4011/files/a.png', p)).toBe(false);
    expect(allowedUrl('https://127.0.0.1:4010/files/a.png', p)).toBe(false);
    expect(allowedUrl('http://localhost:4010/files/a.png', p)).toBe(false);
  });
});

describe('createDownloader: size cap', () => {
  it('stops a 40 MB chunked body past 25 MiB, having yielded no more than the cap', async () => {
    const total = 40_000_000;
    let written = 0;
    let responseClosed!: () => void;
    const closed = new Promise<void>((r) => (responseClosed = r));
    const host = await startHost((_req, res) => {
      res.on('close', () => responseClosed());
      res.writeHead(200, { 'content-type': 'image/png' }); // no content-length: chunked
      const chunk = Buffer.alloc(64 * 1024, 7);
      // Written lazily: the next chunk only once the socket has drained the last ones.
      const pump = () => {
        while (written < total && !res.destroyed) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });

    const download = createDownloader(policy({ trustedOrigins: [host.origin], maxBytes: 25 * MiB }));
    let yielded = 0;
    const error = await refusal(
      (async () => {
        for await (const chunk of await download(`${host.origin}/big.png`)) yielded += chunk.length;
      })(),
    );
    expect(error.kind).toBe('refused');
    expect(error.message).toBe('the image is larger than 25 MiB (MAX_IMAGE_BYTES)');
    expect(yielded).toBeLessThanOrEqual(25 * MiB);
    await closed;
    expect(written).toBeLessThan(total);
  });

  it('refuses a Content-Length over the cap before reading the body', async () => {
    let written = 0;
    const host = await startHost((_req, res) => {
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': 40_000_000 });
      // Only the head and one chunk; the rest would follow only if someone read it.
      res.write(Buffer.alloc(1024));
      written += 1024;
    });
    const download = createDownloader(policy({ trustedOrigins: [host.origin], maxBytes: 25 * MiB }));
    const error = await refusal(download(`${host.origin}/big.png`));
    expect(error.kind).toBe('refused');
    expect(error.message).toBe('the image is larger than 25 MiB (MAX_IMAGE_BYTES)');
    expect(written).toBe(1024);
  });
});

describe('createDownloader: failures of an allowed host', () => {
  const failing = (status: number, headers: Record<string, string> = {}, body = '') =>
    startHost((_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(body);
    });

  it('turns a 429 into a retryable server error, its Retry-After capped at 10 s', async () => {
    const host = await failing(429, { 'retry-after': '100000000' });
    const error = await refusal(createDownloader(policy({ trustedOrigins: [host.origin] }))(`${host.origin}/a.png`));
    expect(error.kind).toBe('server');
    expect(error.kind).not.toBe('rate_limited');
    expect(error.retryable).toBe(true);
    expect(error.details).toMatchObject({ status: 429, retryAfterMs: 10_000 });
    expect(error.message).toBe('image download failed (HTTP 429)');
  });

  it('honours a short Retry-After from a 503 body as it is', async () => {
    const host = await failing(503, {}, JSON.stringify({ retry_after: 2 }));
    const error = await refusal(createDownloader(policy({ trustedOrigins: [host.origin] }))(`${host.origin}/a.png`));
    expect(error.kind).toBe('server');
    expect(error.details).toMatchObject({ status: 503, retryAfterMs: 2_000 });
    expect(error.message).toBe('image download failed (HTTP 503)');
  });

  it('reports a 404 as a failed download with its status', async () => {
    const host = await failing(404);
    const error = await refusal(createDownloader(policy({ trustedOrigins: [host.origin] }))(`${host.origin}/a.png`));
    expect(error.kind).toBe('failed');
    expect(error.details.status).toBe(404);
    expect(error.message).toBe('image download failed (HTTP 404)');
  });

  it('reports a dropped connection as a network error without naming the host', async () => {
    const host = await startHost((req) => req.socket.destroy());
    const error = await refusal(createDownloader(policy({ trustedOrigins: [host.origin] }))(`${host.origin}/a.png`));
    expect(error.kind).toBe('network');
    expect(error.message).toBe('image download failed: connection error');
  });

  it('times out a host that never answers', async () => {
    const host = await startHost(() => {});
    const error = await refusal(createDownloader(policy({ trustedOrigins: [host.origin], timeoutMs: 50 }))(`${host.origin}/a.png`));
    expect(error.kind).toBe('timeout');
    expect(error.message).toBe('image download timed out');
  });

  it('times out a body that stops half way', async () => {
    const host = await startHost((_req, res) => {
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': 1000 });
      res.write(Buffer.alloc(100));
    });
    const body = await createDownloader(policy({ trustedOrigins: [host.origin], timeoutMs: 100 }))(`${host.origin}/a.png`);
    const error = await refusal(collect(body));
    expect(error.kind).toBe('timeout');
  });

  it("stops at the caller's abort, as an abort", async () => {
    let arrived!: () => void;
    const requested = new Promise<void>((r) => (arrived = r));
    const host = await startHost(() => arrived());
    const controller = new AbortController();
    const pending = createDownloader(policy({ trustedOrigins: [host.origin] }))(`${host.origin}/a.png`, controller.signal);
    await requested;
    controller.abort();
    const error = await rejectionOf(pending);
    expect(error).not.toBeInstanceOf(ProviderError);
    expect((error as Error).name).toBe('AbortError');
  });
});

describe('retryAfterMs', () => {
  const headers = (value: string) => new Headers({ 'retry-after': value });

  it('keeps an ordinary Retry-After as it is', () => {
    expect(retryAfterMs(headers('2'), undefined)).toBe(2_000);
    expect(retryAfterMs(new Headers(), { retry_after: 3 })).toBe(3_000);
  });

  it('caps header seconds, body retry_after and a far HTTP date at 5 minutes', () => {
    expect(RETRY_AFTER_CAP_MS).toBe(300_000);
    expect(retryAfterMs(headers('100000000'), undefined)).toBe(300_000);
    expect(retryAfterMs(new Headers(), { retry_after: 1e9 })).toBe(300_000);
    const now = Date.parse('2025-01-01T00:00:00Z');
    expect(retryAfterMs(headers('Fri, 01 Jan 2100 00:00:00 GMT'), undefined, now)).toBe(300_000);
  });
});
