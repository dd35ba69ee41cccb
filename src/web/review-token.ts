/**
 * Signed links to the review page: `base64url(JSON claims).base64url(HMAC-SHA256)` with REVIEW_SECRET,
 * bound to one job, one reviewer (tenant, user, whether they moderate) and an expiry. The claims are
 * what the bot knew when it offered the link privately to someone allowed to review; the page trusts
 * nothing else about who is asking. A token is read strictly: capped in length, the signature
 * compared in constant time before a byte of the payload is parsed, then the payload checked field by
 * field — anything else is refused with a short reason that never repeats the token.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';

export interface ReviewClaims {
  job: string;
  tenant: string;
  userId: string;
  name?: string;
  moderator: boolean;
  /** when the link stops working, in ms since the epoch */
  exp: number;
}

/** The longest token read: far above any real one (a few hundred characters), far below a header cap. */
export const REVIEW_TOKEN_MAX_CHARS = 2048;
/** HMAC-SHA256 is 32 bytes: 43 base64url characters, unpadded. */
const SIGNATURE_CHARS = 43;
const SHAPE = new RegExp(`^([A-Za-z0-9_-]{1,${REVIEW_TOKEN_MAX_CHARS - SIGNATURE_CHARS - 1}})\\.([A-Za-z0-9_-]{${SIGNATURE_CHARS}})$`);
/** What is signed is marked as a review link, so no other use of the secret can produce one. */
const DOMAIN = 'art-factory/review-link/v1\n';

const claimsSchema = z
  .object({
    job: z.string().regex(/^[\w-]{1,64}$/),
    tenant: z.string().min(1).max(200),
    userId: z.string().min(1).max(200),
    name: z.string().max(200).optional(),
    moderator: z.boolean(),
    exp: z.number().int().positive(),
  })
  .strict();

function mac(secret: string, payload: string): string {
  return createHmac('sha256', secret).update(DOMAIN).update(payload).digest('base64url');
}

export function signReviewToken(secret: string, claims: ReviewClaims): string {
  const payload = Buffer.from(JSON.stringify(claimsSchema.parse(claims)), 'utf8').toString('base64url');
  return `${payload}.${mac(secret, payload)}`;
}

/**
 * The claims of `token` when it is well-formed, signed with `secret`, for `jobId` and not expired at
 * `now`; else why not (`refused`), in words fit for a 403 and a log line.
 */
export function verifyReviewToken(secret: string, token: string, jobId: string, now: number): ReviewClaims | { refused: string } {
  if (typeof token !== 'string' || token.length > REVIEW_TOKEN_MAX_CHARS) return { refused: 'the review link is malformed' };
  const match = SHAPE.exec(token);
  if (!match) return { refused: 'the review link is malformed' };
  const [, payload, signature] = match as unknown as [string, string, string];
  // Compared as text: a second spelling of the same bytes (base64url's spare low bits) is refused too.
  if (!timingSafeEqual(Buffer.from(signature), Buffer.from(mac(secret, payload)))) return { refused: 'the review link is not signed by this bot' };
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    return { refused: 'the review link is malformed' };
  }
  const claims = claimsSchema.safeParse(parsed);
  if (!claims.success) return { refused: 'the review link is malformed' };
  if (claims.data.job !== jobId) return { refused: 'the review link is for another job' };
  if (claims.data.exp <= now) return { refused: 'the review link has expired; ask for a new one with “Review in browser”' };
  return claims.data;
}

/** A link for `reviewer` to review `jobId`, valid `linkMs` from `now`: `${baseUrl}/review/${job}?t=${token}`. */
export function reviewLink(
  config: { baseUrl: string; secret: string; linkMs: number },
  jobId: string,
  reviewer: Omit<ReviewClaims, 'job' | 'exp'>,
  now: number,
): { url: string; expiresAt: number } {
  const expiresAt = now + config.linkMs;
  const { tenant, userId, name, moderator } = reviewer;
  const token = signReviewToken(config.secret, { job: jobId, tenant, userId, ...(name !== undefined ? { name } : {}), moderator, exp: expiresAt });
  return { url: `${config.baseUrl.replace(/\/+$/, '')}/review/${encodeURIComponent(jobId)}?t=${token}`, expiresAt };
}
