/**
 * The real bot (`art-factory start`) serves the review page on its public server when PUBLIC_URL and
 * REVIEW_SECRET are set: a signed link becomes a cookie and a clean URL, the page's state answers with
 * that cookie, a forged link gets 403; without REVIEW_SECRET there is no review page at all.
 */
import { describe, expect, it } from 'vitest';
import { reviewLink } from '../../src/web/review-token.js';
import { botEnv, startBotProcess, until } from '../bot-process.js';
import { freePort, tempDir } from '../helpers.js';

const SECRET = 'a-review-secret-for-the-bot-process-test-012345';


async function botWithJob(extra: Record<string, string>) {
  const port = await freePort();
  const publicUrl = `http://127.0.0.1:${port}`;
  const bot = await startBotProcess(botEnv(await tempDir(), { PUBLIC_URL: publicUrl, HTTP_HOST: '127.0.0.1', HTTP_PORT: String(port), ...extra }));
  const answer = (await (await bot.post('/api/command', { text: '/imagine a red fox --count 3' })).json()) as { job: { id: string } };
  const jobId = answer.job.id;
  await until(async () => (await bot.job(jobId))?.state === 'completed', 'the job to finish');
  return { bot, publicUrl, jobId };
}

describe('the review page in the running bot', () => {
  it('is served on the public server with REVIEW_SECRET, to a signed link only', async () => {
    const { publicUrl, jobId } = await botWithJob({ REVIEW_SECRET: SECRET });
    const reviewer = { tenant: 'playground', userId: 'playground-user', name: 'you', moderator: false };
    const { url } = reviewLink({ baseUrl: publicUrl, secret: SECRET, linkMs: 3_600_000 }, jobId, reviewer, Date.now());

    const opened = await fetch(url, { redirect: 'manual' });
    expect(opened.status).toBe(303);
    expect(opened.headers.get('location')).toBe(`/review/${jobId}`);
    const cookie = opened.headers.get('set-cookie')!.split(';')[0]!;
    const state = await fetch(`${publicUrl}/review/${jobId}/state`, { headers: { cookie } });
    expect(state.status).toBe(200);
    expect(((await state.json()) as { images: unknown[] }).images).toHaveLength(3);
    expect(state.headers.get('content-security-policy')).toContain("default-src 'none'");

    const forged = await fetch(`${publicUrl}/review/${jobId}?t=${new URL(url).searchParams.get('t')!.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'))}`, { redirect: 'manual' });
    expect(forged.status).toBe(403);
    expect((await fetch(`${publicUrl}/review/${jobId}/state`)).status).toBe(403);
  });

  it('is not served without REVIEW_SECRET', async () => {
    const { publicUrl, jobId } = await botWithJob({});
    expect((await fetch(`${publicUrl}/review/${jobId}`, { redirect: 'manual' })).status).toBe(404);
  });
});
