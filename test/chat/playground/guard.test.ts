/**
 * Who may use the playground: only its own page on its own address, and only about its own jobs.
 * Real HTTP requests through node:http, because `fetch` will not let a test set `Host`.
 */
import { request } from 'node:http';
import { describe, expect, it } from 'vitest';
import { parseImagineText } from '../../../commands/imagine.js';
import { refusal } from '../../../src/web/guard.js';
import { startPlayground } from '../../../src/chat/playground/index.js';
import { TRANSCRIPT_KEY } from '../../../src/chat/playground/view.js';
import type { Requester } from '../../../src/core/types.js';
import { buildApp, filesIn, onCleanup } from '../../helpers.js';

const GUILD: Requester = { tenant: 'guild-1', userId: 'u', platform: 'discord' };

async function playground(env: Record<string, string> = {}) {
  const app = await buildApp({ env: { LOCAL_LATENCY_MS: '20', LOCAL_CONCURRENCY: '2', ...env } });
  const pg = await startPlayground(app, { port: 0 });
  onCleanup(() => pg.stop());
  const self = { host: `127.0.0.1:${pg.port}`, origin: `http://127.0.0.1:${pg.port}` };

  /** One HTTP request with exactly these headers (plus Host, which is ours unless given). */
  const send = (method: string, path: string, headers: Record<string, string> = {}, body?: string) =>
    new Promise<{ status: number; headers: Record<string, unknown>; text: string; json: () => any }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: pg.port, method, path, headers: { host: self.host, ...headers } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode!, headers: res.headers, text, json: () => JSON.parse(text) });
        });
      });
      req.on('error', reject);
      req.end(body);
    });
  /** What the page itself sends: JSON, from its own origin. */
  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    send('POST', path, { 'content-type': 'application/json', origin: self.origin, ...headers }, JSON.stringify(body));
  const playgroundJobs = () => app.engine.listJobs('playground');
  return { app, pg, self, send, post, playgroundJobs };
}

describe('playground guard (the rule)', () => {
  const hosts = ['127.0.0.1:4000', 'localhost:4000'];

  it('lets the page’s own requests through', () => {
    expect(refusal(hosts, { method: 'GET', headers: { host: 'localhost:4000' } })).toBeUndefined();
    expect(refusal(hosts, { method: 'POST', headers: { host: '127.0.0.1:4000', origin: 'http://127.0.0.1:4000', 'content-type': 'application/json; charset=utf-8' } })).toBeUndefined();
  });

  it('names the foreign Host and the addresses it expected', () => {
    expect(refusal(hosts, { method: 'GET', headers: { host: 'attacker.example' } }, 'this playground')).toBe(
      'Forbidden: Host `attacker.example` is not this playground (expected 127.0.0.1:4000 or localhost:4000)',
    );
    expect(refusal(hosts, { method: 'GET', headers: {} })).toMatch(/^Forbidden: Host none is not/);
    expect(refusal(hosts, { method: 'GET', headers: { host: '127.0.0.1:4001' } })).toMatch(/^Forbidden: Host `127.0.0.1:4001`/);
  });

  it('refuses a foreign Origin, and "null", even with our Host', () => {
    expect(refusal(hosts, { method: 'POST', headers: { host: '127.0.0.1:4000', origin: 'https://evil.example', 'content-type': 'application/json' } })).toBe(
      'Forbidden: Origin `https://evil.example` is not this server (expected http://127.0.0.1:4000 or http://localhost:4000)',
    );
    expect(refusal(hosts, { method: 'GET', headers: { host: '127.0.0.1:4000', origin: 'null' } })).toMatch(/^Forbidden: Origin `null`/);
  });

  it('refuses a state change without a JSON body, naming the type it got', () => {
    const host = '127.0.0.1:4000';
    expect(refusal(hosts, { method: 'POST', headers: { host, 'content-type': 'text/plain' } })).toBe(
      'Forbidden: POST needs Content-Type `application/json`, got `text/plain`',
    );
    expect(refusal(hosts, { method: 'DELETE', headers: { host } })).toBe('Forbidden: DELETE needs Content-Type `application/json`, got none');
    expect(refusal(hosts, { method: 'POST', headers: { host, 'content-type': 'application/x-www-form-urlencoded' } })).toMatch(/got `application\/x-www-form-urlencoded`$/);
  });

  it('quotes a hostile header on one short line', () => {
    const reason = refusal(hosts, { method: 'GET', headers: { host: `evil\`\r\nX-Injected: 1${'a'.repeat(200)}` } })!;
    expect(reason).not.toMatch(/[\r\n]/);
    expect(reason.length).toBeLessThan(220);
  });
});

describe('playground server guard', () => {
  it('refuses a cross-site POST and starts no job', async () => {
    const { post, send, playgroundJobs } = await playground();
    const answer = await post('/api/command', { text: '/imagine a stolen fox --count 100' }, { origin: 'https://evil.example' });
    expect(answer.status).toBe(403);
    expect(answer.json().error).toMatch(/^Forbidden: Origin `https:\/\/evil.example` is not this playground/);
    expect(await playgroundJobs()).toEqual([]);
    expect((await send('GET', '/api/state')).json().entries).toEqual([]);
  });

  it('refuses a text/plain POST (what a cross-site form can send) and starts no job', async () => {
    const { self, send, playgroundJobs } = await playground();
    const origins: Record<string, string>[] = [{}, { origin: self.origin }, { origin: 'https://evil.example' }];
    for (const origin of origins) {
      const answer = await send('POST', '/api/command', { 'content-type': 'text/plain', ...origin }, JSON.stringify({ text: '/imagine a fox --count 100' }));
      expect(answer.status).toBe(403);
      expect(answer.json()).toEqual({ error: expect.stringMatching(/^Forbidden: /) });
    }
    const answer = await send('POST', '/api/command', { 'content-type': 'text/plain' }, JSON.stringify({ text: '/imagine a fox' }));
    expect(answer.json()).toEqual({ error: 'Forbidden: POST needs Content-Type `application/json`, got `text/plain`' });
    expect(await playgroundJobs()).toEqual([]);
  });

  it('refuses a foreign Host (DNS rebinding) and shows it no prompt', async () => {
    const { pg, post, send } = await playground();
    expect((await post('/api/command', { text: '/imagine a secret lighthouse --count 1' })).status).toBe(200);
    expect((await send('GET', '/api/state')).text).toContain('a secret lighthouse');

    for (const path of ['/api/state', '/', '/events', '/app.js']) {
      const answer = await send('GET', path, { host: 'attacker.example' });
      expect(answer.status).toBe(403);
      expect(answer.text).not.toContain('lighthouse');
      expect(answer.json()).toEqual({
        error: `Forbidden: Host \`attacker.example\` is not this playground (expected 127.0.0.1:${pg.port} or localhost:${pg.port})`,
      });
    }
    // the attacker's name with our port is still not our address
    expect((await send('GET', '/api/state', { host: `attacker.example:${pg.port}` })).status).toBe(403);
  });

  it('still serves the page’s own JSON POST, from 127.0.0.1 or localhost', async () => {
    const { pg, post, playgroundJobs, app } = await playground();
    const answer = await post('/api/command', { text: '/imagine a welcome fox --count 2' });
    expect(answer.status).toBe(200);
    expect(answer.json().job).toMatchObject({ prompt: 'a welcome fox', count: 2 });
    const viaLocalhost = await post('/api/command', { text: '/imagine a second fox --count 1' }, {
      host: `localhost:${pg.port}`,
      origin: `http://localhost:${pg.port}`,
      'content-type': 'application/json; charset=utf-8',
    });
    expect(viaLocalhost.status).toBe(200);
    expect((await app.engine.get(viaLocalhost.json().job.id))?.request.prompt).toBe('a second fox');
    expect((await playgroundJobs()).map(({ job }) => job.request.prompt).sort()).toEqual(['a second fox', 'a welcome fox']);
  });

  it('refuses a cross-site review of its own job and leaves the image pending', async () => {
    const { app, post } = await playground();
    const { job } = (await post('/api/command', { text: '/imagine a fox --count 1' })).json();
    await app.engine.waitFor(job.id);
    const answer = await post(`/api/jobs/${job.id}/images/1/review`, { status: 'approved' }, { origin: 'https://evil.example' });
    expect(answer.status).toBe(403);
    expect((await app.engine.get(job.id))?.images[0]?.review.status).toBe('pending');
    expect(await filesIn(app, job.id, 'approved')).toEqual([]);
  });

  it('sends security headers, and a page policy that allows only its own resources', async () => {
    const { send } = await playground();
    const page = await send('GET', '/');
    expect(page.status).toBe(200);
    expect(page.headers).toMatchObject({ 'x-content-type-options': 'nosniff', 'x-frame-options': 'DENY', 'referrer-policy': 'no-referrer' });
    const policy = String(page.headers['content-security-policy']);
    for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) {
      expect(policy).toContain(directive);
    }
    for (const answer of [await send('GET', '/api/state'), await send('GET', '/api/state', { host: 'attacker.example' })]) {
      expect(answer.headers['x-content-type-options']).toBe('nosniff');
      expect(answer.headers['x-frame-options']).toBe('DENY');
    }
  });
});

describe('playground tenant isolation', () => {
  it('refuses a review of a guild’s job with 403 and leaves its image pending', async () => {
    const { app, post } = await playground();
    const guildJob = await app.engine.submit(parseImagineText('a guild fox --count 2', app.limits), GUILD);
    await app.engine.waitFor(guildJob.id);
    const answer = await post(`/api/jobs/${guildJob.id}/images/1/review`, { status: 'approved' });
    expect(answer.status).toBe(403);
    expect(answer.json()).toEqual({ error: `Forbidden: job ${guildJob.id} is not a playground job; it can only be reviewed where it was made.` });
    // a job that does not exist is simply not found
    expect((await post('/api/jobs/20990101-deadbeef/images/1/review', { status: 'approved' })).status).toBe(404);
    const after = await app.engine.get(guildJob.id);
    expect(after?.images.map((image) => image.review.status)).toEqual(['pending', 'pending']);
    expect(await filesIn(app, guildJob.id, 'pending-review')).toEqual(['001.png', '002.png']);
    expect(await filesIn(app, guildJob.id, 'approved')).toEqual([]);
  });

  it('refuses a cancel of a guild’s running job with 403 and leaves it running', async () => {
    const { app, post } = await playground({ LOCAL_LATENCY_MS: '2000', LOCAL_CONCURRENCY: '1' });
    const guildJob = await app.engine.submit(parseImagineText('a slow guild fox --count 8', app.limits), GUILD);
    onCleanup(() => app.engine.cancel(guildJob.id, { id: 'test' }).then(() => undefined, () => undefined));
    const answer = await post(`/api/jobs/${guildJob.id}/cancel`, {});
    expect(answer.status).toBe(403);
    expect(answer.json().error).toMatch(/^Forbidden: job \S+ is not a playground job/);
    const after = await app.engine.get(guildJob.id);
    expect(after?.canceledBy).toBeUndefined();
    expect(after?.state).not.toBe('canceled');
    expect(after?.batches.some((batch) => batch.state === 'canceled')).toBe(false);
  });

  it('does not serve a guild job’s images', async () => {
    const { app, send, post } = await playground();
    const guildJob = await app.engine.submit(parseImagineText('a guild fox --count 1', app.limits), GUILD);
    const done = await app.engine.waitFor(guildJob.id);
    expect(await filesIn(app, guildJob.id, 'pending-review')).toEqual(['001.png']);
    const answer = await send('GET', `/images/${guildJob.id}/${done.images[0]!.file}`);
    expect(answer.status).toBe(403);
    expect(answer.headers['content-type']).toMatch(/^application\/json/);

    // while the playground's own image, at the same kind of path, is served
    const { job } = (await post('/api/command', { text: '/imagine a fox --count 1' })).json();
    const own = await app.engine.waitFor(job.id);
    const image = await send('GET', `/images/${job.id}/${own.images[0]!.file}`);
    expect(image.status).toBe(200);
    expect(image.headers['content-type']).toBe('image/png');
  });

  it('keeps every command of a burst in the page’s history', async () => {
    const { app, post } = await playground({ USER_MAX_ACTIVE_JOBS: '10', TENANT_MAX_RUNNING_JOBS: '10' });
    const answers = await Promise.all(Array.from({ length: 6 }, (_, k) => post('/api/command', { text: `/imagine fox ${k} --count 1` })));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200]);
    const history = (await app.keyv.get<{ text: string }[]>(TRANSCRIPT_KEY)) ?? [];
    expect(history.map((entry) => entry.text).sort()).toEqual(Array.from({ length: 6 }, (_, k) => `/imagine fox ${k} --count 1`));
  });

  it('leaves a guild’s job out of the page state even if the transcript names it', async () => {
    const { app, send } = await playground();
    const guildJob = await app.engine.submit(parseImagineText('a private guild prompt --count 1', app.limits), GUILD);
    await app.keyv.set(TRANSCRIPT_KEY, [{ text: '/imagine something', jobId: guildJob.id, at: new Date().toISOString() }]);
    const state = await send('GET', '/api/state');
    expect(state.status).toBe(200);
    expect(state.json().entries).toEqual([expect.objectContaining({ jobId: guildJob.id, job: null })]);
    expect(state.text).not.toContain('a private guild prompt');
  });
});
