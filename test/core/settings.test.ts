/**
 * Per-tenant settings in the core: the record (damaged → defaults, logged), changes (logged with who
 * made them, a history of 20), the checks of /settings' values, the daily cap and the plan at submit,
 * and the plan's calls in flight in the fair scheduler.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { validateSettings } from '../../commands/settings.js';
import type { CommandLimits } from '../../src/core/command.js';
import type { Logger } from '../../src/core/ports.js';
import { FairScheduler, type ScheduledTask } from '../../src/core/scheduler.js';
import { DEFAULT_PLANS, HISTORY_MAX, TenantSettings, type SettingsStore } from '../../src/core/settings.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { buildApp, requester } from '../helpers.js';

/** A Map-backed store, as Keyv looks to settings. */
function memoryStore(): SettingsStore & { data: Map<string, unknown> } {
  const data = new Map<string, unknown>();
  return {
    data,
    get: (key) => Promise.resolve(data.get(key)),
    set: (key, value) => Promise.resolve(data.set(key, structuredClone(value))),
  };
}

/** A logger that keeps every line. */
function capture(): Logger & { lines: { level: string; obj: Record<string, unknown>; msg?: string }[] } {
  const lines: { level: string; obj: Record<string, unknown>; msg?: string }[] = [];
  const at = (level: string) => (obj: object, msg?: string) => void lines.push({ level, obj: obj as Record<string, unknown>, ...(msg ? { msg } : {}) });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

const policy = { plans: DEFAULT_PLANS, defaultPlan: 'pro' as const, maxImagesPerJob: 100, tenantDailyImages: 1000, globalDailyImages: 5000 };
const limits: CommandLimits = {
  maxImagesPerJob: 100,
  providers: ['fal', 'local'],
  defaultProvider: 'local',
  defaultModels: { fal: 'fal-ai/flux/schnell', replicate: 'r', local: 'local' },
  models: { fal: ['fal-ai/flux/schnell', 'fal-ai/flux/dev'], local: ['local'] },
};

describe('plan config', () => {
  it('defaults to free 2/20, pro 5/100, business 10/1000 and business; PLAN_* and DEFAULT_PLAN are checked like the other variables', () => {
    expect(loadConfig({})).toMatchObject({ plans: DEFAULT_PLANS, defaultPlan: 'business' });
    expect(loadConfig({ PLAN_FREE: '1/8', DEFAULT_PLAN: 'free' })).toMatchObject({ plans: { free: { calls: 1, images: 8 } }, defaultPlan: 'free' });
    expect(() => loadConfig({ PLAN_PRO: '5' })).toThrow(new ConfigError('PLAN_PRO: expected CALLS/IMAGES such as 5/100 (calls 1 to 1000, images 1 to 1000), got "5"'));
    expect(() => loadConfig({ PLAN_BUSINESS: '0/10' })).toThrow(/^PLAN_BUSINESS: expected CALLS\/IMAGES/);
    expect(() => loadConfig({ DEFAULT_PLAN: 'gold' })).toThrow(new ConfigError('DEFAULT_PLAN: expected one of free, pro, business, got "gold"'));
  });
});

describe('TenantSettings', () => {
  it('logs every change with the tenant, the user, the key, the old and the new value, and keeps the last 20', async () => {
    const log = capture();
    const store = memoryStore();
    const settings = new TenantSettings({ store, policy, log });
    const { changes } = await settings.change('guild-1', { count: 8, ar: '16:9' }, { id: 'u-7', name: 'Ada' });
    expect(changes.map((c) => [c.key, c.old, c.new, c.by, c.byName])).toEqual([
      ['ar', undefined, '16:9', 'u-7', 'Ada'],
      ['count', undefined, '8', 'u-7', 'Ada'],
    ]);
    const logged = log.lines.filter((l) => l.msg === 'setting changed');
    expect(logged.map((l) => l.obj)).toEqual([
      { tenant: 'guild-1', user: 'u-7', userName: 'Ada', key: 'ar', old: null, new: '16:9' },
      { tenant: 'guild-1', user: 'u-7', userName: 'Ada', key: 'count', old: null, new: '8' },
    ]);
    for (let n = 1; n <= 25; n += 1) await settings.change('guild-1', { count: n }, { id: 'u-8' });
    const stored = store.data.get('settings:guild-1') as { values: { count: number }; history: { key: string; new: string }[] };
    expect(stored.values.count).toBe(25);
    expect(stored.history).toHaveLength(HISTORY_MAX);
    expect(stored.history.at(-1)).toMatchObject({ key: 'count', old: '24', new: '25', by: 'u-8' });
    // Another tenant is untouched.
    expect((await settings.read('guild-2')).values).toEqual({});
  });

  it('reads a damaged record as the defaults, and says so in the log', async () => {
    const log = capture();
    const store = memoryStore();
    store.data.set('settings:guild-1', { values: { count: 'eight', plan: 'platinum' }, history: 'none' });
    const settings = new TenantSettings({ store, policy, log });
    expect(await settings.read('guild-1')).toEqual({ values: {}, history: [] });
    expect(await settings.limits('guild-1')).toEqual({ plan: 'pro', calls: 5, maxImagesPerJob: 100, dailyImages: 1000 });
    expect(log.lines.some((l) => l.level === 'warn' && l.obj['tenant'] === 'guild-1' && /damaged/.test(l.msg ?? ''))).toBe(true);
  });

  it('takes a plan’s calls and largest job, never above MAX_IMAGES_PER_JOB, and daily 0 as no cap of its own', async () => {
    const settings = new TenantSettings({ store: memoryStore(), policy: { ...policy, maxImagesPerJob: 50 } });
    await settings.change('g', { plan: 'business', daily: 0 }, { id: 'u' });
    expect(await settings.limits('g')).toEqual({ plan: 'business', calls: 10, maxImagesPerJob: 50 });
    await settings.change('g', { plan: 'free', daily: 30 }, { id: 'u' });
    expect(await settings.limits('g')).toEqual({ plan: 'free', calls: 2, maxImagesPerJob: 20, dailyImages: 30 });
    expect(settings.callsOf('g')).toBe(2);
  });
});

describe('/settings values', () => {
  const settings = new TenantSettings({ store: memoryStore(), policy });
  const bad = (raw: Record<string, unknown>, current = {}) => {
    try {
      validateSettings(raw, current, settings, limits);
    } catch (error) {
      return (error as Error).message;
    }
    throw new Error('expected a refusal');
  };

  it('names the setting, the allowed values and what was given', () => {
    expect(bad({ ar: '5:4' })).toBe('`ar`: expected one of 1:1, 16:9, 9:16, 4:3, 3:4, 3:2, 2:3, 21:9 (or default), got `5:4`. Nothing was changed.');
    expect(bad({ plan: 'gold' })).toBe('`plan`: expected one of free, pro, business (or default), got `gold`. Nothing was changed.');
    expect(bad({ daily: '6000' })).toBe('`daily`: expected an integer from 0 to 5000 (or default), got `6000`. Nothing was changed.');
    expect(bad({ provider: 'replicate' })).toContain('expected one of fal, local (configured here)');
    expect(bad({ model: 'fal-ai/other' }, { provider: 'fal' })).toContain('expected one of fal-ai/flux/schnell, fal-ai/flux/dev for fal');
  });

  it('checks a count against the plan given with it, and a model against the provider given with it', () => {
    expect(bad({ plan: 'free', count: '30' })).toContain('`count`: expected an integer from 1 to 20');
    expect(validateSettings({ plan: 'free', count: '20' }, {}, settings, limits)).toEqual({ plan: 'free', count: 20 });
    expect(validateSettings({ provider: 'fal', model: 'fal-ai/flux/dev' }, {}, settings, limits)).toEqual({
      provider: 'fal',
      model: { provider: 'fal', id: 'fal-ai/flux/dev' },
    });
    expect(validateSettings({ count: 'default', drafts: 'on' }, {}, settings, limits)).toEqual({ count: null, drafts: true });
  });
});

describe('settings at submit', () => {
  it('the daily cap set here replaces TENANT_DAILY_IMAGES, and the plan caps the largest job, each with the quota message', async () => {
    const app = await buildApp({ env: { TENANT_DAILY_IMAGES: '1000' } });
    const who = requester('guild-9', 'u-1');
    await app.settings.change('guild-9', { daily: 6 }, { id: 'admin' });
    const first = await app.engine.submit({ prompt: 'a fox', count: 4, provider: 'local', model: 'local', aspectRatio: '1:1' }, who);
    await app.engine.waitFor(first.id);
    const refused = await app.engine.submit({ prompt: 'a fox', count: 4, provider: 'local', model: 'local', aspectRatio: '1:1' }, who).catch((e: Error) => e);
    expect(refused).toMatchObject({ code: 'quota' });
    expect((refused as Error).message).toMatch(/^This job asks for 4 images, but only 2 of today's 6 are left here\. /);
    // Another tenant keeps the bot's cap.
    await expect(app.engine.submit({ prompt: 'a fox', count: 4, provider: 'local', model: 'local', aspectRatio: '1:1' }, requester('guild-8'))).resolves.toBeDefined();

    await app.settings.change('guild-9', { plan: 'free', daily: 0 }, { id: 'admin' });
    const tooBig = await app.engine.submit({ prompt: 'a fox', count: 21, provider: 'local', model: 'local', aspectRatio: '1:1' }, who).catch((e: Error) => e);
    expect(tooBig).toMatchObject({ code: 'quota', message: 'This job asks for 21 images, but the free plan allows at most 20 per job here; ask for 20 or fewer.' });
    // daily 0: no cap of its own any more, so 20 more images fit today.
    await expect(app.engine.submit({ prompt: 'a fox', count: 20, provider: 'local', model: 'local', aspectRatio: '1:1' }, who)).resolves.toBeDefined();
  });
});

describe('the plan’s calls in flight in the fair scheduler', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 0 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('holds a tenant at its cap across its jobs and lanes while another tenant goes on', async () => {
    const running = new Map<string, number>();
    const most = new Map<string, number>();
    const started: string[] = [];
    const releases = new Map<string, () => void>();
    const task = (tenant: string, key: string, jobId: string): ScheduledTask => ({
      key,
      jobId,
      tenant,
      run: async () => {
        started.push(key);
        running.set(tenant, (running.get(tenant) ?? 0) + 1);
        most.set(tenant, Math.max(most.get(tenant) ?? 0, running.get(tenant)!));
        await new Promise<void>((resolve) => releases.set(key, resolve));
        running.set(tenant, running.get(tenant)! - 1);
      },
    });
    const caps: Record<string, number> = { A: 2, B: 10 };
    const scheduler = new FairScheduler({ lanes: { fal: { concurrency: 10 }, local: { concurrency: 10 } }, tenantConcurrency: (t) => caps[t]! });
    // A: two jobs on fal and one on local; B: four calls.
    for (let i = 1; i <= 3; i += 1) scheduler.enqueue('fal', task('A', `A-j1-${i}`, 'j1'));
    for (let i = 1; i <= 3; i += 1) scheduler.enqueue('fal', task('A', `A-j2-${i}`, 'j2'));
    scheduler.enqueue('local', task('A', 'A-j3-1', 'j3'));
    for (let i = 1; i <= 4; i += 1) scheduler.enqueue('fal', task('B', `B-${i}`, 'jb'));
    await vi.advanceTimersByTimeAsync(0);
    expect(running.get('A')).toBe(2);
    expect(running.get('B')).toBe(4);

    // Each end of one of A's calls lets exactly one more of A's start, on whichever lane it waits.
    for (let round = 0; round < 10 && started.filter((k) => k.startsWith('A')).length < 7; round += 1) {
      const next = [...releases.keys()].find((k) => k.startsWith('A'))!;
      releases.get(next)!();
      releases.delete(next);
      await vi.advanceTimersByTimeAsync(0);
      expect(running.get('A')).toBeLessThanOrEqual(2);
    }
    expect(started.filter((k) => k.startsWith('A')).sort()).toEqual(['A-j1-1', 'A-j1-2', 'A-j1-3', 'A-j2-1', 'A-j2-2', 'A-j2-3', 'A-j3-1']);
    expect(most.get('A')).toBe(2);
    expect(most.get('B')).toBe(4);
    for (const release of releases.values()) release();
    await vi.advanceTimersByTimeAsync(0);
    await scheduler.idle();
  });
});
