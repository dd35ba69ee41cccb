/**
 * The image cache's index ("don't pay twice"): one key per image delivered, in the Keyv store (SQLite,
 * or Redis in distributed mode, so every process sees it), named by a hash of what made the image
 * (provider, model, parameters, prompt, the call's seed and size, the output's place in it) and
 * pointing at the job and file it was saved as. The files stay where their job keeps them; a job
 * served from here copies them (src/core/batch-runner.ts). CACHE=off builds none of this.
 */
import { createHash } from 'node:crypto';
import type { Keyv } from 'keyv';
import type { CachedImage, ImageCache, ImageIdentity } from '../core/batch-runner.js';
import type { ImageReader } from '../core/ports.js';
import { REVIEW_FOLDERS } from './files.js';

const PREFIX = 'cache:image:';
/** Changes whenever what an identity means changes, so that old entries are simply never found. */
const KEY_VERSION = 1;
/** A stored entry is read back as untrusted input: a job id and a file inside that job's review folders. */
const JOB_ID = /^[\w-]{1,64}$/;
const FILE = new RegExp(`^(${Object.values(REVIEW_FOLDERS).join('|')})/[\\w-][\\w.-]{0,99}$`);

/** The store key of an image's identity: its fields in a fixed order, hashed. */
export function cacheKey(identity: ImageIdentity): string {
  const fields = [
    KEY_VERSION,
    identity.provider,
    identity.model,
    identity.prompt,
    identity.negative ?? '',
    identity.aspectRatio,
    identity.format,
    identity.quality ?? null,
    identity.seed,
    identity.count,
    identity.output,
    // added later: only when set, so the keys of images made without them stay what they were
    ...(identity.draft ? ['draft'] : []),
    ...(identity.loras ? [`loras:${identity.loras}`] : []),
  ];
  return PREFIX + createHash('sha256').update(JSON.stringify(fields)).digest('hex');
}

export class KeyvImageCache implements ImageCache {
  constructor(
    private readonly keyv: Keyv,
    private readonly images: ImageReader,
  ) {}

  /** One read for a call's images (a single statement on SQLite). */
  async find(identities: readonly ImageIdentity[]): Promise<(CachedImage | undefined)[]> {
    if (identities.length === 0) return [];
    const values: unknown[] = await this.keyv.getMany(identities.map(cacheKey));
    return identities.map((_, i) => entryOf(values[i]));
  }

  /** The bytes, from the folder the job recorded or the one a review moved the file to since. */
  async read(image: CachedImage): Promise<Buffer | undefined> {
    const name = image.file.split('/').pop()!;
    const candidates = [image.file, ...Object.values(REVIEW_FOLDERS).map((folder) => `${folder}/${name}`).filter((file) => file !== image.file)];
    for (const file of candidates) {
      try {
        return await this.images.read(image.jobId, file);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    return undefined;
  }

  /** One write for a batch's images (one upsert on SQLite, like the job store's). */
  async remember(entries: readonly { identity: ImageIdentity; image: CachedImage }[]): Promise<void> {
    const kept = entries.flatMap(({ identity, image }) => {
      const entry = entryOf(image);
      return entry ? [{ key: cacheKey(identity), value: entry }] : [];
    });
    if (kept.length > 0) await this.keyv.setMany(kept);
  }
}

/** A stored entry, or undefined when it is not one this version wrote (or could trust). */
function entryOf(value: unknown): CachedImage | undefined {
  if (!value || typeof value !== 'object') return undefined;
  const { jobId, file, nsfw, seed } = value as Record<string, unknown>;
  if (typeof jobId !== 'string' || !JOB_ID.test(jobId) || typeof file !== 'string' || !FILE.test(file)) return undefined;
  if (file.split('/').includes('..')) return undefined;
  return {
    jobId,
    file,
    nsfw: nsfw === true,
    ...(typeof seed === 'number' && Number.isInteger(seed) && seed >= 0 ? { seed } : {}),
  };
}
