import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startPlayground } from '../../../src/chat/playground/index.js';
import { buildApp, filesIn, onCleanup } from '../../helpers.js';

const JSON_TYPE = { 'content-type': 'application/json' };

async function playground(env: Record<string, string> = {}) {
  const app = await buildApp({ env: { LOCAL_LATENCY_MS: '100', LOCAL_CONCURRENCY: '1', ...env } });
  const pg = await startPlayground(app, { port: 0 });
  onCleanup(() => pg.stop());
  const command = async (text: string) => {
    const response = await fetch(`${pg.url}/api/command`, { method: 'POST', headers: JSON_TYPE, body: JSON.stringify({ text }) });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  };
  return { app, pg, command };
}

/** Reads server-sent `job` events until `done` says stop. */
async function readEvents(url: string, done: (views: any[]) => boolean): Promise<any[]> {
  const response = await fetch(`${url}/events`);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  const views: any[] = [];
  let buffer = '';
  while (!done(views)) {
    const { value, done: ended } = await reader.read();
    if (ended) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = /^event: job\ndata: (.*)$/m.exec(frame)?.[1];
      if (data) views.push(JSON.parse(data));
    }
  }
  await reader.cancel();
  return views;
}

describe('playground server', () => {
  it('streams a job’s progress as server-sent events until it is done', async () => {
    const { pg, command } = await playground();
    const events = readEvents(pg.url, (views) => views.some((v) => v.state === 'completed'));
    const { body } = await command('/imagine a red fox --count 9');
    const views = (await events).filter((v) => v.id === body.job.id);
    expect(views.some((v) => v.progress.lines.some((line: string) => /^Batch [1-3]\/3 · /.test(line)))).toBe(true);
    expect(views.at(-1)).toMatchObject({ state: 'completed', count: 9 });
    expect(views.at(-1).images).toHaveLength(9);
    const image = await fetch(`${pg.url}${views.at(-1).images[0].url}`);
    expect(image.headers.get('content-type')).toBe('image/png');
    expect((await image.arrayBuffer()).byteLength).toBeGreaterThan(1000);
  });

  it('answers /imagine help, /jobs and unknown commands in words', async () => {
    const { command } = await playground({ LOCAL_LATENCY_MS: '2000' });
    expect((await command('/imagine help')).body.reply).toContain('--count');
    expect((await command('/jobs')).body.reply).toBe('You have no queued or running jobs here.');
    const { body } = await command('/imagine a slow fox --count 8');
    expect((await command('/jobs')).body.reply).toContain(body.job.id);
    expect(await command('/paint fox')).toEqual({ status: 400, body: { error: 'Unknown command `/paint`. Try /imagine, /jobs, /settings or /help.' } });
  });

  it('serves only images inside the output folder', async () => {
    const { pg } = await playground();
    for (const path of ['/images/../../etc/passwd', '/images/x/pending-review/..%2F..%2Fstore.sqlite', '/images/x/other/001.png']) {
      expect((await fetch(`${pg.url}${path}`)).status).toBe(404);
    }
  });

  it('refuses a review with a bad status or of an unknown job, and changes nothing', async () => {
    const { app, pg, command } = await playground({ LOCAL_LATENCY_MS: '0' });
    const post = (path: string, body: unknown) => fetch(`${pg.url}${path}`, { method: 'POST', headers: JSON_TYPE, body: JSON.stringify(body) });
    const { body } = await command('/imagine a red fox --count 2');
    const jobId: string = body.job.id;
    await app.engine.waitFor(jobId);
    /** Everything a review could change: the record, the manifest on disk and the files. */
    const snapshot = async () => ({
      job: await app.engine.get(jobId),
      manifest: await readFile(path.join(app.files.jobDir(jobId), 'manifest.json'), 'utf8'),
      files: await Promise.all(['pending-review', 'approved', 'rejected'].map((folder) => filesIn(app, jobId, folder))),
    });
    const before = await snapshot();
    expect(before.files).toEqual([['001.png', '002.png'], [], []]);

    for (const [status, given] of [['maybe', '`maybe`'], ['APPROVED', '`APPROVED`'], [1, '`1`'], [null, '`null`'], [undefined, 'nothing']] as const) {
      const bad = await post(`/api/jobs/${jobId}/images/1/review`, { status });
      expect(bad.status, String(status)).toBe(400);
      expect(await bad.json()).toEqual({ error: `Expected \`status\` to be approved, rejected or pending, got ${given}.` });
    }
    const unknownJob = await post('/api/jobs/20990101-deadbeef/images/1/review', { status: 'approved' });
    expect(unknownJob.status).toBe(404);
    expect(await unknownJob.json()).toEqual({ error: 'Not found' });
    const unknownImage = await post(`/api/jobs/${jobId}/images/9/review`, { status: 'approved' });
    expect(unknownImage.status).toBe(404);
    expect(await unknownImage.json()).toEqual({ error: `Image 9 is not part of job ${jobId}.` });

    expect(await snapshot()).toEqual(before);
    expect(await app.engine.get('20990101-deadbeef')).toBeUndefined();
    expect(await readdir(path.dirname(app.files.jobDir(jobId)))).toEqual([jobId]);
    // The same request with a good status does change it: the refusals above were the status's doing.
    expect((await post(`/api/jobs/${jobId}/images/1/review`, { status: 'approved' })).status).toBe(200);
    expect(await filesIn(app, jobId, 'approved')).toEqual(['001.png']);
  });
});
