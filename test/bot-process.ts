/**
 * The real bot (`art-factory start`) as a child process, with the playground on a free loopback
 * port: what crash and shutdown tests start, kill and start again over the same folder.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { onCleanup } from './helpers.js';

export interface BotProcess {
  child: ChildProcess;
  /** the playground's URL, as the bot printed it */
  url: string;
  /** resolves with the exit code */
  exited: Promise<number | null>;
  kill(signal: NodeJS.Signals): Promise<number | null>;
  /** a JSON POST to the playground, as its page sends it */
  post(route: string, body: unknown): Promise<Response>;
  /** the playground's view of one job */
  job(jobId: string): Promise<{ id: string; state: string; images: { index: number }[] } | undefined>;
}

/** Env for a bot whose store and output live in `dir`; `extra` adds provider settings and the like. */
export function botEnv(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    HOME: dir,
    STORE_URL: `sqlite://${dir}/store.sqlite`,
    OUTPUT_DIR: `${dir}/out`,
    PLAYGROUND: 'on',
    PLAYGROUND_PORT: '0',
    HEALTH_PORT: 'off',
    LOG_LEVEL: 'warn',
    ...extra,
  };
}

export async function startBotProcess(env: Record<string, string>): Promise<BotProcess> {
  const child = spawn(process.execPath, [path.resolve('bin/art-factory.js'), 'start'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  onCleanup(() => void child.kill('SIGKILL'));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let out = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      out += String(chunk);
      const match = /playground: (http:\/\/\S+)/.exec(out);
      if (match) resolve(match[1]!);
    });
    void exited.then((code) => reject(new Error(`bot exited early with ${code}`)));
  });
  return {
    child,
    url,
    exited,
    kill(signal) {
      child.kill(signal);
      return exited;
    },
    post(route, body) {
      return fetch(`${url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    },
    async job(jobId) {
      const body = (await (await fetch(`${url}/api/state`)).json()) as {
        entries: { job: { id: string; state: string; images: { index: number }[] } | null }[];
      };
      return body.entries.find((e) => e.job?.id === jobId)?.job ?? undefined;
    },
  };
}

/** Polls `probe` every 10 ms until it gives a truthy value. */
export async function until<T>(probe: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
