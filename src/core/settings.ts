/**
 * Per-tenant settings (/settings): defaults for the next /imagine (provider, model, aspect ratio,
 * count, format), the daily image cap, the plan tier (calls in flight at once and the largest job)
 * and whether drafts are on. One record per tenant in the key-value store (`settings:<tenant>`),
 * checked with zod when read: a record written by another version, or damaged, gives the defaults.
 * Every change keeps who made it, in the log and in the record's short history.
 */
import { z } from 'zod';
import type { CommandLimits } from './command.js';
import { silentLogger, type Logger, type Reviewer } from './ports.js';
import { ASPECT_RATIOS, OUTPUT_FORMATS, PROVIDER_NAMES, type AspectRatio, type OutputFormat, type ProviderName } from './types.js';

export const PLANS = ['free', 'pro', 'business'] as const;
export type Plan = (typeof PLANS)[number];

export { OUTPUT_FORMATS, type OutputFormat } from './types.js';

/** What a plan allows one tenant: provider calls in flight at once (across its jobs), and the largest job. */
export interface PlanLimits {
  calls: number;
  images: number;
}

/** @default free 2/20, pro 5/100, business 10/1000 (PLAN_FREE, PLAN_PRO, PLAN_BUSINESS) */
export const DEFAULT_PLANS: Readonly<Record<Plan, PlanLimits>> = {
  free: { calls: 2, images: 20 },
  pro: { calls: 5, images: 100 },
  business: { calls: 10, images: 1000 },
};

/** The deployment's side of settings: plans, the default plan and the caps settings may not pass. */
export interface SettingsPolicy {
  plans: Readonly<Record<Plan, PlanLimits>>;
  /** the plan of a tenant that has set none */
  defaultPlan: Plan;
  /** MAX_IMAGES_PER_JOB: no plan's largest job goes past it */
  maxImagesPerJob: number;
  /** TENANT_DAILY_IMAGES, for tenants that set no `daily` @default no cap */
  tenantDailyImages?: number;
  /** GLOBAL_DAILY_IMAGES: a tenant's `daily` may not go past it @default no cap */
  globalDailyImages?: number;
}

/** The values a tenant has set; a missing one is the deployment's default. */
export interface SettingValues {
  provider?: ProviderName;
  /** a model is the default of the provider it was chosen for */
  model?: { provider: ProviderName; id: string };
  ar?: AspectRatio;
  count?: number;
  format?: OutputFormat;
  /** the tenant's daily image cap; 0 = none (the global cap still applies) */
  daily?: number;
  plan?: Plan;
  /** /imagine makes small drafts unless told `--draft off` ("Upscale approved" makes the finals) */
  drafts?: boolean;
}

export const SETTING_KEYS = ['provider', 'model', 'ar', 'count', 'format', 'daily', 'plan', 'drafts'] as const;
export type SettingKey = (typeof SETTING_KEYS)[number];

/** One change, as the history keeps it: values as shown to people, `undefined` for the default. */
export interface SettingChange {
  key: SettingKey;
  old?: string;
  new?: string;
  /** user id, and name where known */
  by: string;
  byName?: string;
  at: string;
}

export interface SettingsRecord {
  values: SettingValues;
  /** the latest changes, oldest first */
  history: SettingChange[];
}

/** What the core applies to a tenant's next job. */
export interface TenantLimits {
  plan: Plan;
  /** provider calls of the tenant in flight at once */
  calls: number;
  /** largest job: the plan's, never above MAX_IMAGES_PER_JOB */
  maxImagesPerJob: number;
  /** the tenant's images per UTC day; undefined = no tenant cap */
  dailyImages?: number;
}

/** The store as settings need it (Keyv satisfies it; tests pass a Map-backed one). */
export interface SettingsStore {
  get(key: string): Promise<unknown>;
  set(key: string, value: unknown): Promise<unknown>;
}

export const HISTORY_MAX = 20;
/** How long a read is trusted before the store is asked again (another process may have changed it). */
const CACHE_MS = 5_000;

const CHANGE = z.object({
  key: z.enum(SETTING_KEYS),
  old: z.string().max(300).optional(),
  new: z.string().max(300).optional(),
  by: z.string().max(100),
  byName: z.string().max(200).optional(),
  at: z.string().max(40),
});

const RECORD = z.object({
  values: z.object({
    provider: z.enum(PROVIDER_NAMES).optional(),
    model: z.object({ provider: z.enum(PROVIDER_NAMES), id: z.string().min(1).max(200) }).optional(),
    ar: z.enum(ASPECT_RATIOS).optional(),
    count: z.number().int().min(1).max(1000).optional(),
    format: z.enum(OUTPUT_FORMATS).optional(),
    daily: z.number().int().min(0).optional(),
    plan: z.enum(PLANS).optional(),
    drafts: z.boolean().optional(),
  }),
  history: z.array(CHANGE).max(HISTORY_MAX * 2),
});

const EMPTY: SettingsRecord = { values: {}, history: [] };

/** A setting's value as people read it (`fal-ai/flux/dev (fal)`, `on`, `none`). */
export function showValue(key: SettingKey, values: SettingValues): string | undefined {
  if (values[key] === undefined) return undefined;
  if (key === 'model') return `${values.model!.id} (${values.model!.provider})`;
  if (key === 'drafts') return values.drafts ? 'on' : 'off';
  if (key === 'daily') return values.daily === 0 ? 'none' : String(values.daily);
  return String(values[key]);
}

export interface TenantSettingsOptions {
  store: SettingsStore;
  policy: SettingsPolicy;
  log?: Logger;
  now?: () => number;
  /** @default 5 s */
  cacheMs?: number;
}

export class TenantSettings {
  readonly policy: SettingsPolicy;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly cacheMs: number;
  private readonly cache = new Map<string, { record: SettingsRecord; at: number }>();
  private readonly loading = new Map<string, Promise<SettingsRecord>>();
  /** changes of one tenant, one after the other (in this process) */
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(private readonly options: TenantSettingsOptions) {
    this.policy = options.policy;
    this.log = options.log ?? silentLogger;
    this.now = options.now ?? Date.now;
    this.cacheMs = options.cacheMs ?? CACHE_MS;
  }

  /** The tenant's record (defaults when it has none, or when the stored one does not parse). */
  async read(tenant: string): Promise<SettingsRecord> {
    const cached = this.cache.get(tenant);
    if (cached && this.now() - cached.at < this.cacheMs) return cached.record;
    let loading = this.loading.get(tenant);
    if (!loading) {
      loading = this.load(tenant).finally(() => this.loading.delete(tenant));
      this.loading.set(tenant, loading);
    }
    return loading;
  }

  private async load(tenant: string): Promise<SettingsRecord> {
    const stored = await this.options.store.get(`settings:${tenant}`);
    let record = EMPTY;
    if (stored !== undefined && stored !== null) {
      const parsed = RECORD.safeParse(stored);
      if (parsed.success) record = parsed.data;
      else this.log.warn({ tenant, issue: parsed.error.issues[0]?.message }, 'settings: a damaged record was read; using the defaults');
    }
    this.remember(tenant, record);
    return record;
  }

  private remember(tenant: string, record: SettingsRecord): void {
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(tenant, { record, at: this.now() });
  }

  /**
   * Applies already validated values (undefined = back to the default) and records who changed what.
   * Returns the new record and the changes that took effect (a value set to what it was is none).
   */
  async change(tenant: string, values: { [K in SettingKey]?: SettingValues[K] | null }, by: Reviewer): Promise<{ record: SettingsRecord; changes: SettingChange[] }> {
    const previous = this.chains.get(tenant) ?? Promise.resolve();
    const work = previous.then(async () => {
      // Read fresh: another process may have written since this one cached.
      this.cache.delete(tenant);
      const current = await this.read(tenant);
      const next: SettingValues = { ...current.values };
      const changes: SettingChange[] = [];
      const at = new Date(this.now()).toISOString();
      for (const key of SETTING_KEYS) {
        if (!(key in values)) continue;
        const value = values[key];
        const old = showValue(key, current.values);
        if (value === null || value === undefined) delete next[key];
        else (next as Record<string, unknown>)[key] = value;
        const now = showValue(key, next);
        if (old === now) continue;
        changes.push({ key, ...(old !== undefined ? { old } : {}), ...(now !== undefined ? { new: now } : {}), by: by.id, ...(by.name ? { byName: by.name } : {}), at });
      }
      if (changes.length === 0) return { record: current, changes };
      const record: SettingsRecord = { values: next, history: [...current.history, ...changes].slice(-HISTORY_MAX) };
      await this.options.store.set(`settings:${tenant}`, record);
      this.remember(tenant, record);
      for (const change of changes) {
        this.log.info({ tenant, user: by.id, userName: by.name, key: change.key, old: change.old ?? null, new: change.new ?? null }, 'setting changed');
      }
      return { record, changes };
    });
    this.chains.set(tenant, work.catch(() => undefined));
    return work;
  }

  /** The plan a record stands for. */
  planOf(values: SettingValues): Plan {
    return values.plan ?? this.policy.defaultPlan;
  }

  /** The largest job a plan allows here. */
  maxImagesOf(plan: Plan): number {
    return Math.min(this.policy.plans[plan].images, this.policy.maxImagesPerJob);
  }

  /** The tenant's daily cap as a record sets it; undefined = none. */
  dailyOf(values: SettingValues): number | undefined {
    if (values.daily === undefined) return this.policy.tenantDailyImages;
    return values.daily === 0 ? undefined : values.daily;
  }

  /** What applies to the tenant's next job. */
  async limits(tenant: string): Promise<TenantLimits> {
    const { values } = await this.read(tenant);
    return this.limitsOf(values);
  }

  private limitsOf(values: SettingValues): TenantLimits {
    const plan = this.planOf(values);
    const daily = this.dailyOf(values);
    return { plan, calls: this.policy.plans[plan].calls, maxImagesPerJob: this.maxImagesOf(plan), ...(daily !== undefined ? { dailyImages: daily } : {}) };
  }

  /**
   * The tenant's calls in flight at once, answered at once for the scheduler: from what was last read
   * (a submit reads it, so a tenant with work queued is known), or the default plan's. A stale or
   * missing entry is read again in the background for the next ask.
   */
  callsOf(tenant: string): number {
    const cached = this.cache.get(tenant);
    if (!cached || this.now() - cached.at >= this.cacheMs) {
      this.read(tenant).catch((error: unknown) => this.log.warn({ err: error, tenant }, 'settings: reading a tenant’s plan failed'));
    }
    return this.limitsOf(cached?.record.values ?? {}).calls;
  }
}

/** The defaults /imagine takes from a tenant's settings when its options leave them out. */
export interface ImagineDefaults {
  count?: number;
  ar?: AspectRatio;
  format?: OutputFormat;
  /** drafts on by default (/settings drafts on) */
  draft?: boolean;
}

/**
 * /imagine's limits for one tenant: its default provider and model in place of the bot's (while they
 * are still configured and allowed), and its count, aspect ratio and format as `defaults`. A default
 * count above the tenant's largest job is lowered to it; an explicit one is refused at submit.
 */
export async function tenantImagineLimits<L extends CommandLimits>(
  settings: TenantSettings | undefined,
  tenant: string,
  limits: L,
): Promise<L & { defaults?: ImagineDefaults }> {
  if (!settings) return limits;
  const { values } = await settings.read(tenant);
  const usable = (provider: ProviderName) => limits.providers.includes(provider);
  const defaultModels = { ...limits.defaultModels };
  const model = values.model;
  if (model && usable(model.provider)) {
    const allowed = model.provider === 'local' ? ['local'] : (limits.models?.[model.provider] ?? '*');
    if (allowed === '*' || allowed.includes(model.id)) defaultModels[model.provider] = model.id;
  }
  const largest = settings.maxImagesOf(settings.planOf(values));
  const defaults: ImagineDefaults = {
    ...(values.count !== undefined ? { count: Math.min(values.count, largest, limits.maxImagesPerJob) } : {}),
    ...(values.ar ? { ar: values.ar } : {}),
    ...(values.format ? { format: values.format } : {}),
    ...(values.drafts ? { draft: true } : {}),
  };
  return {
    ...limits,
    ...(values.provider && usable(values.provider) ? { defaultProvider: values.provider } : {}),
    defaultModels,
    defaults,
  };
}
