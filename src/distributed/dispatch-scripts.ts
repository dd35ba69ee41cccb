/**
 * The dispatcher's own Redis scripts: the fair tag of a ticket, the start of a ticket, the send gate
 * and the pause. Each is one Lua script so that every process sees one order, one window and one
 * pause, whatever runs at the same moment; times come from Redis `TIME`, the one clock they share.
 *
 * Fairness across tenants (open-source BullMQ has no groups) is start-time fair queueing on BullMQ's
 * priorities (1 … 2,097,151, lower first, first in first out within one priority). Per lane, V is the
 * largest tag whose call has been sent (the round being served at the provider), and F[tenant] the tag after the tenant's
 * last queued call. A call is tagged max(V, F[tenant]) (its start tag; at least 1) and queued at that
 * priority, and F[tenant] becomes tag + 1. A tenant's calls thus take consecutive tags from where it
 * stands: one with 250 queued calls holds V … V+249, while a newcomer's first call is tagged V — it
 * joins the round being served, behind at most one call of each other tenant, and the two alternate
 * from there. A tenant back from a pause starts at V, not at its old F, so being away banks no credit;
 * whoever queued the call, in whichever process, it lands in the same order.
 *
 * Where it is not exact: equal tags run in the order they were queued (a newcomer's V ties with the
 * round's other calls, and those queued first run first); a delayed retry keeps the tag it had when
 * queued, so once ready it runs before calls queued during its wait (as a `front` retry, tagged V,
 * keeps its turn without moving its tenant's F); a ticket taken over from a dead process goes back
 * to BullMQ's plain wait list, which runs before every prioritized ticket. And priorities end at
 * 2,097,151: V and F go back to 0 whenever a lane past a million is empty, and a tag beyond the range
 * is clamped to it (first come, first served among the clamped; the dispatcher warns once).
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/** A Lua script sent once per connection (EVALSHA, and EVAL when Redis does not know it yet). */
export class RedisScript {
  private readonly sha: string;

  constructor(private readonly lua: string) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  async run(redis: Redis, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      return redis.eval(this.lua, keys.length, ...keys, ...args);
    }
  }
}

/** Redis time in milliseconds (with microseconds as the fraction). */
const NOW_MS = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
`;

/**
 * A ticket's fair tag, recorded in its job's ticket hash (the hash is also how a cancel reaches a
 * ticket that is waiting or about to start). Queueing a known ticket again returns its tag and moves
 * nothing, so a duplicate enqueue costs its tenant no turn.
 *
 * KEYS: 1 V, 2 F (tenant → last tag), 3 the job's tickets (ticket id → `provider:tag`), 4 tickets
 * being added (ticket id → ms), 5–9 the lane's BullMQ wait, prioritized, delayed, active, paused.
 * ARGV: 1 tenant, 2 `1` for a front ticket, 3 ticket id, 4 provider, 5 V past which an empty lane
 * starts again at 0, 6 ms after which an add in progress is taken as abandoned.
 * Returns the tag.
 */
export const TAG = new RedisScript(`
local known = redis.call('HGET', KEYS[3], ARGV[3])
if known then return tonumber(string.match(known, ':(%d+)$')) end
${NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[6]))
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
-- A ticket tagged but not yet added (KEYS[4]) counts as queued: resetting under it would leave it
-- with a tag far behind every later one.
if v > tonumber(ARGV[5]) and redis.call('LLEN', KEYS[5]) + redis.call('ZCARD', KEYS[6]) + redis.call('ZCARD', KEYS[7])
    + redis.call('LLEN', KEYS[8]) + redis.call('LLEN', KEYS[9]) + redis.call('ZCARD', KEYS[4]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  v = 0
end
local tag
if ARGV[2] == '1' then
  tag = math.max(v, 1)
else
  tag = math.max(v, tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0'), 1)
  redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', tag + 1))
end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4] .. ':' .. string.format('%d', tag))
redis.call('ZADD', KEYS[4], now, ARGV[3])
return tag
`);

/**
 * A ticket starts: 0 when its job's cancel has dropped it (run nothing), else 1. (V moves when the
 * ticket's call is sent, in GATE: a ticket started early, waiting at the gate, has not been served.)
 * KEYS: 1 the job's tickets. ARGV: 1 ticket id.
 */
export const START = new RedisScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
return 1
`);

/**
 * The send gate: 0 when this send may go now (and it is counted), -1 when another ticket's turn comes
 * first, else ms to wait — for a pause to end, or for the oldest send to leave the rolling window.
 *
 * Tickets waiting at the gate go through in the order of their fair tags (lowest first), not in the
 * order they happen to ask: a newcomer's ticket, tagged with the round being served, passes before
 * a backlog's tickets that started early and wait for the window. A waiter that stops asking (its
 * process died) is dropped once its last ask is `stale` ms old. Passing moves V up to the tag.
 *
 * KEYS: 1 send times (sorted set, score = ms), 2 the pause, 3 waiters (sorted set, score = tag),
 * 4 waiters' last ask (hash, ms), 5 V. ARGV: 1 limit (0 = none), 2 window ms, 3 a member unique to
 * this send, 4 the ticket ('' = none: no turn, no V), 5 its tag, 6 stale ms.
 */
/** How long sends are kept, with no limit known, for the first 429 to learn from. */
export const LEARN_HISTORY_MS = 3_600_000;
/** How long a learned limit is kept after the last 429 that taught or lowered it. */
export const LEARNED_TTL_MS = 86_400_000;

export const GATE = new RedisScript(`
${NOW_MS}
local ticket = ARGV[4]
local limit = tonumber(ARGV[1])
if ticket ~= '' and limit > 0 then
  redis.call('ZADD', KEYS[3], 'NX', ARGV[5], ticket)
  redis.call('HSET', KEYS[4], ticket, string.format('%d', now))
  local stale = tonumber(ARGV[6])
  while true do
    local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if not head then break end
    if now - tonumber(redis.call('HGET', KEYS[4], head) or '0') <= stale then break end
    redis.call('ZREM', KEYS[3], head)
    redis.call('HDEL', KEYS[4], head)
  end
end
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return paused end
if ticket ~= '' and limit > 0 and redis.call('ZRANGE', KEYS[3], 0, 0)[1] ~= ticket then return -1 end
if limit > 0 then
  local window = tonumber(ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= limit then
    local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
    return math.max(1, math.ceil(oldest + window - now))
  end
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window))
end
if ticket ~= '' then
  redis.call('ZREM', KEYS[3], ticket)
  redis.call('HDEL', KEYS[4], ticket)
  if tonumber(ARGV[5]) > tonumber(redis.call('GET', KEYS[5]) or '0') then redis.call('SET', KEYS[5], ARGV[5]) end
end
return 0
`);

/**
 * A tenant's ticket may start: 0 (and it is counted) when fewer than `limit` of the tenant's tickets
 * started in the rolling window, else ms until one may. KEYS: 1 the tenant's start times. ARGV: 1 limit,
 * 2 window ms, 3 a member unique to this start.
 */
export const TENANT_START = new RedisScript(`
${NOW_MS}
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window))
  return 0
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
return math.max(1, math.ceil(oldest + window - now))
`);

/** A waiter gives up its place at the gate (aborted). KEYS: 1 waiters, 2 their last ask. ARGV: 1 the ticket. */
export const LEAVE_GATE = new RedisScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 0
`);

/**
 * A send's answer arrived: it counts from now on, for a whole window. The provider saw the request
 * somewhere between the gate and the answer, so a send counted until its answer has arrived can
 * never share a provider's window with more than the limit, whatever the network's jitter.
 * KEYS: 1 send times. ARGV: 1 window ms, 2 the send's member.
 */
export const ANSWERED = new RedisScript(`
${NOW_MS}
if redis.call('ZADD', KEYS[1], 'XX', now, ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])))
end
return 0
`);

/**
 * A send leaves: it counts from now (it may have waited in its process's one-at-a-time submit since
 * the gate counted it). With no limit known (none configured, none learned yet) the gate let it through
 * uncounted, and it is recorded here all the same, kept for an hour, so that the first 429 can teach
 * one (LEARN): only sends the provider may have seen count. KEYS: 1 send times. ARGV: 1 the send's member.
 */
export const SENT = new RedisScript(`
${NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ${LEARN_HISTORY_MS})
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ${LEARN_HISTORY_MS})
return 0
`);

/**
 * A 429 with no configured limit: learns one, as the one-process gate does (src/core/scheduler.ts,
 * SendWindow.learn). The rejected send is dropped from the sends (the provider did not count it).
 * None learned yet: the sends of the latest busy stretch (the first with no send a window before it,
 * the window reaching to when the Retry-After says a place frees) over that window. Learned already,
 * a send let through under it, and a send counted by it: one less. Kept as "limit:window:since" (whole ms)
 * for LEARNED_TTL_MS. KEYS: 1 send times, 2 the learned limit. ARGV: 1 ms until a place frees, 2 the
 * rejected send ('' = none), 3 '1' when the gate let it through under a learned limit. Returns the
 * limit now learned, or 0.
 */
export const LEARN = new RedisScript(`
${NOW_MS}
now = math.floor(now)
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[1], ARGV[2]) end
local free_at = now + tonumber(ARGV[1])
local known = redis.call('GET', KEYS[2])
if known then
  local limit, window, since = string.match(known, '^(%d+):(%d+):(%d+)$')
  limit = tonumber(limit)
  window = tonumber(window)
  -- Only a send the gate let through under the lesson says it was wrong (others left without it).
  if ARGV[3] == '1' and redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf') > 0 then
    limit = math.max(1, limit - 1)
    redis.call('SET', KEYS[2], string.format('%d:%d:%d', limit, window, now), 'PX', ${LEARNED_TTL_MS})
  end
  return limit
end
local sends = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local n = #sends / 2
for k = n, 1, -1 do
  local oldest = tonumber(sends[2 * k])
  local window = free_at - oldest
  if window > 0 and (k == 1 or tonumber(sends[2 * k - 2]) <= oldest - window) then
    local limit = n - k + 1
    redis.call('SET', KEYS[2], string.format('%d:%d:%d', limit, math.ceil(window), now), 'PX', ${LEARNED_TTL_MS})
    return limit
  end
end
return 0
`);

/**
 * Pauses a lane for ms unless it is paused longer already (a short Retry-After never cuts a long one
 * short). KEYS: 1 the pause. ARGV: 1 ms. Returns the pause's ms left after the call.
 */
export const PAUSE = new RedisScript(`
local left = redis.call('PTTL', KEYS[1])
local ms = tonumber(ARGV[1])
if left >= ms then return left end
redis.call('SET', KEYS[1], '1', 'PX', ms)
return ms
`);
