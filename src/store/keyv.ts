/**
 * Opens the Keyv store named by STORE_URL. SQLite by default (one file, nothing to run); Redis when
 * several processes must share state.
 */
import { mkdir, open } from 'node:fs/promises';
import path from 'node:path';
import KeyvRedis from '@keyv/redis';
import KeyvSqlite from '@keyv/sqlite';
import { Keyv } from 'keyv';

/**
 * @keyv/sqlite has no setMany, so Keyv would send one statement per key; this writes a whole batch in
 * one upsert (one transaction), which is what the job store's group commit needs.
 */
class BatchingSqlite extends KeyvSqlite {
  async setMany(entries: { key: string; value: unknown }[]): Promise<boolean[]> {
    const table = this.opts.table ?? "keyv";
    await this.query(
      `INSERT INTO ${table} (key, value) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?) WHERE true
       ON CONFLICT(key) DO UPDATE SET value = excluded.value`,
      JSON.stringify(entries.map((entry) => [entry.key, entry.value])),
    );
    return entries.map(() => true);
  }
}

export async function openKeyv(storeUrl: string, namespace = 'art-factory'): Promise<Keyv> {
  if (storeUrl.startsWith('sqlite://')) {
    const file = storeUrl.slice('sqlite://'.length);
    if (file !== ':memory:') {
      // Owner-only: the store holds every prompt and who asked. SQLite gives its -wal and -shm files
      // the database file's own mode, so creating the file 0600 first covers all three.
      await mkdir(path.dirname(path.resolve(file)), { recursive: true, mode: 0o700 });
      await (await open(file, 'a', 0o600)).close();
    }
    // busyTimeout: a second process (the CLI beside the bot) waits for the lock instead of failing.
    const store = new BatchingSqlite({ uri: `sqlite://${file}`, busyTimeout: 10_000 });
    // WAL: a commit appends to the log instead of rewriting pages and syncing each time, and readers
    // do not block the writer. NORMAL still survives a process crash (only power loss can drop the
    // last commits).
    if (file !== ':memory:') await store.query('PRAGMA journal_mode=WAL');
    await store.query('PRAGMA synchronous=NORMAL');
    // Plain JSON: our values are JSON already, and Keyv's default serializer is several times slower
    // on a large job record.
    const keyv = new Keyv({ store, namespace, serialize: JSON.stringify, deserialize: JSON.parse });
    // Keyv reports adapter errors as events; without a listener they would crash the process.
    keyv.on('error', () => {});
    return keyv;
  }
  if (/^rediss?:\/\//.test(storeUrl)) return openRedisKeyv(storeUrl, namespace);
  // Only the scheme is echoed: the rest may carry a password.
  throw new Error(`STORE_URL: expected sqlite://PATH or redis://HOST, got a URL starting "${storeUrl.split('//')[0]}//"`);
}

/**
 * Redis (distributed mode): keys are `<namespace>::<key>`, values our plain JSON. Errors throw: the
 * adapter's default is to report them as an event and answer "nothing" — a save that failed would
 * look saved, and a record that could not be read would look missing. Connects now, so a wrong URL
 * or a Redis that is down stops the start with one line (the host only: the URL may hold a password).
 */
async function openRedisKeyv(storeUrl: string, namespace: string): Promise<Keyv> {
  const store = new KeyvRedis(storeUrl, { namespace, throwOnErrors: true, connectionTimeout: 10_000 });
  const keyv = new Keyv({ store, namespace, useKeyPrefix: false, throwOnErrors: true, serialize: JSON.stringify, deserialize: JSON.parse });
  // Connection errors (each reconnect attempt) arrive as events too; without a listener they would crash the process.
  keyv.on('error', () => {});
  try {
    await store.getClient();
  } catch {
    throw new Error(`STORE_URL: cannot connect to Redis at ${redisHost(storeUrl)}; is it running, and are the host, port and password right?`);
  }
  return keyv;
}

function redisHost(url: string): string {
  try {
    return new URL(url).host || 'the given host';
  } catch {
    return 'the given URL';
  }
}
