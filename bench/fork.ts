/**
 * Runs one CoreSpec in a child process (node --import tsx bench/child.ts) and returns its report.
 *
 * Whatever the child does, the parent gets an answer: its result, or a BenchChildError carrying the
 * tail of what it printed. The child's end is taken from 'close', never 'exit': 'close' comes after
 * the IPC channel has been read to its end, so a result sent just before exiting is always seen,
 * whereas 'exit' is a separate event (SIGCHLD) that Node may deliver before queued messages. A
 * child that exits with code 0 and no result usually means its event loop emptied while the run
 * still awaited a promise nothing would settle (an IPC channel with no 'message' listener does not
 * keep a process alive): its output is the clue.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ChildMessage, CoreResult, CoreSpec } from './protocol.js';

const CHILD = fileURLToPath(new URL('./child.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** how much of a child's output a failure keeps */
const TAIL_CHARS = 4_000;

/** A child that failed, exited or hung before reporting; `output` is the tail of its stdout and stderr. */
export class BenchChildError extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(output ? `${message}\n--- last output of the child ---\n${output}` : `${message} (it printed nothing)`);
    this.name = 'BenchChildError';
  }
}

/** Keeps the last `TAIL_CHARS` of a child's stdout and stderr, interleaved as they arrive, and echoes them if asked. */
export class OutputTail {
  private text = '';

  constructor(child: ChildProcess, echo: boolean) {
    for (const stream of [child.stdout, child.stderr]) {
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => {
        if (echo) process.stderr.write(chunk);
        this.text = (this.text + chunk).slice(-TAIL_CHARS);
      });
    }
  }

  toString(): string {
    return this.text.trimEnd();
  }
}

/** "code 0", "signal SIGKILL": how a child ended, for messages. */
export const howItEnded = (code: number | null, signal: NodeJS.Signals | null): string => (signal ? `signal ${signal}` : `code ${code}`);

export interface RunInChildOptions {
  /** @default 240_000 */
  timeoutMs?: number;
  /** the child module; `.ts` is run through tsx. @default bench/child.ts */
  child?: string;
  /** copy the child's output to this process's stderr as it comes. @default true */
  echo?: boolean;
}

export function runInChild(spec: CoreSpec, options: RunInChildOptions = {}): Promise<CoreResult> {
  const { timeoutMs = 240_000, child: module = CHILD, echo = true } = options;
  return new Promise((resolve, reject) => {
    // BENCH_CPU_PROF=<dir> writes a V8 CPU profile of each child there (to see where our time goes).
    const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
    const tsx = module.endsWith('.ts') ? ['--import', 'tsx'] : [];
    const child = fork(module, [], { cwd: ROOT, execArgv: [...tsx, ...profile], stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    const output = new OutputTail(child, echo);
    let answered = false;
    let failure: string | undefined;
    const finish = (error: Error | undefined, result?: CoreResult) => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(result!);
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(new BenchChildError(`bench child gave no result within ${timeoutMs} ms (killed)`, output.toString()));
    }, timeoutMs);
    child.on('message', (message: ChildMessage) => {
      if (message.kind === 'result') finish(undefined, message.result);
      // Kept until 'close', so that what it printed on its way out is in the error too.
      else failure = `bench child failed: ${message.message}`;
    });
    // A failed spawn or a send to a dead child: noted; 'close' follows and reports it with the output.
    child.on('error', (error) => {
      failure ??= `bench child: ${error.message}`;
      if (child.pid === undefined) finish(new BenchChildError(failure, output.toString()));
    });
    child.on('close', (code, signal) => {
      finish(new BenchChildError(failure ?? `bench child exited with ${howItEnded(code, signal)} before reporting`, output.toString()));
    });
    child.send(spec, (error) => {
      if (error) failure ??= `bench child did not take its spec: ${error.message}`;
    });
  });
}
