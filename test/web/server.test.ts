// The public HTTP server: its route table, the body cap, and how it refuses (one line of reason,
// logged once, never a header echoed). Real HTTP on 127.0.0.1, port 0.
import { describe, expect, it } from 'vitest';
import type { Logger } from '../../src/core/ports.js';
import { MemoryCallNotices } from '../../src/core/notices.js';
import { FalKeys, WebhookReceiver, replicateSecret } from '../../src/providers/webhooks.js';
import { startWebServer, type Route, type WebServer } from '../../src/web/server.js';
import { webhookRoutes } from '../../src/web/webhooks.js';
import { loopbackFetch } from '../fakes/http.js';
import { onCleanup } from '../helpers.js';

/** A logger that keeps every line it is given, as text. */
function capture(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const keep = (level: string) => (obj: object, msg?: string) => void lines.push(`${level} ${msg ?? ''} ${JSON.stringify(obj)}`);
  return { lines, debug: keep('debug'), info: keep('info'), warn: keep('warn'), error: keep('error') };
}

async function serve(routes: Route[], log: Logger = capture(), maxBodyBytes?: number): Promise<WebServer> {
  const server = await startWebServer({ port: 0, host: '127.0.0.1', routes, log, ...(maxBodyBytes ? { maxBodyBytes } : {}) });
  onCleanup(() => server.stop());
  return server;
}

const echo: Route = {
  method: 'POST',
  path: '/things/:id',
  handle: async ({ params, body, query }) => ({ status: 200, body: { id: params.id, bytes: body.length, q: query.get('q') } }),
};

describe('web server', () => {
  it('routes by method and path, with named segments, and hands the raw body over', async () => {
    const server = await serve([echo]);
    const answer = await fetch(`${server.url}/things/a%20b?q=1`, { method: 'POST', body: 'hello' });
    expect(answer.status).toBe(200);
    expect(await answer.json()).toEqual({ id: 'a b', bytes: 5, q: '1' });
  });

  it('answers 404 for an unknown path and 405 (with Allow) for a known path with another method', async () => {
    const server = await serve([echo]);
    const missing = await fetch(`${server.url}/nothing-here`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: 'no such path' });
    const wrong = await fetch(`${server.url}/things/1`, { method: 'GET' });
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('POST');
  });

  it('refuses a body over the cap with 413, without calling the route', async () => {
    let called = 0;
    const log = capture();
    const server = await serve([{ ...echo, handle: async () => ((called += 1), { status: 200 }) }], log, 1024);
    const answer = await fetch(`${server.url}/things/1`, { method: 'POST', body: Buffer.alloc(4096, 1) });
    expect(answer.status).toBe(413);
    expect(await answer.json()).toEqual({ error: 'body larger than 1024 bytes' });
    expect(called).toBe(0);
    expect(log.lines.filter((line) => line.includes('request refused'))).toHaveLength(1);
  });

  it('routes added after the start are served (the port is known before the app that needs it)', async () => {
    const server = await serve([]);
    expect((await fetch(`${server.url}/things/1`, { method: 'POST' })).status).toBe(404);
    server.add(echo);
    expect((await fetch(`${server.url}/things/1`, { method: 'POST' })).status).toBe(200);
  });

  it('refuses an unsigned webhook with 401 and logs one line with the reason, never its headers', async () => {
    const log = capture();
    const receiver = new WebhookReceiver({
      notices: new MemoryCallNotices(),
      log,
      fal: { keys: new FalKeys({ url: 'http://127.0.0.1:9/never-asked', fetch: loopbackFetch }) },
      replicate: { secret: replicateSecret({ token: 'r8-token', secret: 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=' }) },
    });
    const server = await serve(webhookRoutes(receiver), log);
    for (const provider of ['fal', 'replicate']) {
      const answer = await fetch(`${server.url}/webhooks/${provider}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer SENT-SECRET-1234' },
        body: '{"request_id":"abc","status":"OK"}',
      });
      expect(answer.status).toBe(401);
      const text = await answer.text();
      expect(JSON.parse(text)).toEqual({ error: provider === 'fal' ? 'missing fal signature headers' : 'missing webhook signature headers' });
    }
    const refusals = log.lines.filter((line) => line.includes('request refused'));
    expect(refusals).toHaveLength(2);
    expect(refusals[0]).toContain('"reason":"missing fal signature headers"');
    expect(log.lines.join('\n')).not.toContain('SENT-SECRET-1234');
    expect(log.lines.join('\n')).not.toContain('whsec_');
  });
});
