/**
 * Who gets in: per tenant, a number of jobs running (their batches in the scheduler) and a number
 * waiting behind them; per person, a number of unfinished jobs; per tenant and UTC day, a number of
 * images. Every refusal says what the limit is and when to try again.
 */
import { UserError } from './errors.js';
import type { AdmissionBook, AdmissionCaps, AdmissionEntry, JobRepository, Placement, PlaceResult } from './ports.js';
import type { Job, Requester } from './types.js';
import { plural } from './text.js';

export interface AdmissionLimits {
  tenantMaxRunningJobs: number;
  tenantMaxQueuedJobs: number;
  /** images one tenant may request per UTC day @default unlimited */
  tenantDailyImages?: number;
  /** images all tenants together may request per UTC day @default unlimited */
  globalDailyImages?: number;
  /** jobs one person may have queued or running at once, per tenant @default unlimited */
  userMaxActiveJobs?: number;
}

export type { Placement } from './ports.js';

/** A tenant's own daily cap, from its settings (given whenever settings are on): `daily` undefined = no tenant cap. */
export interface TenantCap {
  daily?: number;
}

function formatWait(ms: number): string {
  const minutes = Math.max(1, Math.ceil(ms / 60_000));
  return minutes < 60 ? `${minutes} min` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** The admission book of one process: in memory, each step synchronous, so atomic by itself. */
export class LocalAdmissionBook implements AdmissionBook {
  /** per tenant: jobs whose batches are in the scheduler, and jobs waiting for a running slot */
  private readonly running = new Map<string, Set<string>>();
  private readonly waiting = new Map<string, string[]>();
  /** per tenant and person: their unfinished jobs */
  private readonly people = new Map<string, Set<string>>();

  private of<V>(map: Map<string, V>, key: string, empty: () => V): V {
    let value = map.get(key);
    if (value === undefined) map.set(key, (value = empty()));
    return value;
  }

  private runningOf(tenant: string): Set<string> {
    return this.of(this.running, tenant, () => new Set());
  }

  private waitingOf(tenant: string): string[] {
    return this.of(this.waiting, tenant, () => []);
  }

  private personOf(entry: AdmissionEntry): Set<string> {
    return this.of(this.people, `${entry.tenant}\n${entry.userId}`, () => new Set());
  }

  place(entry: AdmissionEntry, caps: AdmissionCaps): Promise<PlaceResult> {
    const mine = this.personOf(entry);
    if (caps.maxPerPerson !== undefined && mine.size >= caps.maxPerPerson) return Promise.resolve({ refused: 'person', mine: mine.size });
    const running = this.runningOf(entry.tenant);
    const waiting = this.waitingOf(entry.tenant);
    let placement: Placement;
    if (running.size < caps.maxRunning) {
      running.add(entry.jobId);
      placement = 'admit';
    } else if (waiting.length < caps.maxWaiting) {
      waiting.push(entry.jobId);
      placement = 'wait';
    } else {
      return Promise.resolve({ refused: 'full', running: running.size, waiting: waiting.length });
    }
    mine.add(entry.jobId);
    return Promise.resolve({ placement });
  }

  readmit(entry: AdmissionEntry, wasRunning: boolean, caps: AdmissionCaps): Promise<Placement> {
    const running = this.runningOf(entry.tenant);
    const waiting = this.waitingOf(entry.tenant);
    this.personOf(entry).add(entry.jobId);
    if (running.has(entry.jobId)) return Promise.resolve('admit');
    if (waiting.includes(entry.jobId)) return Promise.resolve('wait');
    if (wasRunning || running.size < caps.maxRunning) {
      running.add(entry.jobId);
      return Promise.resolve('admit');
    }
    waiting.push(entry.jobId);
    return Promise.resolve('wait');
  }

  remove(entry: AdmissionEntry, caps: AdmissionCaps): Promise<string[]> {
    this.personOf(entry).delete(entry.jobId);
    const running = this.runningOf(entry.tenant);
    running.delete(entry.jobId);
    const waiting = this.waitingOf(entry.tenant);
    if (waiting.includes(entry.jobId)) waiting.splice(waiting.indexOf(entry.jobId), 1);
    const next: string[] = [];
    while (waiting.length > 0 && running.size < caps.maxRunning) {
      const id = waiting.shift()!;
      running.add(id);
      next.push(id);
    }
    return Promise.resolve(next);
  }

  waitingIndex(tenant: string, jobId: string): number {
    return this.waiting.get(tenant)?.indexOf(jobId) ?? -1;
  }
}

export class Admission {
  constructor(
    private readonly limits: AdmissionLimits,
    private readonly jobs: JobRepository,
    private readonly book: AdmissionBook = new LocalAdmissionBook(),
  ) {}

  private get slots(): AdmissionCaps {
    const { tenantMaxRunningJobs, tenantMaxQueuedJobs, userMaxActiveJobs } = this.limits;
    return { maxRunning: tenantMaxRunningJobs, maxWaiting: tenantMaxQueuedJobs, ...(userMaxActiveJobs !== undefined ? { maxPerPerson: userMaxActiveJobs } : {}) };
  }

  /**
   * Places a new job in one atomic step of the book: running if a slot is free, else waiting if
   * there is room; refuses a person at their limit, or a full queue, saying what the limit is.
   */
  async place(requester: Requester, jobId: string): Promise<Placement> {
    const result = await this.book.place({ tenant: requester.tenant, userId: requester.userId, jobId }, this.slots);
    if ('placement' in result) return result.placement;
    if (result.refused === 'person') {
      throw new UserError(
        'quota',
        `You already have ${plural(result.mine, 'job')} queued or running here (the most one person may have is ${this.limits.userMaxActiveJobs}). ` +
          'Try again when one finishes; /jobs shows them.',
      );
    }
    const { tenantMaxRunningJobs, tenantMaxQueuedJobs } = this.limits;
    throw new UserError(
      'queue_full',
      `The queue is full here: ${plural(result.running, 'job')} running and ${result.waiting} waiting (the most allowed is ` +
        `${tenantMaxRunningJobs} + ${tenantMaxQueuedJobs}). Try again when one finishes.`,
    );
  }

  /** A resumed job: running if a slot is free or it was already running, else waiting. */
  readmit(job: Readonly<Job>): Promise<Placement> {
    const { tenant, userId } = job.requester;
    return this.book.readmit({ tenant, userId, jobId: job.id }, job.state === 'running', this.slots);
  }

  /** Position among the tenant's waiting jobs (0-based), or -1 when not waiting. */
  waitingIndex(tenant: string, jobId: string): number {
    return this.book.waitingIndex(tenant, jobId);
  }

  /** Forgets a finished job; returns the waiting jobs that may now run. */
  remove(job: Readonly<Job>): Promise<string[]> {
    const { tenant, userId } = job.requester;
    return this.book.remove({ tenant, userId, jobId: job.id }, this.slots);
  }

  /**
   * Takes `count` images from the tenant's daily cap and from the bot's global one, or refuses with
   * what is left and when it resets (and takes nothing). Every direct-message user is a tenant of
   * their own for fairness, but they share one daily cap: otherwise each new account would bring a
   * fresh day's worth of images.
   */
  async reserveImages(tenant: string, count: number, now: number, tenantCap?: TenantCap): Promise<void> {
    const day = new Date(now).toISOString().slice(0, 10);
    const taken: string[] = [];
    try {
      for (const { key, cap, whose } of this.caps(tenant, tenantCap)) {
        if ((await this.jobs.reserveImages(key, day, count, cap)) === undefined) {
          const left = Math.max(0, cap - (await this.jobs.imagesUsed(key, day)));
          const midnight = Date.parse(`${day}T00:00:00.000Z`) + 86_400_000;
          throw new UserError(
            'quota',
            `This job asks for ${plural(count, 'image')}, but only ${left} of today's ${cap} are left ${whose}. ` +
              `The daily count starts again at 00:00 UTC, in ${formatWait(midnight - now)}${left > 0 ? `; or ask for ${left} or fewer` : ''}.`,
          );
        }
        taken.push(key);
      }
    } catch (error) {
      for (const key of taken) await this.jobs.releaseImages(key, day, count);
      throw error;
    }
  }

  /** Gives back images reserved on `day` (an ISO date) that were not made. */
  async releaseImages(tenant: string, day: string, count: number, tenantCap?: TenantCap): Promise<void> {
    if (count <= 0) return;
    for (const { key } of this.caps(tenant, tenantCap)) await this.jobs.releaseImages(key, day.slice(0, 10), count);
  }

  /**
   * The daily caps a tenant's images count against. `tenantCap` is the tenant's own (/settings `daily`)
   * in place of TENANT_DAILY_IMAGES; direct messages keep their shared cap whatever it says.
   */
  private caps(tenant: string, tenantCap?: TenantCap): { key: string; cap: number; whose: string }[] {
    const { globalDailyImages } = this.limits;
    const dm = tenant.startsWith('dm:');
    // With settings, a tenant's images are always counted (uncapped: up to the largest safe number), so
    // that a cap set later in the day, and what a job gives back, find the day's true tally.
    const tenantDailyImages =
      tenantCap === undefined || dm ? this.limits.tenantDailyImages : (tenantCap.daily ?? Number.MAX_SAFE_INTEGER);
    return [
      ...(tenantDailyImages !== undefined
        ? [{ key: dm ? 'dm:*' : tenant, cap: tenantDailyImages, whose: dm ? 'for direct messages' : 'here' }]
        : []),
      ...(globalDailyImages !== undefined ? [{ key: '*', cap: globalDailyImages, whose: 'on this bot for everyone' }] : []),
    ];
  }
}
