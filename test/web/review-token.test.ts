// Signed review links: a round trip, and every way a token can be wrong (expired, forged, another
// job's, tampered, garbage) refused with a reason that never repeats the token.
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { reviewLink, signReviewToken, verifyReviewToken, type ReviewClaims } from '../../src/web/review-token.js';

const SECRET = 'a-review-secret-of-at-least-32-characters!';
const JOB = '20250101-0123abcd';
const NOW = Date.UTC(2025, 0, 1, 12);
const claims: ReviewClaims = { job: JOB, tenant: 'guild-1', userId: 'user-1', name: 'Ada', moderator: false, exp: NOW + 3_600_000 };

const refusal = (result: ReturnType<typeof verifyReviewToken>) => ('refused' in result ? result.refused : 'accepted');

describe('review tokens', () => {
  it('round-trips the claims of a signed token', () => {
    const token = signReviewToken(SECRET, claims);
    expect(token).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/);
    expect(verifyReviewToken(SECRET, token, JOB, NOW)).toEqual(claims);
  });

  it('makes a link to the page for the job, expiring linkMs from now', () => {
    const { url, expiresAt } = reviewLink({ baseUrl: 'https://bot.example.com/', secret: SECRET, linkMs: 86_400_000 }, JOB, { tenant: 'guild-1', userId: 'user-1', moderator: true }, NOW);
    expect(expiresAt).toBe(NOW + 86_400_000);
    const parsed = new URL(url);
    expect(`${parsed.origin}${parsed.pathname}`).toBe(`https://bot.example.com/review/${JOB}`);
    expect(verifyReviewToken(SECRET, parsed.searchParams.get('t')!, JOB, NOW)).toEqual({ job: JOB, tenant: 'guild-1', userId: 'user-1', moderator: true, exp: NOW + 86_400_000 });
  });

  it('refuses an expired token (at its expiry, not only after)', () => {
    const token = signReviewToken(SECRET, claims);
    expect(refusal(verifyReviewToken(SECRET, token, JOB, claims.exp))).toMatch(/^the review link has expired/);
    expect(refusal(verifyReviewToken(SECRET, token, JOB, claims.exp - 1))).toBe('accepted');
  });

  it('refuses a token signed with another secret', () => {
    const token = signReviewToken('another-secret-that-is-also-32-characters', claims);
    expect(refusal(verifyReviewToken(SECRET, token, JOB, NOW))).toBe('the review link is not signed by this bot');
  });

  it('refuses a token for another job', () => {
    const token = signReviewToken(SECRET, { ...claims, job: '20250101-ffffffff' });
    expect(refusal(verifyReviewToken(SECRET, token, JOB, NOW))).toBe('the review link is for another job');
  });

  it('refuses a tampered payload, even one that still parses (moderator: true)', () => {
    const token = signReviewToken(SECRET, claims);
    const [, signature] = token.split('.');
    const forged = Buffer.from(JSON.stringify({ ...claims, moderator: true })).toString('base64url');
    expect(refusal(verifyReviewToken(SECRET, `${forged}.${signature}`, JOB, NOW))).toBe('the review link is not signed by this bot');
    // a second spelling of the same signature bytes (base64url's spare bits) is not accepted either
    const last = signature!.at(-1)!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const sibling = alphabet[alphabet.indexOf(last) ^ 1]!;
    expect(refusal(verifyReviewToken(SECRET, `${token.split('.')[0]}.${signature!.slice(0, -1)}${sibling}`, JOB, NOW))).not.toBe('accepted');
  });

  it('refuses a correctly signed payload that is not the claims schema', () => {
    const payload = Buffer.from(JSON.stringify({ ...claims, admin: true })).toString('base64url');
    const signature = createHmac('sha256', SECRET).update('art-factory/review-link/v1\n').update(payload).digest('base64url');
    expect(refusal(verifyReviewToken(SECRET, `${payload}.${signature}`, JOB, NOW))).toBe('the review link is malformed');
  });

  it('refuses garbage without throwing, and never quotes it', () => {
    for (const garbage of ['', 'abc', 'a.b', '..', `${'x'.repeat(3000)}.${'y'.repeat(43)}`, 'eyJ9.' + 'A'.repeat(43), '💥.💥', `a.${'A'.repeat(42)}=`]) {
      const reason = refusal(verifyReviewToken(SECRET, garbage, JOB, NOW));
      expect(reason).not.toBe('accepted');
      if (garbage.length > 3) expect(reason).not.toContain(garbage);
    }
  });
});
