/**
 * Distributed mode with images on disk: every process must see the same OUTPUT_DIR (one volume they
 * all mount), or a gallery posted by one process would miss the images another downloaded. The first
 * process leaves a marker file there and records its name in Redis; every process then looks for that
 * file in its own OUTPUT_DIR and refuses to start without it.
 *
 * If the shared folder itself is replaced (a new, empty volume), no process finds the marker any more:
 * delete the Redis key `<prefix>:output:marker` and the next start leaves a new one.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Redis } from 'ioredis';

/** Owner-only, as the rest of the output folder (src/store/files.ts). */
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const MARKER = /^\.art-factory-shared-[0-9a-f]{16}$/;

/** Resolves when `outputDir` holds the marker every process shares; throws one line otherwise. */
export async function checkSharedFolder(redis: Redis, prefix: string, outputDir: string): Promise<void> {
  const dir = path.resolve(outputDir);
  const marker = await sharedMarker(redis, `${prefix}:output:marker`, dir);
  // The name comes from Redis: only ever a plain name of ours, so it cannot point outside the folder.
  if (!MARKER.test(marker)) {
    throw new Error(`OUTPUT_DIR: Redis key ${prefix}:output:marker holds something that is not a marker name this bot writes; delete the key and start again`);
  }
  const found = await stat(path.join(dir, marker)).then(
    (info) => info.isFile(),
    () => false,
  );
  if (!found) {
    throw new Error(
      `OUTPUT_DIR: ${dir} is not the folder the other processes share (no ${marker} in it); mount the shared volume there, or set S3_BUCKET to share images through object storage`,
    );
  }
}

/**
 * The marker's name as recorded in Redis. The first process writes its own marker file, then
 * records its name with SET NX; one that loses that race removes its file and takes the winner's.
 */
async function sharedMarker(redis: Redis, key: string, dir: string): Promise<string> {
  // Three rounds: only a key deleted between our SET NX and our GET needs a second.
  for (let round = 0; round < 3; round += 1) {
    const recorded = await redis.get(key);
    if (recorded !== null) return recorded;
    const mine = `.art-factory-shared-${randomBytes(8).toString('hex')}`;
    const file = path.join(dir, mine);
    await mkdir(dir, { recursive: true, mode: DIR_MODE });
    const note = { createdAt: new Date().toISOString(), host: os.hostname(), pid: process.pid };
    await writeFile(file, `${JSON.stringify(note)}\n`, { mode: FILE_MODE, flag: 'wx' });
    if ((await redis.set(key, mine, 'NX')) === 'OK') return mine;
    await rm(file, { force: true });
  }
  throw new Error(`OUTPUT_DIR: could not record the shared folder's marker in Redis (key ${key} keeps disappearing)`);
}
