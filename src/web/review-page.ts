/**
 * The review page, `/review/<job>`: a grid of a job's thumbnails to review with the keyboard and in
 * bulk, live as others review (chat buttons, other browsers). It is served by the bot's public server
 * behind a signed, expiring link (review-token.ts), or on the playground's loopback server for its
 * own jobs. Every request proves again who it is — the link's token (from its cookie) valid for THIS
 * job and not expired, the job in the token's tenant, the reviewer its requester or a moderator — and
 * passes the playground's Host / Origin / JSON rules (guard.ts); anything else is a 403 and changes
 * nothing. Reviews go through `engine.reviewMany`, the one review function the buttons use, so the
 * manifest, the files and the chat messages follow. The token is never logged: it arrives in the
 * query once (server.ts logs only the path) and in a cookie after that.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Engine } from '../core/engine.js';
import { UserError, isUserError } from '../core/errors.js';
import { parseImageNumbers } from '../core/image-numbers.js';
import { mayAct } from '../core/actions.js';
import type { ImageReader, Logger, ReviewFeed, Reviewer } from '../core/ports.js';
import { oneLine, shorten, textOf, truncate } from '../core/text.js';
import type { ImageRecord, Job, ReviewStatus } from '../core/types.js';
import { promptHeading } from '../core/views.js';
import { pagePolicy, refusal } from './guard.js';
import type { ImageFiles } from '../store/files.js';
import { verifyReviewToken, type ReviewClaims } from './review-token.js';
import type { Route, WebAnswer, WebRequest } from './server.js';

const ASSETS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'review');
/** The page's own files, served to anyone: they hold no job's data (that comes from `state`). */
const ASSETS: Record<string, { file: string; type: string }> = {
  'review.js': { file: 'review.js', type: 'text/javascript; charset=utf-8' },
  'review.css': { file: 'review.css', type: 'text/css; charset=utf-8' },
};
const IMAGE_TYPES: Record<string, string> = { '.png': 'image/png', '.webp': 'image/webp', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg' };
/** The cookie that carries the link's token after the first visit; one per job, by its Path. */
export const REVIEW_COOKIE = 'af_review';
const JOB_ID = /^[\w-]{1,64}$/;
const IMAGE_NUMBER = /^[1-9][0-9]{0,5}$/;
const STATUSES: readonly ReviewStatus[] = ['approved', 'rejected', 'pending'];
/** More numbers than any job has images (MAX_IMAGES_PER_JOB ≤ 1000): a longer list is not a person's. */
const IMAGES_MAX = 10_000;

/** The page loads only its own script, style, images and API; it has no form to submit. */
export const REVIEW_PAGE_POLICY = pagePolicy("'none'");
/** Sent with every answer of the page's routes, refusals included. */
const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': REVIEW_PAGE_POLICY,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-resource-policy': 'same-origin',
};

/** how a request proves who it is: a signed token (public server) or loopback (the playground) */
export type ReviewAccess =
  | { kind: 'token'; secret: string; /** Host/Origin must match it */ publicUrl: string }
  | { kind: 'loopback'; hosts: string[]; reviewer: { tenant: string; userId: string; name: string } };

export interface ReviewPageDeps {
  engine: Pick<Engine, 'get' | 'reviewMany' | 'on' | 'off'>;
  /** the job's folder (thumbnails are kept there) and its images' bytes, wherever they are stored (the folder, or the bucket through it) */
  files: Pick<ImageFiles, 'jobDir'> & Pick<ImageReader, 'read'>;
  /** WebP thumbnails made once and kept beside the images (src/store/thumbnails.ts) */
  thumbnails: { thumbnail(jobDir: string, file: string): Promise<{ path: string; bytes: number }> };
  access: ReviewAccess;
  /** distributed mode: reviews made in other processes, so a page follows them live too */
  feed?: Pick<ReviewFeed, 'subscribe'> | undefined;
  now: () => number;
  log: Logger;
}

/** One image as the page shows it. */
export interface ReviewImageView {
  index: number;
  status: ReviewStatus;
  nsfw: boolean;
  /** who reviewed it, when it is reviewed */
  by?: string;
  /** a prompt list's heading for the image's entry */
  heading?: string;
  width: number;
  height: number;
  /** changes when the slot holds another picture (a reroll), so the page's image URLs do too */
  version: number;
}

export interface ReviewStateView {
  /** `updatedAt` orders states: the page never shows an older one after a newer */
  job: { id: string; title: string; prompt: string; state: Job['state']; updatedAt: string };
  counts: { total: number; pending: number; approved: number; rejected: number; flagged: number };
  images: ReviewImageView[];
  /** who the page reviews as */
  reviewer: { name: string };
}

export function reviewState(job: Readonly<Job>, reviewer: { name: string }): ReviewStateView {
  const images = job.images.map((image): ReviewImageView => {
    const heading = promptHeading(job.request, image.prompt);
    return {
      index: image.index,
      status: image.review.status,
      nsfw: image.nsfw,
      ...(image.review.by ? { by: image.review.by } : {}),
      ...(heading ? { heading } : {}),
      width: image.width,
      height: image.height,
      version: image.rerolledFrom?.length ?? 0,
    };
  });
  const count = (status: ReviewStatus) => images.filter((image) => image.status === status).length;
  const prompt = shorten(job.request.prompt, 200);
  const title = job.request.prompts?.length ? `${job.request.prompts.length} prompts · ${job.images.length} images` : `“${shorten(prompt, 80)}” · ${job.images.length} images`;
  return {
    job: { id: job.id, title, prompt, state: job.state, updatedAt: job.updatedAt },
    counts: { total: images.length, pending: count('pending'), approved: count('approved'), rejected: count('rejected'), flagged: images.filter((i) => i.nsfw).length },
    images,
    reviewer,
  };
}

/** Who a request reviews as, once proven. */
interface Proven {
  job: Job;
  /** `exp`: when the link's token stops working (none on loopback) */
  claims: Pick<ReviewClaims, 'tenant' | 'userId' | 'name' | 'moderator'> & { exp?: number };
}

const forbidden = (reason: string): WebAnswer => ({ status: 403, reason: reason.startsWith('Forbidden') ? reason : `Forbidden: ${reason}` });

/** A value from a request body as a 400 quotes it: short, on one line. */
function given(value: unknown): string {
  if (value === undefined) return 'nothing';
  return `\`${truncate(oneLine(textOf(value)).replace(/`/g, "'"), 40)}\``;
}

/** The cookie `name` from a Cookie header, or undefined. */
function cookie(header: string | undefined, name: string): string | undefined {
  if (!header || header.length > 8192) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function reviewRoutes(deps: ReviewPageDeps): Route[] {
  const { access, engine } = deps;
  const publicUrl = access.kind === 'token' ? new URL(access.publicUrl) : undefined;
  const secure = publicUrl?.protocol === 'https:';

  /** The Host / Origin / JSON refusal for `req`, as the playground's guard says it. */
  function guardRefusal(req: WebRequest): string | undefined {
    const headers = { host: req.headers.host, 'content-type': req.headers['content-type'] };
    if (access.kind === 'loopback') return refusal(access.hosts, { method: req.method, headers: { ...headers, origin: req.headers.origin } }, 'this playground');
    // The guard knows http origins only; the public server's is PUBLIC_URL's own (often https).
    const refused = refusal([publicUrl!.host], { method: req.method, headers }, 'this review page');
    if (refused) return refused;
    const origin = req.headers.origin;
    if (origin !== undefined && origin.toLowerCase() !== publicUrl!.origin.toLowerCase()) {
      return `Forbidden: Origin ${given(origin)} is not this review page (expected ${publicUrl!.origin})`;
    }
    return undefined;
  }

  /** The job and who asks, or the 403/404 answer; checked again on every request. */
  async function prove(req: WebRequest, jobId: string, token?: string): Promise<Proven | WebAnswer> {
    const refused = guardRefusal(req);
    if (refused) return forbidden(refused);
    if (!JOB_ID.test(jobId)) return { status: 404, reason: 'no such job' };
    let claims: Proven['claims'];
    if (access.kind === 'token') {
      const presented = token ?? cookie(req.headers.cookie, REVIEW_COOKIE);
      if (!presented) return forbidden('open this page through a review link (“Review in browser”)');
      const verified = verifyReviewToken(access.secret, presented, jobId, deps.now());
      if ('refused' in verified) return forbidden(verified.refused);
      claims = verified;
    } else {
      claims = { ...access.reviewer, moderator: false };
    }
    const job = await engine.get(jobId);
    if (!job) return { status: 404, reason: 'no such job' };
    if (job.requester.tenant !== claims.tenant) return forbidden('this job belongs to another workspace');
    if (!mayAct(job, { userId: claims.userId, moderator: claims.moderator }, claims.tenant)) {
      return forbidden('only the person who asked for these images, or a moderator, can review them');
    }
    return { job, claims };
  }

  const reviewerOf = (claims: Proven['claims']): Reviewer => ({ id: claims.userId, ...(claims.name ? { name: claims.name } : {}) });
  const shownName = (claims: Proven['claims']) => ({ name: claims.name ?? claims.userId });

  async function asset(name: string): Promise<WebAnswer> {
    const found = ASSETS[name];
    if (!found) return { status: 404, reason: 'no such file' };
    return { status: 200, body: await readFile(path.join(ASSETS_DIR, found.file)), contentType: found.type, headers: { 'cache-control': 'no-cache' } };
  }

  /** The image of `job` numbered `param`, or a 404 answer. */
  function imageOf(job: Job, param: string | undefined): ImageRecord | WebAnswer {
    const image = param && IMAGE_NUMBER.test(param) ? job.images.find((i) => i.index === Number(param)) : undefined;
    return image ?? { status: 404, reason: `no such image in job ${job.id}` };
  }

  /** `file` (relative to the job's folder) if it stays inside it: a stored record is not trusted to. */
  function inside(jobDir: string, file: string): string | undefined {
    const full = path.resolve(jobDir, file);
    const rel = path.relative(jobDir, full);
    return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? full : undefined;
  }

  function sendImage(data: Buffer | undefined, file: string): WebAnswer {
    if (!data) return { status: 404, reason: 'no such image file' };
    // The number keeps its picture until a reroll, which changes the page's URL (`?v=`).
    return { status: 200, body: data, contentType: IMAGE_TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream', headers: { 'cache-control': 'private, max-age=86400' } };
  }

  const missing = (error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? undefined : Promise.reject(error));

  /** The image's bytes from storage (in S3 mode this also brings it into the job's folder), or undefined when it is gone. */
  function readImage(jobId: string, file: string): Promise<Buffer | undefined> {
    return deps.files.read(jobId, file).catch(missing);
  }

  /** The images a POST names, or a 400 saying which field is wrong, what it allows and what came. */
  function wanted(body: Buffer, job: Job): { images: number[]; status: ReviewStatus } | { refused: WebAnswer } {
    const bad = (reason: string) => ({ refused: { status: 400, reason } });
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      return bad('Expected a JSON body such as {"images": [1, 2], "status": "approved"}, got text that is not JSON');
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return bad(`Expected a JSON object such as {"images": [1, 2], "status": "approved"}, got ${given(parsed)}`);
    const { images, numbers, status, ...rest } = parsed as Record<string, unknown>;
    const extra = Object.keys(rest);
    if (extra.length > 0) return bad(`Expected only \`images\` or \`numbers\`, and \`status\`; got \`${truncate(extra[0]!, 40)}\` too`);
    if (typeof status !== 'string' || !STATUSES.includes(status as ReviewStatus)) return bad(`Expected \`status\` to be approved, rejected or pending, got ${given(status)}`);
    const count = job.images.length;
    if (images !== undefined && numbers !== undefined) return bad('Expected `images` or `numbers`, got both');
    if (numbers !== undefined) {
      if (typeof numbers !== 'string') return bad(`Expected \`numbers\` to be text such as "1-5, 8", got ${given(numbers)}`);
      try {
        return { images: parseImageNumbers(numbers, Math.max(count, ...job.images.map((i) => i.index)), 'numbers'), status: status as ReviewStatus };
      } catch (error) {
        if (isUserError(error)) return bad(error.message);
        throw error;
      }
    }
    if (images === 'pending') return { images: job.images.filter((i) => i.review.status === 'pending').map((i) => i.index), status: status as ReviewStatus };
    if (!Array.isArray(images) || images.length === 0 || images.length > IMAGES_MAX || !images.every((n) => Number.isInteger(n) && (n as number) >= 1)) {
      return bad(`Expected \`images\` to be a list of image numbers (1 to ${count}) or "pending", got ${given(images)}`);
    }
    return { images: images as number[], status: status as ReviewStatus };
  }

  const routes: Omit<Route, 'headers'>[] = [
    // The page's files first: `assets` is never a job id (they are `YYYYMMDD-xxxxxxxx`).
    { method: 'GET', path: '/review/assets/:file', handle: async (req) => {
      const refused = guardRefusal(req);
      return refused ? forbidden(refused) : asset(req.params.file!);
    } },
    {
      method: 'GET',
      path: '/review/:job',
      async handle(req) {
        const jobId = req.params.job!;
        const token = req.query.get('t');
        if (token !== null && access.kind === 'token') {
          const proven = await prove(req, jobId, token);
          if (!('job' in proven)) return proven;
          // The token moves into a cookie for this job's pages only, and leaves the address bar and
          // the history at once: a link seen over a shoulder or in a screenshot is not one to reuse.
          const maxAge = Math.max(1, Math.floor((proven.claims.exp! - deps.now()) / 1000));
          const where = `/review/${encodeURIComponent(jobId)}`;
          return {
            status: 303,
            body: `See ${where}`,
            headers: {
              location: where,
              'set-cookie': `${REVIEW_COOKIE}=${token}; Path=${where}; Max-Age=${maxAge}; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`,
            },
          };
        }
        // The page itself holds no job's data, and a SameSite=Strict cookie does not come along when
        // a chat app's link redirects here: the page loads for anyone on our host, and its `state`
        // request (same-site, with the cookie) is where the proof is asked for.
        const refused = guardRefusal(req);
        if (refused) return forbidden(refused);
        if (!JOB_ID.test(jobId)) return { status: 404, reason: 'no such job' };
        return { status: 200, body: await readFile(path.join(ASSETS_DIR, 'index.html')), contentType: 'text/html; charset=utf-8' };
      },
    },
    {
      method: 'GET',
      path: '/review/:job/state',
      async handle(req) {
        const proven = await prove(req, req.params.job!);
        if (!('job' in proven)) return proven;
        return { status: 200, body: reviewState(proven.job, shownName(proven.claims)) };
      },
    },
    {
      method: 'GET',
      path: '/review/:job/thumbs/:image',
      async handle(req) {
        const proven = await prove(req, req.params.job!);
        if (!('job' in proven)) return proven;
        const image = imageOf(proven.job, req.params.image);
        if ('status' in image) return image;
        const jobDir = deps.files.jobDir(proven.job.id);
        if (!inside(jobDir, image.file)) return { status: 404, reason: 'no such image file' };
        const thumbnail = () => deps.thumbnails.thumbnail(jobDir, image.file).catch(missing);
        // Not in this process's folder (kept in the bucket): read through storage once, which brings it here.
        const thumb = (await thumbnail()) ?? ((await readImage(proven.job.id, image.file)) ? await thumbnail() : undefined);
        return sendImage(thumb ? await readFile(thumb.path).catch(missing) : undefined, thumb?.path ?? '.webp');
      },
    },
    {
      method: 'GET',
      path: '/review/:job/images/:image',
      async handle(req) {
        const proven = await prove(req, req.params.job!);
        if (!('job' in proven)) return proven;
        const image = imageOf(proven.job, req.params.image);
        if ('status' in image) return image;
        if (!inside(deps.files.jobDir(proven.job.id), image.file)) return { status: 404, reason: 'no such image file' };
        return sendImage(await readImage(proven.job.id, image.file), image.file);
      },
    },
    {
      method: 'POST',
      path: '/review/:job/review',
      async handle(req) {
        const proven = await prove(req, req.params.job!);
        if (!('job' in proven)) return proven;
        const want = wanted(req.body, proven.job);
        if ('refused' in want) return want.refused;
        const { images, status } = want;
        if (images.length === 0) return { status: 200, body: reviewState(proven.job, shownName(proven.claims)) };
        try {
          const after = await engine.reviewMany(proven.job.id, images, status, reviewerOf(proven.claims));
          return { status: 200, body: reviewState(after, shownName(proven.claims)) };
        } catch (error) {
          if (error instanceof UserError) return { status: error.code === 'not_found' ? 400 : 409, reason: error.message };
          throw error;
        }
      },
    },
    {
      method: 'GET',
      path: '/review/:job/events',
      async handle(req) {
        const proven = await prove(req, req.params.job!);
        if (!('job' in proven)) return proven;
        const jobId = proven.job.id;
        const token = access.kind === 'token' ? cookie(req.headers.cookie, REVIEW_COOKIE)! : undefined;
        return {
          status: 200,
          stream: (events) => {
            events.send('state', reviewState(proven.job, shownName(proven.claims)));
            // a review made anywhere, or the job run again (a reroll puts a new picture in a slot)
            const onChange = (job: Job) => {
              if (job.id !== jobId) return;
              // A stream outlives no link: past its expiry the page is told so, and hears nothing more.
              if (token !== undefined && access.kind === 'token' && 'refused' in verifyReviewToken(access.secret, token, jobId, deps.now())) {
                events.send('expired', { error: 'This review link has expired; ask for a new one with “Review in browser”.' });
                return events.close();
              }
              events.send('state', reviewState(job, shownName(proven.claims)));
            };
            engine.on('reviewed', onChange);
            engine.on('finished', onChange);
            // Another process's review: read the job as stored now.
            const unsubscribe = deps.feed?.subscribe((reviewed) => {
              if (reviewed !== jobId) return;
              void engine.get(jobId).then(
                (job) => job && onChange(job),
                (error: Error) => deps.log.warn({ job: jobId, err: error.message }, 'review page: could not read a job reviewed elsewhere'),
              );
            });
            deps.log.debug({ job: jobId }, 'review page: live updates opened');
            return () => {
              engine.off('reviewed', onChange);
              engine.off('finished', onChange);
              unsubscribe?.();
            };
          },
        };
      },
    },
  ];
  return routes.map((route) => ({ ...route, headers: SECURITY_HEADERS }));
}
