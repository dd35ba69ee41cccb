/**
 * The engine's jobs: the current record of each unfinished job of this process, and the one way any
 * job changes. A change runs under the job's lock (one at a time, in the order they were asked for),
 * turns the current record into a new one — records are never edited in place — freezes it, makes
 * it current and saves it. What the engine hands out is therefore a snapshot that stays as it was.
 *
 * Shared (distributed mode): other processes change the same jobs, so nothing is held here; every
 * change reads the job from the store under the job's lock in Redis (`locks`), and writes it back
 * before the lock is let go.
 */
import { UserError } from './errors.js';
import { buildManifest } from './manifest.js';
import type { ImageStorage, JobLocks, JobRepository, Logger } from './ports.js';
import { freeze } from './snapshot.js';
import type { Job } from './types.js';

export interface ChangeOptions {
  /** also rewrite the job's manifest.json */
  manifest?: boolean;
  /** wait until the store has it (default); false for changes a restart redoes anyway */
  durable?: boolean;
}

/** The next record from the current one (a new object), or undefined when nothing changes. */
export type Update = (job: Readonly<Job>) => Job | Readonly<Job> | undefined | Promise<Job | undefined>;

interface QueuedChange {
  update: Update;
  options: ChangeOptions | (() => ChangeOptions);
  resolve: (job: Readonly<Job>) => void;
  reject: (error: unknown) => void;
}

/** A copy the caller may keep and change. */
export function copy(job: Readonly<Job>): Job {
  return structuredClone(job);
}

export class JobLedger {
  /** unfinished jobs: the current record of each, frozen */
  private readonly active = new Map<string, Readonly<Job>>();
  private readonly chains = new Map<string, Promise<unknown>>();
  /** shared: changes waiting for the next read-apply-save of their job */
  private readonly queued = new Map<string, QueuedChange[]>();

  constructor(
    private readonly deps: {
      jobs: JobRepository;
      files: ImageStorage;
      log: Logger;
      now: () => number;
      /** the lock other processes respect; undefined in one process */
      locks?: JobLocks;
    },
  ) {}

  /** Whether other processes change these jobs too (then nothing is held, and changes are locked in the store). */
  get shared(): boolean {
    return this.deps.locks !== undefined;
  }

  /** The current record of an unfinished job of this process. */
  current(jobId: string): Readonly<Job> | undefined {
    return this.active.get(jobId);
  }

  /** Every unfinished job of this process, as frozen snapshots. */
  all(): Readonly<Job>[] {
    return [...this.active.values()];
  }

  /** Takes a job in (accepted, or resumed from the store): its record is current here from now on. */
  hold(job: Readonly<Job>): Readonly<Job> {
    const held = freeze(job);
    if (!this.shared) this.active.set(job.id, held);
    return held;
  }

  /** Saves a new job (nobody else knows its id yet) and holds it. */
  async create(job: Readonly<Job>): Promise<Readonly<Job>> {
    const held = this.hold(job);
    await this.deps.jobs.save(held);
    return held;
  }

  /** Lets a finished job go: it is read from the store from now on. */
  release(jobId: string): void {
    this.active.delete(jobId);
  }

  /** The job held here, else as stored (writing to the folder it was started with), else undefined. */
  async find(jobId: string): Promise<Readonly<Job> | undefined> {
    const held = this.active.get(jobId);
    if (held) return held;
    const stored = await this.deps.jobs.get(jobId);
    if (stored?.outputDir) this.deps.files.adopt(stored.id, stored.outputDir);
    return stored;
  }

  async load(jobId: string): Promise<Readonly<Job>> {
    const job = await this.find(jobId);
    if (!job) throw new UserError('not_found', `Job ${jobId} does not exist (any more).`);
    return job;
  }

  /**
   * Changes a job under its lock: `update` turns the current record into the next, which is frozen,
   * becomes current at once and is saved. `options` may depend on what `update` found.
   */
  change(jobId: string, update: Update, options: ChangeOptions | (() => ChangeOptions) = {}): Promise<Readonly<Job>> {
    if (this.deps.locks) return this.changeShared(jobId, update, options);
    const apply = async () => {
      const current = await this.load(jobId);
      const updated = await update(current);
      if (!updated) return current;
      const job = this.next(updated);
      if (this.active.has(jobId)) this.active.set(jobId, job);
      const { manifest, durable } = typeof options === 'function' ? options() : options;
      // The manifest first: if the process dies between the two writes, the store (which drives
      // resuming) is the one behind, and redoing the change rewrites both.
      if (manifest) await this.deps.files.writeManifest(jobId, buildManifest(job));
      const saved = this.deps.jobs.save(job);
      if (durable === false) {
        // Not needed for a correct restart (it is redone or recomputed): written with the next save.
        saved.catch((error: unknown) => this.deps.log.error({ err: error, job: jobId }, 'saving a job failed'));
      } else {
        await saved;
      }
      return job;
    };
    return this.chain(jobId, apply);
  }

  private next(updated: Job | Readonly<Job>): Readonly<Job> {
    return freeze({ ...updated, updatedAt: new Date(this.deps.now()).toISOString() });
  }

  private chain<T>(jobId: string, work: () => Promise<T>): Promise<T> {
    const previous = this.chains.get(jobId) ?? Promise.resolve();
    const next = previous.then(work);
    const settled = next.catch(() => undefined);
    this.chains.set(jobId, settled);
    void settled.then(() => {
      if (this.chains.get(jobId) === settled) this.chains.delete(jobId);
    });
    return next;
  }

  /**
   * Shared: every change reads the job from the store under its lock, and is saved before the lock is
   * let go (a save landing later could overwrite another process's change). Changes asked for while
   * one is on its way are applied together, in order, on one read and one save: under a burst (four
   * images of a call saved at once) a job pays for one lock, not one per change.
   */
  private changeShared(jobId: string, update: Update, options: ChangeOptions | (() => ChangeOptions)): Promise<Readonly<Job>> {
    return new Promise((resolve, reject) => {
      const queued = this.queued.get(jobId);
      if (queued) return void queued.push({ update, options, resolve, reject });
      this.queued.set(jobId, [{ update, options, resolve, reject }]);
      void this.chain(jobId, () => this.deps.locks!.run(jobId, () => this.drain(jobId))).catch(() => undefined);
    });
  }

  private async drain(jobId: string): Promise<void> {
    const batch = this.queued.get(jobId) ?? [];
    this.queued.delete(jobId);
    let current: Readonly<Job>;
    try {
      current = await this.load(jobId);
    } catch (error) {
      for (const entry of batch) entry.reject(error);
      return;
    }
    const outcomes: ({ job: Readonly<Job> } | { error: unknown })[] = [];
    let changed = false;
    let manifest = false;
    for (const entry of batch) {
      try {
        const updated = await entry.update(current);
        if (updated) {
          current = this.next(updated);
          changed = true;
          const opts = typeof entry.options === 'function' ? entry.options() : entry.options;
          manifest ||= opts.manifest === true;
        }
        outcomes.push({ job: current });
      } catch (error) {
        outcomes.push({ error });
      }
    }
    try {
      if (changed) {
        if (manifest) await this.deps.files.writeManifest(jobId, buildManifest(current));
        await this.deps.jobs.save(current);
      }
    } catch (error) {
      for (const entry of batch) entry.reject(error);
      return;
    }
    batch.forEach((entry, k) => {
      const outcome = outcomes[k]!;
      if ('job' in outcome) entry.resolve(outcome.job);
      else entry.reject(outcome.error);
    });
  }

  /** A change written as edits to a copy of the job. */
  edit(jobId: string, apply: (draft: Job) => void | Promise<void>, options: ChangeOptions = {}): Promise<Readonly<Job>> {
    return this.change(
      jobId,
      async (job) => {
        const draft = copy(job);
        await apply(draft);
        return draft;
      },
      options,
    );
  }

  /** Resolves once every change asked for so far has settled. */
  async settled(): Promise<void> {
    await Promise.all([...this.chains.values()]);
  }
}
