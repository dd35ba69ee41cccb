/**
 * Vitest global setup: starts Debian's `redis-server` on a free loopback port, with no persistence and
 * a temporary directory, for the distributed-mode tests; stops it when the run ends. The URL reaches
 * the test files as `provide('redisUrl')`. Without the binary the Redis tests skip with one line on how
 * to install it, except under CI=true, where a missing server fails the run.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** `redis://127.0.0.1:PORT`, or '' when no redis-server is installed */
    redisUrl: string;
  }
}

export const INSTALL_HINT = 'redis-server not found: the distributed-mode tests are skipped. Install it with `sudo apt-get install -y redis-server`.';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function waitForPing(port: number, child: ChildProcess, log: () => string): Promise<void> {
  for (let tried = 0; tried < 200; tried += 1) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}: ${log()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('error', () => resolve(false));
      socket.once('connect', () => socket.write('PING\r\n'));
      socket.once('data', (data) => {
        socket.destroy();
        resolve(data.toString().startsWith('+PONG'));
      });
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`redis-server did not answer on port ${port}: ${log()}`);
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const binary = process.env.REDIS_SERVER ?? 'redis-server';
  if (spawnSync(binary, ['--version']).status !== 0) {
    if (process.env.CI === 'true') throw new Error(`${INSTALL_HINT} (CI=true: the Redis tests must run)`);
    process.stdout.write(`\n${INSTALL_HINT}\n\n`);
    project.provide('redisUrl', '');
    return async () => {};
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'af-redis-'));
  const port = await freePort();
  let output = '';
  const child = spawn(
    binary,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--maxmemory-policy', 'noeviction'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-2000)));
  child.stderr?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-2000)));
  await waitForPing(port, child, () => output);
  project.provide('redisUrl', `redis://127.0.0.1:${port}`);
  return async () => {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
    await rm(dir, { recursive: true, force: true });
  };
}
