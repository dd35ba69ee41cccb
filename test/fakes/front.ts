/**
 * A loopback front for a fake: every request is passed to the fake and its answer passed back, with a
 * hook before each (`before`: the network's delay on the way there, or a barrier) and after each
 * (`after`: the delay on the way back). Point a client's base URL at the front instead of the fake.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { listenOnLoopback } from './http.js';

export interface FrontHooks {
  /** resolves when the request may go on to the fake */
  before?: (req: IncomingMessage) => Promise<void>;
  /** resolves when the fake's answer may go back to the client */
  after?: (req: IncomingMessage, status: number) => Promise<void>;
}

export interface Front {
  url: string;
  close(): Promise<void>;
}

export async function startFront(target: () => string, hooks: FrontHooks = {}): Promise<Front> {
  const server: Server = createServer((req, res) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      await hooks.before?.(req);
      const headers = Object.fromEntries(
        // `expect: 100-continue` was answered here already (the body is read whole), and fetch refuses it.
        Object.entries(req.headers).filter(([name]) => !['host', 'content-length', 'connection', 'expect'].includes(name)),
      ) as Record<string, string>;
      const method = req.method ?? 'GET';
      const answer = await fetch(target() + (req.url ?? ''), { method, headers, ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}) });
      const bytes = Buffer.from(await answer.arrayBuffer());
      await hooks.after?.(req, answer.status);
      const passed: Record<string, string> = {};
      // etag: an S3 multipart upload names each part by the ETag its upload answered.
      for (const name of ['content-type', 'retry-after', 'etag']) {
        const value = answer.headers.get(name);
        if (value !== null) passed[name] = value;
      }
      res.writeHead(answer.status, passed).end(bytes);
    })().catch(() => res.destroy());
  });
  const port = await listenOnLoopback(server);
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
