import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { checkSharedFolder } from '../../src/distributed/shared-folder.js';
import { openRedis } from '../../src/store/redis.js';
import { onCleanup, rejectionOf, tempDir } from '../helpers.js';
import { describeRedis, redisUrl, testPrefix } from '../redis/redis.js';

function connect(): Redis {
  const redis = openRedis(redisUrl);
  onCleanup(() => redis.disconnect());
  return redis;
}

async function markers(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((name) => name.startsWith('.art-factory-shared-'));
}

describeRedis('checkSharedFolder', () => {
  it('accepts the folder the first process marked, again and again, and refuses another one in one line', async () => {
    const prefix = testPrefix();
    const shared = path.join(await tempDir(), 'output');
    const elsewhere = await tempDir();

    await checkSharedFolder(connect(), prefix, shared);
    const [marker] = await markers(shared);
    expect(marker).toMatch(/^\.art-factory-shared-[0-9a-f]{16}$/);
    expect(await connect().get(`${prefix}:output:marker`)).toBe(marker);
    expect((await stat(path.join(shared, marker!))).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(path.join(shared, marker!), 'utf8'))).toMatchObject({ host: expect.any(String), createdAt: expect.any(String) });

    await checkSharedFolder(connect(), prefix, shared);
    expect(await markers(shared)).toEqual([marker]);

    const error = (await rejectionOf(checkSharedFolder(connect(), prefix, elsewhere))) as Error;
    expect(error.message).toBe(
      `OUTPUT_DIR: ${elsewhere} is not the folder the other processes share (no ${marker} in it); mount the shared volume there, or set S3_BUCKET to share images through object storage`,
    );
    expect(await markers(elsewhere)).toEqual([]);
  });

  it('lets processes starting at once on one folder agree on one marker', async () => {
    const prefix = testPrefix();
    const shared = await tempDir();
    const connections = [connect(), connect(), connect()];
    await Promise.all(Array.from({ length: 9 }, (_, i) => checkSharedFolder(connections[i % 3]!, prefix, shared)));
    const found = await markers(shared);
    expect(found).toHaveLength(1);
    expect(await connect().get(`${prefix}:output:marker`)).toBe(found[0]);
  });

  it('keeps deployments on one Redis apart by their prefix', async () => {
    const [first, second] = [await tempDir(), await tempDir()];
    await checkSharedFolder(connect(), testPrefix(), first);
    await checkSharedFolder(connect(), testPrefix(), second);
    expect(await markers(first)).toHaveLength(1);
    expect(await markers(second)).toHaveLength(1);
  });

  it('refuses a marker name in Redis that is not one it writes, without looking outside the folder', async () => {
    const prefix = testPrefix();
    const dir = await tempDir();
    await connect().set(`${prefix}:output:marker`, '../../etc/passwd');
    const error = (await rejectionOf(checkSharedFolder(connect(), prefix, dir))) as Error;
    expect(error.message).toBe(
      `OUTPUT_DIR: Redis key ${prefix}:output:marker holds something that is not a marker name this bot writes; delete the key and start again`,
    );
    expect(await markers(dir)).toEqual([]);
  });
});
