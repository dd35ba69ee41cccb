/**
 * Results of synchronous providers (Stability, OpenAI), held on disk between "the provider answered"
 * and "the images are saved". Their APIs answer a generation with its images at once; the batch
 * machine, built for queued providers, saves a request id after submit and only then fetches the
 * result. Holding the answer under a request id of our own, before submit returns it, is what lets a
 * restart in between fetch the images it already paid for instead of generating them again.
 *
 * `<dir>/<requestId>.json` (what each output is) is written last, atomically: a result is there
 * whole, or not at all (a crash mid-write leaves parts that the sweep removes).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { CallStatus } from '../core/provider.js';

/** One output as the provider gave it (bytes decoded from base64, or fetched). */
export interface HeldOutput {
  data: Buffer;
  contentType?: string;
  width?: number;
  height?: number;
  nsfw: boolean;
  seed?: number;
  /** the prompt the provider rewrote ours into (OpenAI's revised_prompt), recorded per image */
  revisedPrompt?: string;
}

/** A held call: its outputs, or why it produced none (a moderation refusal, a content filter). */
export interface HeldResult {
  outputs: HeldOutput[];
  /** set when the call ended without images: the reason, as the provider said it */
  failed?: string;
}

interface Meta {
  outputs: Omit<HeldOutput, 'data'>[];
  failed?: string;
}

const REQUEST_ID = /^[a-z]+-[0-9a-f]{32}$/;
/** A result nobody fetched in a day is not coming back for. */
const MAX_AGE_MS = 24 * 60 * 60_000;

export class HeldResults {
  constructor(
    private readonly dir: string,
    /** the request ids' prefix (`stability-…`), so two providers can share a folder */
    private readonly prefix: string,
  ) {}

  /** A new request id for a call about to be sent. */
  newId(): string {
    return `${this.prefix}-${randomBytes(16).toString('hex')}`;
  }

  /** Keeps a call's answer under `requestId`; resolves once it is on disk, whole. */
  async hold(requestId: string, result: HeldResult): Promise<void> {
    this.check(requestId);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const meta: Meta = { outputs: [], ...(result.failed !== undefined ? { failed: result.failed } : {}) };
    for (const [k, output] of result.outputs.entries()) {
      const { data, ...facts } = output;
      await writeFile(path.join(this.dir, `${requestId}.${k}.bin`), data, { mode: 0o600 });
      meta.outputs.push(facts);
    }
    const temp = path.join(this.dir, `${requestId}.json.${randomBytes(4).toString('hex')}.part`);
    await writeFile(temp, JSON.stringify(meta), { mode: 0o600 });
    await rename(temp, path.join(this.dir, `${requestId}.json`));
  }

  /** The held answer, or undefined when there is none (never held, dropped, or swept). */
  async get(requestId: string): Promise<HeldResult | undefined> {
    if (!REQUEST_ID.test(requestId) || !requestId.startsWith(`${this.prefix}-`)) return undefined;
    let meta: Meta;
    try {
      meta = JSON.parse(await readFile(path.join(this.dir, `${requestId}.json`), 'utf8')) as Meta;
    } catch {
      return undefined;
    }
    try {
      const outputs = await Promise.all(
        meta.outputs.map(async (facts, k) => ({ ...facts, data: await readFile(path.join(this.dir, `${requestId}.${k}.bin`)) })),
      );
      return { outputs, ...(meta.failed !== undefined ? { failed: meta.failed } : {}) };
    } catch {
      return undefined;
    }
  }

  /**
   * A held call's status: succeeded, failed with the provider's reason, or failed as lost (swept, or
   * never held: the batch machine then sends it again).
   */
  async status(requestId: string): Promise<CallStatus> {
    const held = await this.get(requestId);
    if (!held) return { state: 'failed', error: 'the result was lost' };
    return held.failed !== undefined ? { state: 'failed', error: held.failed } : { state: 'succeeded' };
  }

  /** Forgets a call (its images are saved, or it was cancelled). */
  async drop(requestId: string): Promise<void> {
    if (!REQUEST_ID.test(requestId)) return;
    const files = await readdir(this.dir).catch(() => [] as string[]);
    await Promise.all(files.filter((name) => name.startsWith(`${requestId}.`)).map((name) => rm(path.join(this.dir, name), { force: true })));
  }

  /** Removes results (and half-written parts) older than `maxAgeMs`; returns how many files went. */
  async sweep(now = Date.now(), maxAgeMs = MAX_AGE_MS): Promise<number> {
    const files = await readdir(this.dir).catch(() => [] as string[]);
    let removed = 0;
    for (const name of files.filter((file) => file.startsWith(`${this.prefix}-`))) {
      const file = path.join(this.dir, name);
      const modified = await stat(file).then((info) => info.mtimeMs, () => undefined);
      if (modified === undefined || now - modified < maxAgeMs) continue;
      await rm(file, { force: true });
      removed += 1;
    }
    return removed;
  }

  private check(requestId: string): void {
    if (!REQUEST_ID.test(requestId) || !requestId.startsWith(`${this.prefix}-`)) throw new RangeError(`not a request id of ${this.prefix}: ${requestId}`);
  }
}
