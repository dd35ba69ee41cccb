/** Runs one CoreSpec in a child process (node --import tsx bench/child.ts) and returns its report. */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ChildMessage, CoreResult, CoreSpec } from './protocol.js';

const CHILD = fileURLToPath(new URL('./child.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

export function runInChild(spec: CoreSpec, timeoutMs = 240_000): Promise<CoreResult> {
  return new Promise((resolve, reject) => {
    // BENCH_CPU_PROF=<dir> writes a V8 CPU profile of each child there (to see where our time goes).
    const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
    const child = fork(CHILD, [], { cwd: ROOT, execArgv: ['--import', 'tsx', ...profile], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let answered = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(new Error(`bench child gave no result within ${timeoutMs} ms`));
    }, timeoutMs);
    const finish = (error: Error | undefined, result?: CoreResult) => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(result!);
    };
    child.on('message', (message: ChildMessage) => {
      if (message.kind === 'result') finish(undefined, message.result);
      else finish(new Error(`bench child failed: ${message.message}`));
    });
    child.on('error', (error) => finish(error));
    child.on('exit', (code) => finish(new Error(`bench child exited with code ${code} before reporting`)));
    child.send(spec);
  });
}
