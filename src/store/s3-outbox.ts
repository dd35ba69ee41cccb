/**
 * The S3 image store's outbox: the bucket writes that failed after the SDK's own retries, kept until a
 * later try succeeds, so that a store that is down for an hour costs a late upload, never an image.
 * One file per job in the local cache, `<cache>/<jobId>/.s3-outbox.json`, written to a temporary name
 * and renamed into place (a crash leaves the old list or the new one, never half of one):
 *
 *     { "version": 1, "jobId": "…", "entries": [
 *       { "op": "put", "file": "approved/001.png", "contentType": "image/png",
 *         "remove": ["pending-review/001.png"], "since": "…", "attempts": 2, "error": "SlowDown (HTTP 503)" } ] }
 *
 * The cache keeps the bytes of every `put` meanwhile, and reads are served from it. Each entry is
 * tried again in the background with a doubling backoff (a timer that never holds the process open),
 * and at once when a store opens on a cache folder that holds outboxes. What an entry means, and how
 * it is tried, is the store's (s3.ts); this file keeps the list, its file, its lock and its timer.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../core/ports.js';
import { DIR_MODE, FILE_MODE, TEMP_MARK } from './files.js';

export const OUTBOX_FILE = '.s3-outbox.json';
const VERSION = 1;

export type OutboxOp =
  /** upload the cached copy of `file` (an image or manifest whose upload failed, or a move's target) */
  | 'put'
  /** copy the object of `from` to `file`: a review's move, when this process has no copy of the image */
  | 'copy'
  /** delete the object of `file`: the second half of a move whose copy went through */
  | 'delete';

export interface OutboxEntry {
  op: OutboxOp;
  /** relative to the job folder: the file this entry writes (`put`, `copy`) or deletes (`delete`) */
  file: string;
  /** `copy`: the file whose object is copied */
  from?: string;
  /** `put`: the object's content type */
  contentType?: string;
  /** files whose objects are deleted once `file` is written: where the image was before a move */
  remove: string[];
  /** when it first failed (ISO 8601) */
  since: string;
  /** failed tries so far, the first (with the SDK's own retries) included */
  attempts: number;
  /** the last failure in one line: the S3 error's code and HTTP status, never a header */
  error: string;
}

/** Thrown by a try that can never succeed (the cached copy of a `put` is gone): the entry is dropped. */
export class OutboxGone extends Error {}

export interface OutboxOptions {
  /** the cache folder of a job */
  jobDir: (jobId: string) => string;
  /** one try of an entry; resolves when it is done, throws to be tried again later */
  attempt: (jobId: string, entry: Readonly<OutboxEntry>) => Promise<void>;
  /** whether a recorded file is one a job could have (a file read back is untrusted) */
  validFile: (file: string) => boolean;
  /** the object key of a file, for the log */
  keyOf: (jobId: string, file: string) => string;
  describeError: (error: unknown) => string;
  logger: Logger;
  /** @default 5000 */
  retryBaseMs?: number;
  /** @default 300000 (5 minutes) */
  retryMaxMs?: number;
}

interface Held {
  entries: OutboxEntry[];
  /** when each entry is due to be tried again (epoch ms); absent: now */
  due: Map<OutboxEntry, number>;
  /** the job's lock: every change, and every try, waits for the one before it */
  lock: Promise<unknown>;
}

const JOB_ID = /^[\w-]{1,64}$/;
const OPS: readonly OutboxOp[] = ['put', 'copy', 'delete'];

export class S3Outbox {
  readonly #options: OutboxOptions;
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #jobs = new Map<string, Held>();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #closed = false;

  constructor(options: OutboxOptions) {
    this.#options = options;
    this.#baseMs = options.retryBaseMs ?? 5_000;
    this.#maxMs = options.retryMaxMs ?? 300_000;
  }

  /** Loads every job's outbox found under `root` (a store opening on a cache folder), to be tried at once. */
  async resume(root: string): Promise<number> {
    const folders = await readdir(root, { withFileTypes: true }).catch(() => []);
    let found = 0;
    for (const folder of folders) {
      if (!folder.isDirectory() || !JOB_ID.test(folder.name)) continue;
      const entries = await this.#load(folder.name);
      if (entries.length === 0) continue;
      const held = this.#held(folder.name);
      // Merged, in case this process recorded something for the job before resuming.
      await this.#locked(held, async () => {
        for (const entry of entries) {
          if (held.entries.some((e) => e.op === entry.op && e.file === entry.file)) continue;
          held.entries.push(entry);
          held.due.set(entry, 0);
        }
      });
      found += entries.length;
    }
    this.#schedule();
    return found;
  }

  /**
   * Runs `change` on the job's entries holding its lock (no try of that job is under way meanwhile),
   * then saves them if they changed and sets the timer. `change` may also move cached files: a try
   * never sees a cached copy half-way through a move.
   */
  async update<T>(jobId: string, change: (entries: OutboxEntry[]) => Promise<T> | T): Promise<T> {
    const held = this.#held(jobId);
    return this.#locked(held, async () => {
      const before = JSON.stringify(held.entries);
      const result = await change(held.entries);
      // A new entry has just failed, the SDK's retries included: its first retry waits one step.
      for (const entry of held.entries) if (!held.due.has(entry)) held.due.set(entry, Date.now() + this.#baseMs);
      if (JSON.stringify(held.entries) !== before) await this.#save(jobId, held.entries);
      this.#schedule();
      return result;
    });
  }

  /** Uploads not yet done for a job (`put` and `copy`; a leftover delete is tidying, not delivery). */
  waiting(jobId: string): number {
    return this.#jobs.get(jobId)?.entries.filter((entry) => entry.op !== 'delete').length ?? 0;
  }

  /** The entries of a job as they stand (copies). */
  entries(jobId: string): OutboxEntry[] {
    return (this.#jobs.get(jobId)?.entries ?? []).map((entry) => ({ ...entry, remove: [...entry.remove] }));
  }

  /** Tries every entry of every job now, due or not; resolves with how many are still waiting after it. */
  async retryAll(): Promise<number> {
    await this.#run(true);
    let left = 0;
    for (const jobId of this.#jobs.keys()) left += this.waiting(jobId);
    return left;
  }

  /** Stops the timer; resolves when a try under way has ended. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  #held(jobId: string): Held {
    let held = this.#jobs.get(jobId);
    if (!held) {
      held = { entries: [], due: new Map(), lock: Promise.resolve() };
      this.#jobs.set(jobId, held);
    }
    return held;
  }

  #locked<T>(held: Held, work: () => Promise<T>): Promise<T> {
    const run = held.lock.then(work);
    held.lock = run.catch(() => undefined);
    return run;
  }

  /** One timer for the store, set for the earliest entry due. */
  #schedule(): void {
    if (this.#closed || this.#running) return;
    clearTimeout(this.#timer);
    let next = Infinity;
    for (const held of this.#jobs.values()) {
      for (const entry of held.entries) next = Math.min(next, held.due.get(entry) ?? 0);
    }
    if (next === Infinity) return;
    this.#timer = setTimeout(() => void this.#run(false), Math.max(0, next - Date.now()));
    // A retry never keeps the process alive on its own: the next start resumes the outbox.
    this.#timer.unref();
  }

  async #run(all: boolean): Promise<void> {
    // One pass at a time: a pass asked for during another waits for it, then makes its own.
    while (this.#running) await this.#running;
    clearTimeout(this.#timer);
    this.#running = this.#pass(all);
    try {
      await this.#running;
    } finally {
      this.#running = undefined;
      this.#schedule();
    }
  }

  async #pass(all: boolean): Promise<void> {
    for (const [jobId, held] of [...this.#jobs]) {
      for (const entry of [...held.entries]) {
        if (this.#closed) return;
        if (!all && (held.due.get(entry) ?? 0) > Date.now()) continue;
        await this.#locked(held, () => this.#try(jobId, held, entry)).catch((error: unknown) => {
          // The outbox file could not be written (a full disk): the entry stays in memory and is tried again.
          this.#options.logger.error({ jobId, error: String(error).slice(0, 300) }, 'S3 outbox could not be saved');
        });
      }
    }
  }

  /** One try of one entry, holding its job's lock. */
  async #try(jobId: string, held: Held, entry: OutboxEntry): Promise<void> {
    // Changed or settled by the store while this pass waited for the lock.
    if (!held.entries.includes(entry)) return;
    const { logger, keyOf } = this.#options;
    const key = keyOf(jobId, entry.file);
    try {
      await this.#options.attempt(jobId, entry);
    } catch (error) {
      if (error instanceof OutboxGone) {
        logger.error({ jobId, key, op: entry.op }, `S3 ${entry.op} given up: ${error.message}`);
        await this.#drop(jobId, held, entry);
        return;
      }
      entry.attempts += 1;
      entry.error = this.#options.describeError(error);
      held.due.set(entry, Date.now() + Math.min(this.#baseMs * 2 ** Math.min(entry.attempts - 1, 30), this.#maxMs));
      // The failure was logged once when the entry was recorded; each further one only at debug.
      logger.debug({ jobId, key, op: entry.op, attempts: entry.attempts, error: entry.error }, 'S3 retry failed; tried again later');
      await this.#save(jobId, held.entries);
      return;
    }
    logger.info({ jobId, key, op: entry.op, attempts: entry.attempts + 1 }, `S3 ${entry.op} done on a retry`);
    await this.#drop(jobId, held, entry);
  }

  async #drop(jobId: string, held: Held, entry: OutboxEntry): Promise<void> {
    held.entries.splice(held.entries.indexOf(entry), 1);
    held.due.delete(entry);
    await this.#save(jobId, held.entries);
  }

  #file(jobId: string): string {
    return path.join(this.#options.jobDir(jobId), OUTBOX_FILE);
  }

  /** Writes the list under a temporary name and renames it into place; an empty list removes the file. */
  async #save(jobId: string, entries: OutboxEntry[]): Promise<void> {
    const target = this.#file(jobId);
    if (entries.length === 0) {
      await rm(target, { force: true });
      return;
    }
    await mkdir(path.dirname(target), { recursive: true, mode: DIR_MODE });
    const temp = `${target}${TEMP_MARK}${randomBytes(4).toString('hex')}`;
    try {
      await writeFile(temp, `${JSON.stringify({ version: VERSION, jobId, entries }, null, 2)}\n`, { mode: FILE_MODE });
      await rename(temp, target);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
  }

  /** Reads a job's outbox back; what an older or altered file holds is checked entry by entry. */
  async #load(jobId: string): Promise<OutboxEntry[]> {
    const { logger } = this.#options;
    let raw: unknown;
    try {
      raw = JSON.parse(await readFile(this.#file(jobId), 'utf8'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') logger.warn({ jobId, file: OUTBOX_FILE }, 'S3 outbox unreadable; left as it is');
      return [];
    }
    const list = (raw as { version?: unknown; entries?: unknown } | null)?.entries;
    if ((raw as { version?: unknown } | null)?.version !== VERSION || !Array.isArray(list)) {
      logger.warn({ jobId, file: OUTBOX_FILE }, 'S3 outbox of an unknown version; left as it is');
      return [];
    }
    const entries = list.map((item) => this.#entry(item)).filter((entry): entry is OutboxEntry => entry !== undefined);
    if (entries.length < list.length) logger.warn({ jobId, dropped: list.length - entries.length }, 'S3 outbox entries that are not valid were dropped');
    return entries;
  }

  #entry(item: unknown): OutboxEntry | undefined {
    const valid = this.#options.validFile;
    const e = item as Partial<Record<keyof OutboxEntry, unknown>> | null;
    if (!e || typeof e !== 'object') return undefined;
    if (!OPS.includes(e.op as OutboxOp) || typeof e.file !== 'string' || !valid(e.file)) return undefined;
    if (e.op === 'copy' && (typeof e.from !== 'string' || !valid(e.from))) return undefined;
    if (e.op === 'put' && (typeof e.contentType !== 'string' || !/^[\w.+-]+\/[\w.+-]+$/.test(e.contentType))) return undefined;
    const remove = Array.isArray(e.remove) ? e.remove : [];
    if (!remove.every((file): file is string => typeof file === 'string' && valid(file))) return undefined;
    return {
      op: e.op as OutboxOp,
      file: e.file,
      ...(e.op === 'copy' ? { from: e.from as string } : {}),
      ...(e.op === 'put' ? { contentType: e.contentType as string } : {}),
      remove,
      since: typeof e.since === 'string' ? e.since.slice(0, 40) : new Date().toISOString(),
      attempts: typeof e.attempts === 'number' && Number.isInteger(e.attempts) && e.attempts >= 0 ? e.attempts : 1,
      error: typeof e.error === 'string' ? e.error.slice(0, 300) : '',
    };
  }
}
