/**
 * Delivery when several processes share the jobs (distributed mode): any of them may post a job's
 * progress message, edit it, or deliver its gallery, because the engine tells only the process that
 * made a change. What keeps that to one message, one edit per interval and one gallery:
 * - a lock per job delivery and per outbox (`locks`, RedisJobLocks), so a second process waits and
 *   then finds the message and the pages recorded;
 * - an edit gate per message in Redis (EditGate), so the edit interval holds across processes.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { JobLocks } from '../../core/ports.js';
import { LuaScript } from '../../store/redis-scripts.js';

/** What delivery uses of distributed mode (`app.shared` has it); undefined in one process. */
export interface SharedDelivery {
  redis: Redis;
  /** one holder at a time per name, in every process */
  locks: JobLocks;
  /** the deployment's key prefix, keeping two bots on one Redis apart */
  prefix: string;
}

/**
 * KEYS: gate. ARGV: hold ms, token. 0 when the gate was free (it is held from now for the given ms,
 * in the token's name), else the ms left on it. A gate without expiry (never set so here) is given
 * one rather than held for ever.
 */
const TAKE_GATE = new LuaScript(`
if redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1], 'NX') then return 0 end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return tonumber(ARGV[1])
end
return left
`);

/** KEYS: gate. ARGV: token, hold ms. Extends the gate only while the token still holds it. */
const RENEW_GATE = new LuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`);

/** An edit in flight holding its message's gate. */
export interface EditHold {
  /** The edit is over: no edit of the message from any process for `ms` from now. */
  done(ms: number): Promise<void>;
}

/**
 * One edit of a message at a time across processes, and the next no sooner than `intervalMs` after
 * the last one ended. While an edit is in flight its process holds the gate, renewed every third of
 * `inFlightMs` (a process that dies mid-edit frees it then); when it ends, for `intervalMs` from that
 * moment. Measured from the end, not the start: the platform sees two edits at least an interval
 * apart even when the first was slow, and a slow edit never lands after a later one.
 */
/** The shortest an edit's hold on its message lasts without renewal (EditGate). */
const MIN_IN_FLIGHT_MS = 5_000;

export class EditGate {
  private readonly inFlightMs: number;

  constructor(
    private readonly shared: Pick<SharedDelivery, 'redis' | 'prefix'>,
    private readonly platform: string,
    private readonly intervalMs: number,
    /**
     * How long a taken gate holds without its renewal (a process that died mid-edit), and so how long
     * an edit may stall its process before another process's edit may go: at least 5 s, so a busy
     * event loop does not let two edits of one message overlap. @default 10 × intervalMs, 5 s at least
     */
    inFlightMs?: number,
  ) {
    this.inFlightMs = Math.max(intervalMs, inFlightMs ?? Math.max(intervalMs * 10, MIN_IN_FLIGHT_MS));
  }

  private key(message: string): string {
    return `${this.shared.prefix}:edit:${this.platform}:${message}`;
  }

  /** The gate of `message`, held until `done`; or, when another edit holds it, how many ms until it may be tried again. */
  async take(message: string): Promise<EditHold | number> {
    const key = this.key(message);
    const token = randomBytes(12).toString('hex');
    const holdMs = Math.ceil(this.inFlightMs);
    const left = Number(await TAKE_GATE.run(this.shared.redis, [key], [holdMs, token]));
    if (left > 0) return left;
    // A failed renewal is not fatal: the gate lapses after inFlightMs at worst, as for a dead process.
    const timer = setInterval(() => void RENEW_GATE.run(this.shared.redis, [key], [token, holdMs]).catch(() => undefined), Math.max(10, Math.floor(holdMs / 3)));
    timer.unref();
    return {
      done: async (ms) => {
        clearInterval(timer);
        await this.hold(message, ms);
      },
    };
  }

  /** No edit of `message` from any process for `ms` from now (after an edit: the interval; after a 429: its wait). */
  async hold(message: string, ms = this.intervalMs): Promise<void> {
    await this.shared.redis.set(this.key(message), '1', 'PX', Math.max(1, Math.ceil(ms)));
  }
}
