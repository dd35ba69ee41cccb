/**
 * Opens the Keyv store named by STORE_URL. SQLite by default (one file, nothing to run); Redis when
 * several processes must share state.
 */
import { mkdir, open } from 'node:fs/promises';
import path from 'node:path';
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
  if (/^rediss?:\/\//.test(storeUrl)) {
    const moduleName = '@keyv/redis';
    const redis = (await import(moduleName).catch(() => {
      throw new Error(`STORE_URL is a Redis URL, which needs the @keyv/redis package: npm install @keyv/redis`);
    })) as { default: new (url: string) => ConstructorParameters<typeof Keyv>[0] };
    return new Keyv({ store: new redis.default(storeUrl) as never, namespace });
  }
  throw new Error(`STORE_URL: expected sqlite://PATH or redis://HOST, got "${storeUrl}"`);
}
