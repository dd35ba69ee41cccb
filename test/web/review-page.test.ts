// The review page's routes on the real public server (startWebServer) over a real app (buildApp, a
// local-provider job of 12 images), driven with plain fetch: who may see and review (signed link →
// cookie, tenant, requester or moderator), what a refusal leaves (nothing), the body rules, the
// security headers, live updates, and logs that never hold the token. Plus the server's new answers:
// bytes and event streams.
import { readFile, readdir } from 'node:fs/promises';
import { request } from 'node:http';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Logger } from '../../src/core/ports.js';
import type { Job } from '../../src/core/types.js';
import { Thumbnails } from '../../src/store/thumbnails.js';
import { REVIEW_COOKIE, REVIEW_PAGE_POLICY, reviewRoutes, type ReviewAccess } from '../../src/web/review-page.js';
import { signReviewToken, type ReviewClaims } from '../../src/web/review-token.js';
import { startWebServer, type EventStream, type WebServer } from '../../src/web/server.js';
import { buildApp, filesIn, onCleanup, readManifest, requester } from '../helpers.js';

const SECRET = 'review-secret-for-tests-0123456789abcdef';

/** A logger that keeps every line it is given, as text. */
function capture(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const keep = (level: string) => (obj: object, msg?: string) => void lines.push(`${level} ${msg ?? ''} ${JSON.stringify(obj)}`);
  return { lines, debug: keep('debug'), info: keep('info'), warn: keep('warn'), error: keep('error') };
}

async function makeJob(app: Awaited<ReturnType<typeof buildApp>>, count: number, by = requester('guild-1', 'owner')): Promise<Job> {
  const job = await app.engine.submit({ prompt: 'a red fox in snow', count, provider: 'local', model: 'local', aspectRatio: '1:1' }, by);
  return app.engine.waitFor(job.id);
}

/** A 12-image job of `owner` in guild-1, and the review routes on a public server whose PUBLIC_URL is its own address. */
async function setup(options: { access?: (url: string) => ReviewAccess } = {}) {
  const app = await buildApp();
  const job = await makeJob(app, 12);
  const log = capture();
  const clock = { now: Date.now() };
  const server = await startWebServer({ port: 0, host: '127.0.0.1', log });
  onCleanup(() => server.stop());
  server.add(
    ...reviewRoutes({
      engine: app.engine,
      files: app.files,
      thumbnails: new Thumbnails(),
      access: options.access?.(server.url) ?? { kind: 'token', secret: SECRET, publicUrl: server.url },
      now: () => clock.now,
      log,
    }),
  );
  const token = (claims: Partial<ReviewClaims> = {}) =>
    signReviewToken(SECRET, { job: job.id, tenant: 'guild-1', userId: 'owner', name: 'Olive', moderator: false, exp: clock.now + 3_600_000, ...claims });
  const page = `${server.url}/review/${job.id}`;
  return { app, job, log, clock, server, token, page };
}

/** A JSON answer's body, as the assertions read it. */
const json = (response: Response): Promise<any> => response.json();

/** A GET with exactly these headers (fetch will not send another Host than the URL's). */
function rawGet(url: string, headers: Record<string, string>): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
    });
    req.on('error', reject);
    req.end();
  });
}

const withCookie = (token: string, headers: Record<string, string> = {}) => ({ cookie: `other=1; ${REVIEW_COOKIE}=${token}`, ...headers });
const post = (url: string, token: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, { method: 'POST', headers: withCookie(token, { 'content-type': 'application/json', ...headers }), body: typeof body === 'string' ? body : JSON.stringify(body) });

/** Everything a review could change: where each file is, and the manifest's bytes. */
async function snapshot(app: Awaited<ReturnType<typeof buildApp>>, jobId: string) {
  const dir = app.files.jobDir(jobId);
  const folders = Object.fromEntries(await Promise.all(['pending-review', 'approved', 'rejected'].map(async (f) => [f, await filesIn(app, jobId, f)] as const)));
  return { folders, manifest: await readFile(path.join(dir, 'manifest.json'), 'utf8'), job: (await app.engine.get(jobId))!.images.map((i) => i.review) };
}

/** Reads frames from an event stream until `until` holds for one; returns the frames read. */
async function framesUntil(response: Response, until: (frame: { event: string; data: any }) => boolean): Promise<{ event: string; data: any }[]> {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  const frames: { event: string; data: any }[] = [];
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended after ${frames.length} frames`);
    buffer += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const raw = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(raw)?.[1];
      const data = /^data: (.*)$/m.exec(raw)?.[1];
      if (!event) continue;
      const frame = { event, data: data ? JSON.parse(data) : undefined };
      frames.push(frame);
      if (until(frame)) {
        reader.releaseLock();
        return frames;
      }
    }
  }
}

describe('web server: bytes and event streams', () => {
  it('sends a Buffer as bytes of its content type, with the route’s headers on every answer', async () => {
    const log = capture();
    const server: WebServer = await startWebServer({
      port: 0,
      host: '127.0.0.1',
      log,
      routes: [
        { method: 'GET', path: '/bytes/:n', headers: { 'x-frame-options': 'DENY' }, handle: async ({ params }) => (params.n === '1' ? { status: 200, body: Buffer.from([1, 2, 3]), contentType: 'image/png' } : { status: 404, reason: 'no such bytes' }) },
      ],
    });
    onCleanup(() => server.stop());
    const ok = await fetch(`${server.url}/bytes/1`);
    expect(ok.headers.get('content-type')).toBe('image/png');
    expect(ok.headers.get('x-frame-options')).toBe('DENY');
    expect([...new Uint8Array(await ok.arrayBuffer())]).toEqual([1, 2, 3]);
    const missing = await fetch(`${server.url}/bytes/2`);
    expect(missing.status).toBe(404);
    expect(missing.headers.get('x-frame-options')).toBe('DENY');
  });

  it('keeps an event stream open past the request timeout that cuts a slow sender, and cleans up when the client goes', async () => {
    let opened: EventStream | undefined;
    let undone = 0;
    const server = await startWebServer({
      port: 0,
      host: '127.0.0.1',
      log: capture(),
      requestTimeoutMs: 100,
      routes: [
        { method: 'GET', path: '/events', handle: async () => ({ status: 200, stream: (events) => ((opened = events), () => void (undone += 1)) }) },
        { method: 'POST', path: '/slow', handle: async () => ({ status: 200 }) },
      ],
    });
    onCleanup(() => server.stop());
    const abort = new AbortController();
    const stream = await fetch(`${server.url}/events`, { signal: abort.signal });
    expect(stream.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');

    // A sender that declares 10 bytes and sends 1 is cut by the request timeout…
    const cut = await new Promise<number>((resolve, reject) => {
      const req = request(`${server.url}/slow`, { method: 'POST', headers: { 'content-length': '10' } }, (res) => resolve(res.statusCode!));
      req.on('error', reject);
      req.write('x');
    });
    expect(cut).toBe(408);
    // …while the stream, open since before it, still delivers.
    opened!.send('ping', { n: 1 });
    expect((await framesUntil(stream, (f) => f.event === 'ping')).at(-1)).toEqual({ event: 'ping', data: { n: 1 } });

    abort.abort();
    await expect.poll(() => undone).toBe(1);
    expect(opened!.closed).toBe(true);
  });
});

describe('review page (signed link)', () => {
  it('moves the link’s token into a cookie for this job’s pages and redirects to the clean URL', async () => {
    const { page, token, job } = await setup();
    const first = await fetch(`${page}?t=${token()}`, { redirect: 'manual' });
    expect(first.status).toBe(303);
    expect(first.headers.get('location')).toBe(`/review/${job.id}`);
    const cookie = first.headers.get('set-cookie')!;
    expect(cookie).toMatch(new RegExp(`^${REVIEW_COOKIE}=[\\w-]+\\.[\\w-]{43}; Path=/review/${job.id}; Max-Age=(3599|3600); HttpOnly; SameSite=Strict$`));
    expect(first.headers.get('content-security-policy')).toBe(REVIEW_PAGE_POLICY);

    const html = await fetch(page);
    expect(html.status).toBe(200);
    expect(html.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(html.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect(html.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(html.headers.get('x-content-type-options')).toBe('nosniff');
    expect(html.headers.get('referrer-policy')).toBe('no-referrer');
    const text = await html.text();
    expect(text).not.toMatch(/<script>|style=/); // nothing inline: the CSP would refuse it
    expect(text).toContain('src="/review/assets/review.js"');
    const script = await fetch(`${page.replace(job.id, 'assets')}/review.js`);
    expect(script.headers.get('content-type')).toBe('text/javascript; charset=utf-8');

    const state = await fetch(`${page}/state`, { headers: { cookie: cookie.split(';')[0]! } });
    expect(state.status).toBe(200);
    const body = await json(state);
    expect(body.counts).toEqual({ total: 12, pending: 12, approved: 0, rejected: 0, flagged: 0 });
    expect(body.images.map((i: any) => i.index)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(body.images[0]).toEqual({ index: 1, status: 'pending', nsfw: false, width: 768, height: 768, version: 0 });
    expect(body.job.title).toBe('“a red fox in snow” · 12 images');
    expect(body.reviewer).toEqual({ name: 'Olive' });
  });

  it('serves this job’s thumbnails (WebP) and full images (PNG), privately cached', async () => {
    const { page, token } = await setup();
    const thumb = await fetch(`${page}/thumbs/3?v=0`, { headers: withCookie(token()) });
    expect(thumb.status).toBe(200);
    expect(thumb.headers.get('content-type')).toBe('image/webp');
    expect(thumb.headers.get('cache-control')).toBe('private, max-age=86400');
    expect(Buffer.from(await thumb.arrayBuffer()).subarray(8, 12).toString()).toBe('WEBP');
    const full = await fetch(`${page}/images/3`, { headers: withCookie(token()) });
    expect(full.headers.get('content-type')).toBe('image/png');
    expect(full.headers.get('content-security-policy')).toBe(REVIEW_PAGE_POLICY);
    expect(Buffer.from(await full.arrayBuffer()).subarray(1, 4).toString()).toBe('PNG');
    expect((await fetch(`${page}/images/13`, { headers: withCookie(token()) })).status).toBe(404);
    expect((await fetch(`${page}/images/..%2Fmanifest.json`, { headers: withCookie(token()) })).status).toBe(404);
  });

  it('reviews a list, "pending", or numbers (1-5, 8) through the engine, moving the files and naming the reviewer', async () => {
    const { app, job, page, token } = await setup();
    const approved = await post(`${page}/review`, token(), { images: [2, 4], status: 'approved' });
    expect(approved.status).toBe(200);
    expect((await json(approved)).counts).toMatchObject({ approved: 2, pending: 10 });
    const numbered = await post(`${page}/review`, token(), { numbers: '1-5, 8', status: 'rejected' });
    expect((await json(numbered)).counts).toMatchObject({ approved: 0, rejected: 6, pending: 6 });
    expect(await filesIn(app, job.id, 'rejected')).toEqual(['001.png', '002.png', '003.png', '004.png', '005.png', '008.png']);
    const rest = await post(`${page}/review`, token(), { images: 'pending', status: 'approved' });
    expect((await json(rest)).counts).toMatchObject({ approved: 6, rejected: 6, pending: 0 });
    const manifest = await readManifest(app, job.id);
    expect(manifest.images.map((i) => [i.index, i.review.status, i.review.reviewedBy])).toContainEqual([8, 'rejected', 'Olive']);
    expect(manifest.images.filter((i) => i.review.status === 'approved').map((i) => i.index)).toEqual([6, 7, 9, 10, 11, 12]);
  });

  it('refuses a bad body with 400 naming the field, what it allows and what came, and changes nothing', async () => {
    const { app, job, page, token } = await setup();
    const before = await snapshot(app, job.id);
    const cases: [unknown, string][] = [
      ['{not json', 'Expected a JSON body such as {"images": [1, 2], "status": "approved"}, got text that is not JSON'],
      [[1, 2], 'Expected a JSON object such as {"images": [1, 2], "status": "approved"}, got `[1,2]`'],
      [{ images: [1], status: 'maybe' }, 'Expected `status` to be approved, rejected or pending, got `maybe`'],
      [{ images: [1] }, 'Expected `status` to be approved, rejected or pending, got nothing'],
      [{ images: 'all', status: 'approved' }, 'Expected `images` to be a list of image numbers (1 to 12) or "pending", got `all`'],
      [{ images: [1, 1.5], status: 'approved' }, 'Expected `images` to be a list of image numbers (1 to 12) or "pending", got `[1,1.5]`'],
      [{ status: 'approved' }, 'Expected `images` to be a list of image numbers (1 to 12) or "pending", got nothing'],
      [{ numbers: '5-3', status: 'approved' }, 'numbers: expected image numbers from 1 to 12 such as 1-5, 8, got "5-3"'],
      [{ numbers: '1', images: [1], status: 'approved' }, 'Expected `images` or `numbers`, got both'],
      [{ images: [1], status: 'approved', as: 'admin' }, 'Expected only `images` or `numbers`, and `status`; got `as` too'],
      [{ images: [1, 13], status: 'approved' }, `Image 13 is not part of job ${job.id}.`],
    ];
    for (const [body, reason] of cases) {
      const answer = await post(`${page}/review`, token(), body);
      expect([answer.status, (await json(answer)).error]).toEqual([400, reason]);
    }
    expect(await snapshot(app, job.id)).toEqual(before);
  });

  it('answers 403 to an expired, forged, other-job or stranger’s token on every route, and changes nothing', async () => {
    const { app, job, page, token, clock } = await setup();
    const other = await makeJob(app, 2);
    const before = await snapshot(app, job.id);
    const expired = token({ exp: clock.now - 1 });
    const forged = signReviewToken('not-the-secret-but-also-long-enough-1234', { job: job.id, tenant: 'guild-1', userId: 'owner', moderator: true, exp: clock.now + 60_000 });
    const otherJob = token({ job: other.id });
    const stranger = token({ userId: 'stranger', name: 'Sam' });
    const elsewhere = token({ tenant: 'guild-2', moderator: true });
    const reasons: string[] = [];
    for (const bad of [expired, forged, otherJob, stranger, elsewhere]) {
      const answers = await Promise.all([
        fetch(`${page}?t=${bad}`, { redirect: 'manual' }),
        fetch(`${page}/state`, { headers: withCookie(bad) }),
        fetch(`${page}/thumbs/1`, { headers: withCookie(bad) }),
        fetch(`${page}/images/1`, { headers: withCookie(bad) }),
        fetch(`${page}/events`, { headers: withCookie(bad) }),
        post(`${page}/review`, bad, { images: [1, 2, 3], status: 'approved' }),
        post(`${page}/review`, bad, { images: 'pending', status: 'rejected' }),
      ]);
      expect(answers.map((a) => a.status)).toEqual(Array(7).fill(403));
      expect(answers[0].headers.get('set-cookie')).toBeNull();
      reasons.push((await json(answers[5])).error);
    }
    expect(reasons).toEqual([
      'Forbidden: the review link has expired; ask for a new one with “Review in browser”',
      'Forbidden: the review link is not signed by this bot',
      'Forbidden: the review link is for another job',
      'Forbidden: only the person who asked for these images, or a moderator, can review them',
      'Forbidden: this job belongs to another workspace',
    ]);
    // no cookie at all
    expect((await fetch(`${page}/state`)).status).toBe(403);
    expect(await snapshot(app, job.id)).toEqual(before);

    // a link that was fine stops working once its time is up
    const soon = token({ exp: clock.now + 1000 });
    expect((await fetch(`${page}/state`, { headers: withCookie(soon) })).status).toBe(200);
    clock.now += 1000;
    expect((await fetch(`${page}/state`, { headers: withCookie(soon) })).status).toBe(403);
  });

  it('lets a moderator of the same workspace review someone else’s job', async () => {
    const { app, job, page, token } = await setup();
    const answer = await post(`${page}/review`, token({ userId: 'mod', name: 'Mo', moderator: true }), { images: [7], status: 'rejected' });
    expect(answer.status).toBe(200);
    expect((await readManifest(app, job.id)).images.find((i) => i.index === 7)!.review).toMatchObject({ status: 'rejected', reviewedBy: 'Mo' });
  });

  it('serves images only for the job its token names', async () => {
    const { app, page, token, job } = await setup();
    const other = await makeJob(app, 2);
    const otherPage = page.replace(job.id, other.id);
    for (const route of ['images/1', 'thumbs/1', 'state']) {
      const answer = await fetch(`${otherPage}/${route}`, { headers: withCookie(token()) });
      expect([route, answer.status, (await json(answer)).error]).toEqual([route, 403, 'Forbidden: the review link is for another job']);
    }
  });

  it('refuses a POST without a JSON content type, from a foreign Origin, or to a foreign Host', async () => {
    const { app, job, page, token, server } = await setup();
    const before = await snapshot(app, job.id);
    const body = JSON.stringify({ images: [1], status: 'approved' });
    const form = await fetch(`${page}/review`, { method: 'POST', headers: withCookie(token(), { 'content-type': 'text/plain' }), body });
    expect([form.status, (await json(form)).error]).toEqual([403, 'Forbidden: POST needs Content-Type `application/json`, got `text/plain`']);
    const foreign = await post(`${page}/review`, token(), body, { origin: 'https://evil.example' });
    expect([foreign.status, (await json(foreign)).error]).toEqual([403, `Forbidden: Origin \`https://evil.example\` is not this review page (expected ${server.url})`]);
    const same = await post(`${page}/review`, token(), { images: [], status: 'approved' }, { origin: server.url });
    expect(same.status).toBe(400); // past the guard: an empty list is the body's fault
    const rebound = await rawGet(`${page}/state`, withCookie(token(), { host: 'attacker.example' }));
    expect([rebound.status, rebound.body.error]).toEqual([403, `Forbidden: Host \`attacker.example\` is not this review page (expected ${new URL(server.url).host})`]);
    expect(await snapshot(app, job.id)).toEqual(before);
  });

  it('streams the job’s state on every review made anywhere, and stops listening when the page goes', async () => {
    const { app, job, page, token } = await setup();
    const listeners = app.engine.listenerCount('reviewed');
    const abort = new AbortController();
    const events = await fetch(`${page}/events`, { headers: withCookie(token()), signal: abort.signal });
    expect(events.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const first = await framesUntil(events, (f) => f.event === 'state');
    expect(first.at(-1)!.data.counts.pending).toBe(12);
    expect(app.engine.listenerCount('reviewed')).toBe(listeners + 1);

    // as a chat button would: straight through the engine
    await app.engine.reviewMany(job.id, [3, 9], 'approved', { id: 'owner', name: 'Olive (Discord)' });
    const next = await framesUntil(events, (f) => f.event === 'state');
    const shown = next.at(-1)!.data;
    expect(shown.counts).toMatchObject({ approved: 2, pending: 10 });
    expect(shown.images[8]).toMatchObject({ index: 9, status: 'approved', by: 'Olive (Discord)' });

    // another job's reviews are not this page's business
    const other = await makeJob(app, 2);
    await app.engine.review(other.id, 1, 'rejected', { id: 'owner' });
    await app.engine.review(job.id, 1, 'rejected', { id: 'owner' });
    const after = await framesUntil(events, (f) => f.event === 'state');
    expect(after.map((f) => f.data.job.id)).toEqual([job.id]);

    abort.abort();
    await expect.poll(() => app.engine.listenerCount('reviewed')).toBe(listeners);
  });

  it('never logs the token or the cookie, even on refusals', async () => {
    const { page, token, log, clock } = await setup();
    const good = token();
    const stale = token({ exp: clock.now - 1 });
    await fetch(`${page}?t=${good}`, { redirect: 'manual' });
    await fetch(`${page}?t=${stale}`, { redirect: 'manual' });
    await fetch(`${page}/state`, { headers: withCookie(stale) });
    await post(`${page}/review`, good, { images: [1], status: 'nope' });
    await post(`${page}/review`, good, { images: [1], status: 'approved' }, { origin: 'https://evil.example' });
    expect(log.lines.filter((line) => line.includes('request refused'))).toHaveLength(4);
    const all = log.lines.join('\n');
    for (const secret of [good, stale, good.split('.')[1]!, stale.split('.')[0]!, SECRET]) expect(all).not.toContain(secret);
  });
});

describe('review page (loopback, the playground)', () => {
  it('needs no token for the playground’s own reviewer, and refuses another workspace’s job and foreign hosts', async () => {
    const { app, job, page, server } = await setup({
      access: (url) => ({ kind: 'loopback', hosts: [new URL(url).host], reviewer: { tenant: 'guild-1', userId: 'owner', name: 'you' } }),
    });
    const ours = await fetch(`${page}/state`);
    expect(ours.status).toBe(200);
    expect((await json(ours)).reviewer).toEqual({ name: 'you' });
    const reviewed = await fetch(`${page}/review`, { method: 'POST', headers: { 'content-type': 'application/json', origin: server.url }, body: JSON.stringify({ images: [1], status: 'approved' }) });
    expect(reviewed.status).toBe(200);
    expect(await filesIn(app, job.id, 'approved')).toEqual(['001.png']);

    const theirs = await makeJob(app, 2, requester('guild-2', 'someone'));
    expect((await fetch(page.replace(job.id, theirs.id) + '/state')).status).toBe(403);
    expect((await rawGet(`${page}/state`, { host: 'localhost.evil:80' })).status).toBe(403);
    expect(await readdir(path.join(app.files.jobDir(theirs.id), 'pending-review'))).toHaveLength(2);
  });
});
