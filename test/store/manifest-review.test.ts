/**
 * The job folder tells the whole story without the store: after a review, manifest.json on disk names
 * the image's status, who reviewed it and when, and where its file now is.
 */
import { describe, expect, it } from 'vitest';
import { buildApp, filesIn, readManifest, requester } from '../helpers.js';

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

async function finishedJob() {
  const app = await buildApp({ env: { LOCAL_LATENCY_MS: '0' } });
  const job = await app.engine.submit({ prompt: 'a fox', count: 3, provider: 'local', model: 'local', aspectRatio: '1:1' }, requester());
  const done = await app.engine.waitFor(job.id);
  expect(done.state).toBe('completed');
  return { app, jobId: job.id, finishedAt: done.finishedAt! };
}

describe('manifest after a review', () => {
  it('names the reviewer of an approved and of a rejected image, and when, next to the file’s new place', async () => {
    const { app, jobId, finishedAt } = await finishedJob();
    await app.engine.review(jobId, 1, 'approved', { id: 'U-ADA', name: 'Ada' });
    // No display name: the id is who reviewed.
    await app.engine.review(jobId, 3, 'rejected', { id: 'U-BOB' });

    const manifest = await readManifest(app, jobId);
    const [first, second, third] = manifest.images;
    expect(first).toMatchObject({ index: 1, file: 'approved/001.png', review: { status: 'approved', reviewedBy: 'Ada' } });
    expect(third).toMatchObject({ index: 3, file: 'rejected/003.png', review: { status: 'rejected', reviewedBy: 'U-BOB' } });
    expect(second).toMatchObject({ index: 2, file: 'pending-review/002.png', review: { status: 'pending', reviewedBy: null, reviewedAt: null } });
    // When: a real time, after the job finished, approve before reject (the order they were made in).
    expect(first!.review.reviewedAt).toMatch(ISO);
    expect(third!.review.reviewedAt).toMatch(ISO);
    expect(first!.review.reviewedAt! >= finishedAt).toBe(true);
    expect(third!.review.reviewedAt! >= first!.review.reviewedAt!).toBe(true);
    expect(manifest.summary).toMatchObject({ approved: 1, rejected: 1, pending: 1 });
    expect(await filesIn(app, jobId, 'approved')).toEqual(['001.png']);

    // The store says the same as the folder.
    const stored = await app.engine.get(jobId);
    expect(stored?.images[0]?.review).toEqual({ status: 'approved', by: 'Ada', at: first!.review.reviewedAt });
  });

  it('forgets the reviewer when a review is undone, and names the new one when it is made again', async () => {
    const { app, jobId } = await finishedJob();
    await app.engine.review(jobId, 2, 'approved', { id: 'U-ADA', name: 'Ada' });
    await app.engine.review(jobId, 2, 'pending', { id: 'U-ADA', name: 'Ada' });
    expect((await readManifest(app, jobId)).images[1]).toMatchObject({
      file: 'pending-review/002.png',
      review: { status: 'pending', reviewedBy: null, reviewedAt: null },
    });

    await app.engine.review(jobId, 2, 'rejected', { id: 'U-CY', name: 'Cy' });
    expect((await readManifest(app, jobId)).images[1]).toMatchObject({ file: 'rejected/002.png', review: { status: 'rejected', reviewedBy: 'Cy' } });
  });
});
