/**
 * Starts Debian's `redis-server` on a free loopback port, with no persistence, in a temporary
 * directory: for the tests (global-setup.ts) and for `npm run bench`'s distributed scenario.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const INSTALL_HINT = 'redis-server not found: install it with `sudo apt-get install -y redis-server`.';

export interface RedisServer {
  url: string;
  stop(): Promise<void>;
}

/** Whether a redis-server binary is there to start. */
export function hasRedisServer(binary = process.env.REDIS_SERVER ?? 'redis-server'): boolean {
  return spawnSync(binary, ['--version']).status === 0;
}

/** A loopback port free now (and, once this resolves, nothing listens on it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function ping(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('error', () => resolve(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => {
      socket.destroy();
      resolve(data.toString().startsWith('+PONG'));
    });
  });
}

export async function startRedisServer(binary = process.env.REDIS_SERVER ?? 'redis-server'): Promise<RedisServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'af-redis-'));
  const port = await freePort();
  let output = '';
  const child = spawn(
    binary,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--maxmemory-policy', 'noeviction'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const keep = (d: Buffer) => (output = (output + d.toString()).slice(-2000));
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    await rm(dir, { recursive: true, force: true });
  };
  for (let tried = 0; ; tried += 1) {
    if (child.exitCode !== null || tried >= 200) {
      await stop();
      throw new Error(`redis-server did not answer on port ${port}: ${output}`);
    }
    if (await ping(port)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `redis://127.0.0.1:${port}`, stop };
}
