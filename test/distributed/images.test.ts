/**
 * Images every process can read (distributed mode): the process that downloads a batch is not the one
 * that posts its gallery, reviews it or serves it. Shared either through one OUTPUT_DIR every process
 * mounts (checked at start) or through an S3-compatible bucket (the fake in test/fakes/s3.ts, reached
 * by the real @aws-sdk/client-s3), where each process has an OUTPUT_DIR of its own, only a cache.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { expect, it, vi } from 'vitest';
import type { App } from '../../src/app.js';
import { startPlayground } from '../../src/chat/playground/index.js';
import type { Job } from '../../src/core/types.js';
import { pollUntil } from '../fakes/http.js';
import { startFakeS3, type FakeS3 } from '../fakes/s3.js';
import { postBlockAction, startFakeSlack } from '../fakes/slack.js';
import { buildApp, filesIn, onCleanup, readManifest, rejectionOf, tempDir } from '../helpers.js';
import { describeRedis, testPrefix } from '../redis/redis.js';
import { button, SECRET, textOf } from '../chat/slack/harness.js';
import { clusterEnv, delivered, imagine, jobIdIn, LOCKS, slackProcess, topLevel } from './chat-cluster.js';

/** The bucket, and the AWS SDK's credentials for it in the environment (its default chain reads them there). */
async function bucket(): Promise<FakeS3> {
  const s3 = await startFakeS3();
  onCleanup(() => s3.close());
  vi.stubEnv('AWS_ACCESS_KEY_ID', s3.credentials.accessKeyId);
  vi.stubEnv('AWS_SECRET_ACCESS_KEY', s3.credentials.secretAccessKey);
  onCleanup(() => void vi.unstubAllEnvs());
  return s3;
}

function s3Env(s3: FakeS3, prefix: string): Record<string, string> {
  return { S3_BUCKET: s3.bucket, S3_ENDPOINT: s3.url, S3_PREFIX: prefix };
}

/** An OUTPUT_DIR of this process's own (with a bucket, its cache). */
async function ownDir(): Promise<Record<string, string>> {
  return { OUTPUT_DIR: path.join(await tempDir('af-own-'), 'output') };
}

/** Resolves with the job once it is finished, as the store says (whichever process finished it). */
async function finishedJob(app: App, jobId: string): Promise<Job> {
  const { value } = await pollUntil(() => app.engine.get(jobId), (job) => job?.state === 'completed', { timeoutMs: 20_000, intervalMs: 20 });
  return value!;
}

/** Images compare by digest: a deep equality of megabyte Buffers would hold the event loop for seconds. */
const digest = (bytes: Buffer | undefined): string | undefined => bytes && createHash('sha256').update(bytes).digest('hex');

const imageNames = (count: number) => Array.from({ length: count }, (_, i) => `${String(i + 1).padStart(3, '0')}.png`);

describeRedis('images every process can read', () => {
  for (const mode of ['shared folder', 'S3 bucket'] as const) {
    it(`${mode}: a worker downloads, another process posts the Slack gallery from those images, an edge applies a review`, async () => {
      const fake = await startFakeSlack({ tokens: ['xoxb-edge', 'xoxb-poster'] });
      onCleanup(() => fake.close());
      const s3 = mode === 'S3 bucket' ? await bucket() : undefined;
      const prefix = `${testPrefix()}/`;
      const env = await clusterEnv(s3 ? s3Env(s3, prefix) : {});
      const own = async () => (s3 ? await ownDir() : {});

      // The edge takes the command and posts the progress message; the worker, with no chat adapter,
      // runs every batch; a third process, starting once the job is done, delivers its gallery.
      const edge = await slackProcess(fake, env, { token: 'xoxb-edge', env: { ROLE: 'edge', ...(await own()) } });
      const worker = await buildApp({ env: { ...env, ROLE: 'worker', ...(await own()) }, ...LOCKS });
      expect(await imagine(edge, 'a fox in the snow --count 6')).toBe(200);
      const { value: posts } = await pollUntil(async () => topLevel(fake), (messages) => messages.length === 1, { timeoutMs: 10_000, intervalMs: 20 });
      const jobId = jobIdIn(posts[0]!)!;
      const done = await finishedJob(worker, jobId);
      expect(done.images.map((image) => image.file)).toEqual(imageNames(6).map((name) => `pending-review/${name}`));
      // What the worker downloaded, as it kept it.
      const downloaded = await Promise.all(done.images.map(async (image) => digest(await readFile(path.join(worker.files.jobDir(jobId), image.file)))));

      const poster = await slackProcess(fake, env, { token: 'xoxb-poster', receive: false, env: { ROLE: 'edge', ...(await own()) } });
      // Its own cache, which held nothing of this job when it started: what it posts, it read from the bucket.
      if (s3) expect(poster.app.files.jobDir(jobId)).not.toBe(worker.files.jobDir(jobId));
      const { facts } = await delivered(fake, poster.app, jobId);

      // The gallery's uploads are the worker's images, byte for byte, sent by a process that ran no batch.
      const uploads = fake.files().filter((file) => file.shares.some((share) => share.thread_ts === facts.ts));
      expect(uploads.map((file) => file.filename).sort()).toEqual(imageNames(6).map((name) => `${jobId}-${name}`));
      for (const [i, name] of imageNames(6).entries()) {
        expect(digest(uploads.find((file) => file.filename === `${jobId}-${name}`)?.bytes)).toBe(downloaded[i]);
      }
      const uploaders = new Set(fake.calls('files.getUploadURLExternal').map((call) => call.token));
      expect(uploaders.size).toBe(1);
      expect(['xoxb-edge', 'xoxb-poster']).toContain([...uploaders][0]);
      if (s3) {
        const imageKeys = imageNames(6).map((name) => `${prefix}${jobId}/pending-review/${name}`);
        for (const [i, key] of imageKeys.entries()) expect(digest(s3.object(key)?.body)).toBe(downloaded[i]);
        // Each image was read from the bucket once (the worker has its own copies; nobody else read).
        const reads = s3.calls.filter((call) => call.operation === 'GetObject' && call.status === 200).map((call) => call.key);
        expect(reads.sort()).toEqual(imageKeys);
      }

      // A review through the edge, which never had the file: moved where every process sees it.
      const pageTs = facts.pages[0]!.ts!;
      const page = () => fake.message('C1', pageTs)!;
      const approve = button(page(), 'Approve', 1);
      const clicked = await postBlockAction(edge.url!, SECRET, {
        user: { id: done.requester.userId, username: 'owner', team_id: 'T1' },
        team: 'T1',
        channel: 'C1',
        message: page(),
        actions: [{ action_id: approve.action_id, value: approve.value }],
      });
      expect(clicked.status).toBe(200);
      await pollUntil(() => edge.app.engine.get(jobId), (job) => job?.images[0]?.review.status === 'approved', { timeoutMs: 10_000, intervalMs: 20 });
      await pollUntil(async () => textOf(page()), (text) => text.includes('✅ *#1*'), { timeoutMs: 10_000, intervalMs: 20 });
      if (s3) {
        expect(s3.keys(`${prefix}${jobId}/approved/`)).toEqual([`${prefix}${jobId}/approved/001.png`]);
        expect(s3.keys(`${prefix}${jobId}/pending-review/`)).toHaveLength(5);
        expect(digest(s3.object(`${prefix}${jobId}/approved/001.png`)?.body)).toBe(downloaded[0]);
        const manifest = JSON.parse(s3.object(`${prefix}${jobId}/manifest.json`)!.body.toString('utf8')) as { summary: unknown };
        expect(manifest.summary).toMatchObject({ approved: 1, pending: 5 });
      } else {
        expect(await filesIn(worker, jobId, 'approved')).toEqual(['001.png']);
        expect(await filesIn(worker, jobId, 'pending-review')).toEqual(imageNames(6).slice(1));
        expect((await readManifest(worker, jobId)).summary).toMatchObject({ approved: 1, pending: 5 });
      }
    }, 60_000);
  }

  it('S3 bucket: the playground of an edge serves images a worker downloaded, reading them from the bucket', async () => {
    const s3 = await bucket();
    const prefix = `${testPrefix()}/`;
    const env = await clusterEnv(s3Env(s3, prefix));
    const edge = await buildApp({ env: { ...env, ROLE: 'edge', ...(await ownDir()) }, ...LOCKS });
    const worker = await buildApp({ env: { ...env, ROLE: 'worker', ...(await ownDir()) }, ...LOCKS });
    const playground = await startPlayground(edge, { port: 0 });
    onCleanup(() => playground.stop());

    const answer = await fetch(`${playground.url}/api/command`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ text: '/imagine a heron --count 2' }),
    });
    expect(answer.status).toBe(200);
    const { job } = (await answer.json()) as { job: { id: string } };
    const done = await finishedJob(worker, job.id);
    expect(await readdir(edge.files.jobDir(job.id)).catch(() => [])).not.toContain('pending-review');

    const served = await fetch(`${playground.url}/images/${job.id}/${done.images[0]!.file}`);
    expect(served.status).toBe(200);
    expect(served.headers.get('content-type')).toBe('image/png');
    const bytes = Buffer.from(await served.arrayBuffer());
    expect(digest(bytes)).toBe(digest(await readFile(path.join(worker.files.jobDir(job.id), done.images[0]!.file))));
    expect(s3.calls.filter((call) => call.operation === 'GetObject').map((call) => call.key)).toEqual([`${prefix}${job.id}/${done.images[0]!.file}`]);
    // An image the job does not have is a 404, as on disk.
    expect((await fetch(`${playground.url}/images/${job.id}/approved/001.png`)).status).toBe(404);
  }, 60_000);

  it('without a bucket, a process whose OUTPUT_DIR is not the shared one refuses to start; with one, each keeps its own', async () => {
    const env = await clusterEnv();
    await buildApp({ env, ...LOCKS });
    const elsewhere = await ownDir();
    const refused = (await rejectionOf(buildApp({ env: { ...env, ...elsewhere }, ...LOCKS }))) as Error;
    expect(refused.message).toMatch(
      new RegExp(`^OUTPUT_DIR: ${path.resolve(elsewhere.OUTPUT_DIR!)} is not the folder the other processes share \\(no \\.art-factory-shared-[0-9a-f]{16} in it\\)`),
    );

    const s3 = await bucket();
    const withBucket = { ...(await clusterEnv(s3Env(s3, `${testPrefix()}/`))) };
    const first = await buildApp({ env: { ...withBucket, ...(await ownDir()) }, ...LOCKS });
    const second = await buildApp({ env: { ...withBucket, ...(await ownDir()) }, ...LOCKS });
    expect(first.files.outputDir).not.toBe(second.files.outputDir);
    expect(await first.shared!.redis.get(`${first.shared!.prefix}:output:marker`)).toBeNull();
  }, 30_000);
});
