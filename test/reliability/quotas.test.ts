import { describe, expect, it } from 'vitest';
import { UserError } from '../../src/core/errors.js';
import { buildApp, rejectionOf, requester } from '../helpers.js';

const request = (count: number) => ({ prompt: 'a fox', count, provider: 'local' as const, model: 'local', aspectRatio: '1:1' as const });

async function refusal(work: Promise<unknown>): Promise<UserError> {
  const error = await rejectionOf(work);
  expect(error).toBeInstanceOf(UserError);
  return error as UserError;
}

describe('quotas', () => {
  it('caps the images a tenant may ask for per day, saying how many are left and when it resets', async () => {
    const app = await buildApp({ env: { TENANT_DAILY_IMAGES: '10' } });
    await app.engine.waitFor((await app.engine.submit(request(8), requester('g1'))).id);
    const error = await refusal(app.engine.submit(request(4), requester('g1', 'someone-else')));
    expect(error.code).toBe('quota');
    expect(error.message).toMatch(
      /^This job asks for 4 images, but only 2 of today's 10 are left here\. The daily count starts again at 00:00 UTC, in (\d+ h )?\d+ min; or ask for 2 or fewer\.$/,
    );
    // the rest of the cap is still usable, and other tenants have their own
    await expect(app.engine.submit(request(2), requester('g1'))).resolves.toMatchObject({ state: 'queued' });
    await expect(app.engine.submit(request(10), requester('g2'))).resolves.toMatchObject({ state: 'queued' });
  });

  it('gives back the images a cancelled job did not make', async () => {
    const app = await buildApp({ env: { TENANT_DAILY_IMAGES: '12', LOCAL_LATENCY_MS: '300', LOCAL_CONCURRENCY: '1' } });
    const job = await app.engine.submit(request(12), requester('g1'));
    await refusal(app.engine.submit(request(1), requester('g1')));
    await app.engine.cancel(job.id, { id: 'user-1' });
    const done = await app.engine.waitFor(job.id);
    const made = done.images.length;
    expect(await app.jobs.imagesUsed('g1', done.createdAt.slice(0, 10))).toBe(made);
    await expect(app.engine.submit(request(12 - made), requester('g1'))).resolves.toMatchObject({ state: 'queued' });
  });

  it('caps the jobs one person may have queued or running, pointing at /jobs', async () => {
    const app = await buildApp({ env: { USER_MAX_ACTIVE_JOBS: '2', LOCAL_LATENCY_MS: '200' } });
    const a = await app.engine.submit(request(1), requester('g1', 'ada'));
    await app.engine.submit(request(1), requester('g1', 'ada'));
    const error = await refusal(app.engine.submit(request(1), requester('g1', 'ada')));
    expect(error.code).toBe('quota');
    expect(error.message).toBe(
      'You already have 2 jobs queued or running here (the most one person may have is 2). Try again when one finishes; /jobs shows them.',
    );
    // someone else in the same server is not held back
    await expect(app.engine.submit(request(1), requester('g1', 'bob'))).resolves.toMatchObject({ state: 'queued' });
    await app.engine.waitFor(a.id);
    await expect(app.engine.submit(request(1), requester('g1', 'ada'))).resolves.toMatchObject({ state: 'queued' });
  });
});
