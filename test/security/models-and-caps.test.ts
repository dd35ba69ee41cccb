/**
 * What a user may spend: only the models the operator allows, never a price of $0 for a model we
 * cannot price, one daily cap for all direct messages, and one for the whole bot.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseImagineText } from '../../commands/imagine.js';
import { imagineLimits } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { UserError } from '../../src/core/errors.js';
import { progressView } from '../../src/core/views.js';
import { buildApp, readManifest, rejectionOf, requester, userErrorOf } from '../helpers.js';

const falConfig = (extra: Record<string, string> = {}) => loadConfig({ FAL_KEY: 'k', ...extra });

describe('models a user may pick', () => {
  it('refuses a model outside FAL_MODELS, naming the allowed ones', () => {
    const limits = imagineLimits(falConfig());
    const error = userErrorOf(() => parseImagineText('a fox --provider fal --model someone/any-model', limits));
    expect(error.message).toBe(
      'Expected `model` to be one of `fal-ai/flux/schnell`, `fal-ai/flux/dev`, `fal-ai/flux-pro/v1.1`, `fal-ai/flux-lora` for fal, got `someone/any-model`.',
    );
  });

  it('takes a listed model, and the configured default model even when it is not listed', () => {
    const limits = imagineLimits(falConfig({ FAL_MODELS: 'fal-ai/flux/dev', FAL_MODEL: 'fal-ai/flux/krea' }));
    expect(parseImagineText('a fox --provider fal --model fal-ai/flux/dev', limits).model).toBe('fal-ai/flux/dev');
    expect(parseImagineText('a fox --provider fal', limits).model).toBe('fal-ai/flux/krea');
    expect(() => parseImagineText('a fox --provider fal --model fal-ai/flux/schnell', limits)).toThrow(
      'Expected `model` to be one of `fal-ai/flux/krea`, `fal-ai/flux/dev` for fal, got `fal-ai/flux/schnell`.',
    );
  });

  it('allows any well-formed model with FAL_MODELS=*', () => {
    const limits = imagineLimits(falConfig({ FAL_MODELS: '*' }));
    expect(parseImagineText('a fox --provider fal --model someone/any-model', limits).model).toBe('someone/any-model');
    expect(() => parseImagineText('a fox --provider fal --model ../../etc', limits)).toThrow(/Expected `model` to be a model id/);
  });

  it('stops start-up on a malformed list, naming the variable', () => {
    expect(() => loadConfig({ REPLICATE_MODELS: 'owner/name, not a model' })).toThrow(
      'REPLICATE_MODELS: expected a comma-separated list of model ids such as owner/name, or *, got "not a model"',
    );
  });

  it('shows "cost unknown" for a model with no known price, in the message and the manifest, never $0', async () => {
    const app = await buildApp({ env: { LOCAL_LATENCY_MS: '0' } });
    const job = await app.engine.submit(
      { prompt: 'a fox', count: 1, provider: 'local', model: 'someone/unpriced', aspectRatio: '1:1' },
      requester(),
    );
    expect(job.estimatedCostUsd).toBeUndefined();
    const done = await app.engine.waitFor(job.id);
    const view = progressView(done, app.engine.progress(done));
    expect(view.lines.at(-1)).toBe('local · someone/unpriced · cost unknown');
    const manifest = await readManifest(app, job.id);
    expect(manifest.estimatedCostUsd).toBeNull();
    expect(manifest.estimatedCost).toBe('cost unknown');
  });

  it('prices a known model', async () => {
    const app = await buildApp({ env: { MODEL_PRICES: '{"local":0.01}' } });
    const job = await app.engine.submit({ prompt: 'a fox', count: 3, provider: 'local', model: 'local', aspectRatio: '1:1' }, requester());
    expect(job.estimatedCostUsd).toBeCloseTo(0.03, 5);
    expect(progressView(job, app.engine.progress(job)).lines.at(-1)).toBe('local · local · est. $0.030');
  });
});

const local = (count: number) => ({ prompt: 'a fox', count, provider: 'local' as const, model: 'local', aspectRatio: '1:1' as const });
const dm = (user: string) => ({ tenant: `dm:${user}`, userId: user, platform: 'discord' as const });

describe('daily caps beyond one server', () => {
  it('makes every direct-message user share one daily cap', async () => {
    const app = await buildApp({ env: { TENANT_DAILY_IMAGES: '10' } });
    await app.engine.submit(local(6), dm('1001'));
    await app.engine.submit(local(4), dm('1002'));
    const error = (await rejectionOf(app.engine.submit(local(1), dm('1003')))) as UserError;
    expect(error.code).toBe('quota');
    expect(error.message).toMatch(/^This job asks for 1 image, but only 0 of today's 10 are left for direct messages\. /);
    // a server keeps its own cap
    await expect(app.engine.submit(local(10), requester('guild-9'))).resolves.toMatchObject({ state: 'queued' });
  });

  it('caps the images of all tenants together with GLOBAL_DAILY_IMAGES, saying when it resets', async () => {
    const app = await buildApp({ env: { GLOBAL_DAILY_IMAGES: '12', TENANT_DAILY_IMAGES: '100' } });
    await app.engine.submit(local(8), requester('guild-a'));
    const error = (await rejectionOf(app.engine.submit(local(5), requester('guild-b')))) as UserError;
    expect(error.message).toMatch(
      /^This job asks for 5 images, but only 4 of today's 12 are left on this bot for everyone\. The daily count starts again at 00:00 UTC, in (\d+ h )?\d+ min; or ask for 4 or fewer\.$/,
    );
    // the refusal took nothing from guild-b's own cap
    const day = new Date().toISOString().slice(0, 10);
    expect(await app.jobs.imagesUsed('guild-b', day)).toBe(0);
    await expect(app.engine.submit(local(4), requester('guild-b'))).resolves.toMatchObject({ state: 'queued' });
  });

  it('is 5000 by default, and 0 turns it off', () => {
    expect(loadConfig({}).globalDailyImages).toBe(5000);
    expect(loadConfig({ GLOBAL_DAILY_IMAGES: '0' }).globalDailyImages).toBeUndefined();
  });
});

describe('files are private', () => {
  it('creates the data folder, the SQLite store and job folders owner-only', async () => {
    const app = await buildApp();
    const done = await app.engine.waitFor((await app.engine.submit(local(1), requester())).id);
    const mode = async (file: string) => (await stat(file)).mode & 0o777;
    expect(await mode(path.join(app.dir, 'store.sqlite'))).toBe(0o600);
    expect(await mode(path.join(app.dir, 'output'))).toBe(0o700);
    const jobDir = app.files.jobDir(done.id);
    expect(await mode(jobDir)).toBe(0o700);
    expect(await mode(path.join(jobDir, 'pending-review'))).toBe(0o700);
    expect(await mode(path.join(jobDir, done.images[0]!.file))).toBe(0o600);
    expect(await mode(path.join(jobDir, 'manifest.json'))).toBe(0o600);
    await app.engine.review(done.id, 1, 'approved', { id: 'u' });
    expect(await mode(path.join(jobDir, 'approved'))).toBe(0o700);
  });
});
