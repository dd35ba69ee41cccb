/**
 * Reviewing several images at once (issue 16's bulk actions and "Review by number"): one call moves
 * every file and saves the manifest once, a number the job lacks refuses the whole request with
 * nothing moved, and every review — one image or many — is announced as `reviewed` so each place
 * showing the job can follow.
 */
import { describe, expect, it } from 'vitest';
import { parseImageNumbers } from '../../src/core/image-numbers.js';
import type { Job } from '../../src/core/types.js';
import { buildApp, filesIn, readManifest, rejectionOf, requester } from '../helpers.js';

const ME = { id: 'user-1', name: 'Ada' };

describe('parseImageNumbers', () => {
  it('reads numbers and ranges, in any order, once each', () => {
    expect(parseImageNumbers('1-5, 8', 60)).toEqual([1, 2, 3, 4, 5, 8]);
    expect(parseImageNumbers(' 12 3 - 4;3 ', 60)).toEqual([3, 4, 12]);
    expect(parseImageNumbers('60', 60)).toEqual([60]);
  });

  it('refuses anything else in one line naming the option, the allowed values and what was given', () => {
    const refusal = (text: string, images = 60) => {
      try {
        parseImageNumbers(text, images, 'numbers');
      } catch (error) {
        return (error as Error).message;
      }
      return 'accepted';
    };
    expect(refusal('5-3')).toBe('numbers: expected image numbers from 1 to 60 such as 1-5, 8, got "5-3"');
    expect(refusal('1, x')).toBe('numbers: expected image numbers from 1 to 60 such as 1-5, 8, got "x" in "1, x"');
    expect(refusal('0')).toBe('numbers: expected image numbers from 1 to 60 such as 1-5, 8, got "0"');
    expect(refusal('  ')).toBe('numbers: expected image numbers from 1 to 60 such as 1-5, 8, got nothing');
    expect(refusal('58-70')).toBe('numbers: expected image numbers from 1 to 60 such as 1-5, 8; this job has no image 70');
    expect(refusal('4', 3)).toBe('numbers: expected image numbers from 1 to 3 such as 1-3; this job has no image 4');
    expect(refusal('1,'.repeat(1500))).toBe('numbers: expected image numbers from 1 to 60 such as 1-5, 8, got a list of 3000 characters');
  });
});

describe('engine.reviewMany', () => {
  it('moves every named image and saves the manifest once, announcing the review', async () => {
    const app = await buildApp();
    const job = await app.engine.waitFor((await app.engine.submit({ prompt: 'a red fox', count: 6, provider: 'local', model: 'local', aspectRatio: '1:1' }, requester())).id);
    const heard: [Job, number[], string][] = [];
    app.engine.on('reviewed', (j, images, by) => heard.push([j, images, by.id]));

    const after = await app.engine.reviewMany(job.id, [5, 2, 3, 2], 'rejected', ME);

    expect(after.images.map((i) => i.review.status)).toEqual(['pending', 'rejected', 'rejected', 'pending', 'rejected', 'pending']);
    expect(await filesIn(app, job.id, 'rejected')).toEqual(['002.png', '003.png', '005.png']);
    const manifest = await readManifest(app, job.id);
    expect(manifest.images.filter((i) => i.review.status === 'rejected').map((i) => [i.index, i.review.reviewedBy])).toEqual([
      [2, 'Ada'],
      [3, 'Ada'],
      [5, 'Ada'],
    ]);
    expect(heard.map(([j, images, by]) => [j.id, images, by])).toEqual([[job.id, [2, 3, 5], 'user-1']]);

    await app.engine.review(job.id, 3, 'pending', ME);
    expect(heard.at(-1)!.slice(1)).toEqual([[3], 'user-1']);
    expect(heard.at(-1)![0].images[2]!.review).toEqual({ status: 'pending' });
  });

  it('refuses the whole request when one number is not the job’s, moving nothing', async () => {
    const app = await buildApp();
    const job = await app.engine.waitFor((await app.engine.submit({ prompt: 'a red fox', count: 3, provider: 'local', model: 'local', aspectRatio: '1:1' }, requester())).id);
    let heard = 0;
    app.engine.on('reviewed', () => (heard += 1));

    const refused = await rejectionOf(app.engine.reviewMany(job.id, [1, 4, 9], 'approved', ME));

    expect((refused as Error).message).toBe(`Images 4, 9 are not part of job ${job.id}.`);
    expect(await filesIn(app, job.id, 'approved')).toEqual([]);
    expect((await app.engine.get(job.id))!.images.every((i) => i.review.status === 'pending')).toBe(true);
    expect(heard).toBe(0);
  });
});

describe('contact sheet actions and views', () => {
  it('round-trips the quick actions through a custom id, and reads nothing else', async () => {
    const { decodeAction, encodeAction } = await import('../../src/core/actions.js');
    const jobId = '20261128-0a1b2c3d';
    for (const action of [
      { kind: 'bulk', jobId, status: 'approved', sheet: 2 },
      { kind: 'bulk', jobId, status: 'rejected', sheet: 1 },
      { kind: 'numbers', jobId },
      { kind: 'browser', jobId },
    ] as const) {
      expect(decodeAction(encodeAction(action))).toEqual(action);
    }
    expect(encodeAction({ kind: 'bulk', jobId, status: 'approved', sheet: 3 })).toBe(`af:ba:${jobId}:3`);
    for (const forged of [`af:ba:${jobId}`, `af:bx:${jobId}:1`, `af:n:${jobId}:1`, `af:w:${jobId}:0`, `af:br:${jobId}:0`]) {
      expect(decodeAction(forged)).toBeUndefined();
    }
  });

  it('says what a sheet shows: its range, counts, marks as ranges, and its pending images', async () => {
    const { numberRanges, sheetView, usesContactSheets } = await import('../../src/core/views.js');
    expect(numberRanges([9, 1, 2, 3, 5, 8])).toBe('1-3, 5, 8-9');
    const status = (index: number) => (index <= 28 ? 'approved' : index === 30 || index === 33 ? 'rejected' : 'pending');
    const images = Array.from({ length: 25 }, (_, i) => ({ index: 26 + i, prompt: undefined, review: { status: status(26 + i) } }));
    const job = { images, request: { count: 60 } } as unknown as Job;
    const view = sheetView(job, images.map((i) => i.index), 2, 3);
    expect(view.title).toBe('Contact sheet 2/3 · images 26-50');
    expect(view.counts).toBe('✅ 3 approved · ❌ 2 rejected · ⏳ 20 pending');
    expect(view.marks).toBe('✅ 26-28 · ❌ 30, 33');
    expect(view.pending).toHaveLength(20);
    expect(view.pending).not.toContain(30);
    expect(usesContactSheets(job, 20)).toBe(true);
    expect(usesContactSheets(job, 60)).toBe(false);
  });
});

describe('readReviewNumbers (Review by number on Discord and Slack)', () => {
  it('reads both fields whole, or refuses one line naming its field, before anything moves', async () => {
    const { NO_NUMBERS, NumbersRefused, readReviewNumbers } = await import('../../src/core/image-numbers.js');
    // 10 asked, image 7 never made (its batch failed)
    const job = { request: { count: 10 }, images: [1, 2, 3, 4, 5, 6, 8, 9, 10].map((index) => ({ index })) } as unknown as Job;
    expect(readReviewNumbers(job, { approve: '1-3', reject: ' 8 , 9' })).toEqual([
      { status: 'approved', numbers: [1, 2, 3] },
      { status: 'rejected', numbers: [8, 9] },
    ]);
    expect(readReviewNumbers(job, { reject: '10' })).toEqual([{ status: 'rejected', numbers: [10] }]);
    const refusal = (fields: Record<string, string>) => {
      try {
        readReviewNumbers(job, fields);
      } catch (error) {
        expect(error).toBeInstanceOf(NumbersRefused);
        return [(error as InstanceType<typeof NumbersRefused>).field, (error as Error).message];
      }
      return 'accepted';
    };
    expect(refusal({ approve: ' ', reject: '' })).toEqual(['approve', NO_NUMBERS]);
    expect(refusal({ approve: '1', reject: 'x' })).toEqual(['reject', 'Reject: expected image numbers from 1 to 10 such as 1-5, 8, got "x"']);
    expect(refusal({ approve: '6-8' })).toEqual(['approve', 'Approve: image 7 was not made, so there is nothing to review.']);
    expect(refusal({ approve: '1-4', reject: '3-5' })).toEqual(['reject', 'Images 3-4 are under both Approve and Reject: choose one.']);
  });
});
