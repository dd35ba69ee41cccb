/**
 * The Lua scripts of the Redis store, job locks and admission book. Each runs as one atomic step on
 * the server: nothing another process sends can land between its reads and its writes, which is what
 * lets two processes taking commands at once never both take the last place or the last image.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/** A script sent once per server: by its SHA1 after that, its source again only when Redis forgot it. */
export class LuaScript {
  private readonly sha: string;

  constructor(private readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  async run(redis: Redis, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (error) {
      // A restarted or flushed server has no script cache; EVAL loads it again.
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      return redis.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}

/** KEYS: tally. ARGV: count, cap, ttl ms. The new tally, or nil (and nothing added) past the cap. */
export const RESERVE_IMAGES = new LuaScript(`
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local count = tonumber(ARGV[1])
if used + count > tonumber(ARGV[2]) then return false end
local tally = redis.call('INCRBY', KEYS[1], count)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return tally
`);

/** KEYS: tally. ARGV: count. Never below 0; a tally that expired stays gone. */
export const RELEASE_IMAGES = new LuaScript(`
local used = redis.call('GET', KEYS[1])
if not used then return 0 end
local left = math.max(0, tonumber(used) - tonumber(ARGV[1]))
redis.call('SET', KEYS[1], left, 'KEEPTTL')
return left
`);

/** KEYS: lock. ARGV: token, ttl ms. 1 when the token still holds the lock (now for ttl more), else 0. */
export const EXTEND_LOCK = new LuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`);

/** KEYS: lock. ARGV: token. Deletes the lock only if the token still holds it (not a later holder's). */
export const RELEASE_LOCK = new LuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

/*
 * Admission book. KEYS, always: run (SET), wait (LIST, oldest first), the person's jobs (SET).
 * Every reply ends with the tenant's waiting list, for the process's local mirror.
 *
 * A job already placed keeps its place: a command retried after a lost reply places it once.
 */

/** ARGV: jobId, maxRunning, maxWaiting, maxPerPerson ('' = none). Reply: {kind, n1, n2, waiting}. */
export const PLACE = new LuaScript(`
local job = ARGV[1]
local function reply(kind, a, b) return {kind, a, b, redis.call('LRANGE', KEYS[2], 0, -1)} end
if redis.call('SISMEMBER', KEYS[1], job) == 1 then return reply('admit', 0, 0) end
if redis.call('LPOS', KEYS[2], job) then return reply('wait', 0, 0) end
local mine = redis.call('SCARD', KEYS[3])
if ARGV[4] ~= '' and mine >= tonumber(ARGV[4]) then return reply('person', mine, 0) end
local running = redis.call('SCARD', KEYS[1])
if running < tonumber(ARGV[2]) then
  redis.call('SADD', KEYS[1], job)
  redis.call('SADD', KEYS[3], job)
  return reply('admit', 0, 0)
end
local waiting = redis.call('LLEN', KEYS[2])
if waiting < tonumber(ARGV[3]) then
  redis.call('RPUSH', KEYS[2], job)
  redis.call('SADD', KEYS[3], job)
  return reply('wait', 0, 0)
end
return reply('full', running, waiting)
`);

/** ARGV: jobId, wasRunning ('1' or '0'), maxRunning. Reply: {placement, waiting}. */
export const READMIT = new LuaScript(`
local job = ARGV[1]
redis.call('SADD', KEYS[3], job)
local placement
if redis.call('SISMEMBER', KEYS[1], job) == 1 then
  placement = 'admit'
elseif redis.call('LPOS', KEYS[2], job) then
  placement = 'wait'
elseif ARGV[2] == '1' or redis.call('SCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('SADD', KEYS[1], job)
  placement = 'admit'
else
  redis.call('RPUSH', KEYS[2], job)
  placement = 'wait'
end
return {placement, redis.call('LRANGE', KEYS[2], 0, -1)}
`);

/** ARGV: jobId, maxRunning. Reply: {promoted (oldest first), waiting}. */
export const REMOVE = new LuaScript(`
local job = ARGV[1]
redis.call('SREM', KEYS[1], job)
redis.call('LREM', KEYS[2], 0, job)
redis.call('SREM', KEYS[3], job)
local promoted = {}
local max = tonumber(ARGV[2])
while redis.call('SCARD', KEYS[1]) < max do
  local next = redis.call('LPOP', KEYS[2])
  if not next then break end
  redis.call('SADD', KEYS[1], next)
  promoted[#promoted + 1] = next
end
return {promoted, redis.call('LRANGE', KEYS[2], 0, -1)}
`);
