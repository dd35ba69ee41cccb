// The real `replicate` client against the Replicate fake, plus the fault-rule
// machinery shared by both fakes (times vs seeded probability).
import { onCleanup, rejectionOf } from '../helpers.js';
import { describe, it, expect } from 'vitest';
import sharp from 'sharp';
import Replicate, { type ApiError, type Prediction } from 'replicate';
import { REPLICATE_NSFW_ERROR, startFakeReplicate } from './replicate.js';
import { FaultBook, loopbackFetch, pollUntil, type Fault, type FaultRule } from './http.js';

const MODEL = 'black-forest-labs/flux-schnell';

async function setup(options: Parameters<typeof startFakeReplicate>[0] = {}, auth = 'r8_test') {
  const fake = await startFakeReplicate({ key: 'r8_test', ...options });
  onCleanup(() => fake.close());
  const replicate = new Replicate({ auth, baseUrl: fake.url, fetch: loopbackFetch, useFileOutput: false });
  return { fake, replicate };
}

function waitDone(replicate: Replicate, id: string) {
  return pollUntil(
    () => replicate.predictions.get(id),
    (p) => p.status === 'succeeded' || p.status === 'failed' || p.status === 'canceled',
  );
}

/** The replicate client's ApiError carries the Response; its body was already read into the message. */
function statusOf(err: unknown): number {
  return (err as ApiError).response.status;
}

describe('replicate fake with the real replicate client', () => {
  it('create (201) → poll → 4 URLs → png bytes at 16:9 size', async () => {
    // Long enough that the first polls surely see the running states, even on a loaded machine.
    const { fake, replicate } = await setup({ latencyMs: 300 });
    const created = await replicate.predictions.create({
      model: MODEL,
      input: { prompt: 'a lighthouse', num_outputs: 4, aspect_ratio: '16:9', output_format: 'png' },
    });
    expect(created).toMatchObject({ model: MODEL, status: 'starting', output: null, error: null, logs: '', data_removed: false });
    expect(created.urls.get).toBe(`${fake.url}/predictions/${created.id}`);
    expect(created.urls.cancel).toBe(`${fake.url}/predictions/${created.id}/cancel`);

    const { value: done, seen } = await waitDone(replicate, created.id);
    expect(seen.some((p) => p.status === 'starting' || p.status === 'processing')).toBe(true);
    expect(done.status).toBe('succeeded');
    expect(done.metrics?.predict_time).toEqual(expect.any(Number));
    expect(Date.parse(done.completed_at ?? '')).not.toBeNaN();
    const output = done.output as string[];
    expect(output).toHaveLength(4);

    const metas = await Promise.all(
      output.map(async (url) => {
        const res = await loopbackFetch(url);
        expect(res.headers.get('content-type')).toBe('image/png');
        return sharp(Buffer.from(await res.arrayBuffer())).metadata();
      }),
    );
    for (const m of metas) expect(m).toMatchObject({ format: 'png', width: 1344, height: 768 });

    const submit = fake.submits()[0]!;
    expect(submit).toMatchObject({ method: 'POST', path: `/v1/models/${MODEL}/predictions` });
    expect(submit.headers.authorization).toBe('Bearer r8_test');
    expect(submit.body).toMatchObject({ input: { num_outputs: 4 } });
    expect(fake.predictions.get(created.id)?.status).toBe('succeeded');
  });

  it('defaults: one webp at 1:1 (1024×1024); 9:21 maps to 640×1536', async () => {
    const { replicate } = await setup({ latencyMs: 1 });
    const a = await replicate.predictions.create({ model: MODEL, input: { prompt: 'defaults' } });
    const b = await replicate.predictions.create({ model: MODEL, input: { prompt: 'tall', aspect_ratio: '9:21', output_format: 'jpg' } });
    const [pa, pb] = await Promise.all([waitDone(replicate, a.id), waitDone(replicate, b.id)]);
    const [ua] = pa.value.output as string[];
    const [ub] = pb.value.output as string[];
    expect(ua).toMatch(/\/0\.webp$/);
    const ma = await sharp(Buffer.from(await (await loopbackFetch(ua!)).arrayBuffer())).metadata();
    expect(ma).toMatchObject({ format: 'webp', width: 1024, height: 1024 });
    const mb = await sharp(Buffer.from(await (await loopbackFetch(ub!)).arrayBuffer())).metadata();
    expect(mb).toMatchObject({ format: 'jpeg', width: 640, height: 1536 });
  });

  it('Prefer: wait holds the create until the prediction is done', async () => {
    const { fake, replicate } = await setup({ latencyMs: 40 });
    const p = await replicate.predictions.create({ model: MODEL, input: { prompt: 'now' }, wait: 5 });
    expect(fake.submits()[0]?.headers.prefer).toBe('wait=5');
    expect(p.status).toBe('succeeded');
    expect(p.output).toHaveLength(1);
  });

  it('Prefer: wait=N answers 201 with the prediction still running when it outlasts N (scaled) seconds', async () => {
    const { fake, replicate } = await setup({ latencyMs: 60_000, preferWaitUnitMs: 10 });
    const p = await replicate.predictions.create({ model: MODEL, input: { prompt: 'slow' }, wait: 2 });
    expect(fake.submits()[0]?.headers.prefer).toBe('wait=2');
    expect(p).toMatchObject({ status: 'starting', output: null });
    expect(fake.predictions.get(p.id)?.terminal).toBe(false);
  });

  it('Prefer: wait answers with a failed prediction as soon as it fails', async () => {
    const { fake, replicate } = await setup({ latencyMs: 40 });
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'CUDA out of memory' } });
    const p = await replicate.predictions.create({ model: MODEL, input: { prompt: 'doomed' }, wait: 60 });
    expect(p).toMatchObject({ status: 'failed', error: 'CUDA out of memory', output: null });
    expect(fake.gets()).toHaveLength(0);
  });

  it('a cancel ends a held create with the canceled prediction', async () => {
    const { fake, replicate } = await setup({ latencyMs: 60_000 });
    // A bare `wait` is 60 s: only the cancel can end this hold within the test's time.
    const held = replicate.predictions.create({ model: MODEL, input: { prompt: 'stop' }, wait: true });
    await pollUntil(async () => fake.predictions.size, (n) => n === 1);
    const [id] = [...fake.predictions.keys()];
    expect(fake.submits()[0]?.headers.prefer).toBe('wait');
    await replicate.predictions.cancel(id!);
    expect(await held).toMatchObject({ id, status: 'canceled' });
  });

  it('gets() counts the status polls of each prediction, faulted and unknown ones too', async () => {
    const { fake, replicate } = await setup({ latencyMs: 1 });
    const a = await replicate.predictions.create({ model: MODEL, input: { prompt: 'a' } });
    fake.inject({ on: 'status', fault: { kind: 'server-error', status: 503 } });
    await replicate.predictions.get(a.id); // the client retries the 503 by itself: two GETs
    await rejectionOf(replicate.predictions.get('nosuchprediction'));
    expect(fake.gets(a.id).map((c) => c.fault)).toEqual(['server-error', undefined]);
    expect(fake.gets().map((c) => c.path)).toEqual([`/v1/predictions/${a.id}`, `/v1/predictions/${a.id}`, '/v1/predictions/nosuchprediction']);
  });

  it('rejects num_outputs 5 with 422 and invalid_fields; no prediction is created', async () => {
    const { fake, replicate } = await setup();
    const err = await rejectionOf(replicate.predictions.create({ model: MODEL, input: { prompt: 'x', num_outputs: 5 } }));
    expect(statusOf(err)).toBe(422);
    expect((err as Error).message).toContain('input.num_outputs: Must be less than or equal to 4');
    expect(fake.predictions.size).toBe(0);
  });

  it('cancel → status canceled, and it stays canceled', async () => {
    const { fake, replicate } = await setup({ latencyMs: 5_000 });
    const created = await replicate.predictions.create({ model: MODEL, input: { prompt: 'stop' } });
    const canceled = await replicate.predictions.cancel(created.id);
    expect(canceled).toMatchObject({ id: created.id, status: 'canceled', output: null });
    expect(fake.calls.at(-1)).toMatchObject({ method: 'POST', path: `/v1/predictions/${created.id}/cancel` });
    expect((await replicate.predictions.get(created.id)).status).toBe('canceled');
  });

  it("'failed' on submit: the prediction ends failed with the error", async () => {
    const { fake, replicate } = await setup({ latencyMs: 300 });
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'CUDA out of memory' } });
    const created = await replicate.predictions.create({ model: MODEL, input: { prompt: 'doomed' } });
    expect(created.status).toBe('starting'); // the create itself succeeds
    expect(fake.submits()[0]?.fault).toBe('failed');
    const { value } = await waitDone(replicate, created.id);
    expect(value).toMatchObject({ status: 'failed', error: 'CUDA out of memory', output: null });
  });

  it("'partial' on submit and on status: fewer output URLs", async () => {
    const { fake, replicate } = await setup({ latencyMs: 1 });
    fake.inject({ on: 'submit', fault: { kind: 'partial', images: 2 } });
    const a = await replicate.predictions.create({ model: MODEL, input: { prompt: 'four', num_outputs: 4 } });
    expect((await waitDone(replicate, a.id)).value.output).toHaveLength(2);

    fake.inject({ on: 'status', fault: { kind: 'partial', images: 1 } });
    const b = await replicate.predictions.create({ model: MODEL, input: { prompt: 'three', num_outputs: 3 } });
    expect((await waitDone(replicate, b.id)).value.output).toHaveLength(1);
    expect((await replicate.predictions.get(b.id)).output).toHaveLength(1); // it sticks
  });

  it('a prompt with the NSFW word fails like cog-flux, unless the safety checker is off', async () => {
    const { replicate } = await setup({ latencyMs: 1 });
    const a = await replicate.predictions.create({ model: MODEL, input: { prompt: 'x NSFW-TEST' } });
    expect((await waitDone(replicate, a.id)).value).toMatchObject({ status: 'failed', error: REPLICATE_NSFW_ERROR });
    const b = await replicate.predictions.create({ model: MODEL, input: { prompt: 'x NSFW-TEST', disable_safety_checker: true } });
    expect((await waitDone(replicate, b.id)).value.status).toBe('succeeded');
  });

  it('a wrong token gets 401 Unauthenticated', async () => {
    const { fake, replicate } = await setup({}, 'r8_wrong');
    const err = await rejectionOf(replicate.predictions.create({ model: MODEL, input: { prompt: 'x' } }));
    expect(statusOf(err)).toBe(401);
    expect((err as Error).message).toContain('"title":"Unauthenticated"');
    expect(fake.predictions.size).toBe(0);
  });

  it('429 on create: the client retries at once by itself (no backoff), one prediction results', async () => {
    const { fake, replicate } = await setup();
    // An hour: had the client waited for it, this test would time out.
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 3600 }, times: 2 });
    const created = await replicate.predictions.create({ model: MODEL, input: { prompt: 'x' } });
    expect(fake.submits().map((c) => c.fault)).toEqual(['rate-limit', 'rate-limit', undefined]);
    expect(fake.submits().map((c) => c.retryAfterSeconds)).toEqual([3600, 3600, undefined]);
    expect([...fake.predictions.keys()]).toEqual([created.id]);
  });

  it('429 forms, checked with plain fetch: header only and body only', async () => {
    const { fake } = await setup();
    const post = () =>
      loopbackFetch(`${fake.url}/models/${MODEL}/predictions`, {
        method: 'POST',
        headers: { authorization: 'Bearer r8_test', 'content-type': 'application/json' },
        body: JSON.stringify({ input: { prompt: 'x' } }),
      });
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 7, where: 'header' } });
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 8, where: 'body' } });
    const h = await post();
    expect([h.status, h.headers.get('retry-after')]).toEqual([429, '7']);
    expect(await h.json()).toEqual({ title: 'Request was throttled', detail: 'Request was throttled.', status: 429 });
    const b = await post();
    expect([b.status, b.headers.get('retry-after')]).toEqual([429, null]);
    expect(await b.json()).toEqual({
      title: 'Request was throttled',
      detail: 'Request was throttled. Expected available in 8 seconds.',
      status: 429,
      retry_after: 8,
    });
    const ok = await post();
    expect(ok.status).toBe(201);
  });

  it('a 500 on GET is retried by the client itself; 404 for an unknown id', async () => {
    const { fake, replicate } = await setup({ latencyMs: 1 });
    const created = await replicate.predictions.create({ model: MODEL, input: { prompt: 'x' } });
    fake.inject({ on: 'status', fault: { kind: 'server-error', status: 503 } });
    const got = await replicate.predictions.get(created.id);
    expect(got.id).toBe(created.id);
    expect(fake.calls.filter((c) => c.path === `/v1/predictions/${created.id}`).map((c) => c.fault)).toEqual([
      'server-error',
      undefined,
    ]);
    expect(statusOf(await rejectionOf(replicate.predictions.get('nosuchprediction')))).toBe(404);
  });

  it('hang on create: close() releases the hanging request promptly', async () => {
    const { fake, replicate } = await setup();
    fake.inject({ on: 'submit', fault: { kind: 'hang' } });
    const pending = replicate.predictions
      .create({ model: MODEL, input: { prompt: 'x' } })
      .then((p: Prediction) => p.status, () => 'dropped');
    // Closed only once the create is being held, not after a guessed delay.
    await pollUntil(async () => fake.submits().filter((c) => c.fault === 'hang').length, (n) => n === 1);
    // The hang never ends by itself: close() resolving at all is what releases it (else the test times out).
    await fake.close();
    // The client may retry a dropped POST (network error) but the server is gone.
    expect(await pending).toBe('dropped');
    expect(fake.predictions.size).toBe(0);
  });

  it("'file' faults hit image downloads", async () => {
    const { fake, replicate } = await setup({ latencyMs: 1 });
    const created = await replicate.predictions.create({ model: MODEL, input: { prompt: 'x' } });
    const [url] = (await waitDone(replicate, created.id)).value.output as string[];
    fake.inject({ on: 'file', fault: { kind: 'server-error', status: 502 } });
    expect((await loopbackFetch(url!)).status).toBe(502);
    expect((await loopbackFetch(url!)).status).toBe(200);
  });
});

describe('fault rules', () => {
  const boom: Fault = { kind: 'server-error' };
  const isAny = (f: Fault): f is Fault => f !== undefined;

  it('times: applies to exactly the next N matching calls, only on its target', () => {
    const book = new FaultBook(1);
    book.inject({ on: 'status', fault: boom, times: 2 });
    expect(book.take('submit', isAny)).toBeUndefined();
    expect([1, 2, 3].map(() => book.take('status', isAny)?.kind)).toEqual(['server-error', 'server-error', undefined]);
    book.inject({ on: 'status', fault: boom }); // default times: 1
    expect([1, 2].map(() => book.take('status', isAny)?.kind)).toEqual(['server-error', undefined]);
  });

  it('probability: seeded, so the same seed gives the same schedule', () => {
    const schedule = (seed: number) => {
      const book = new FaultBook(seed);
      book.inject({ on: 'status', fault: boom, probability: 0.3 });
      return Array.from({ length: 200 }, () => (book.take('status', isAny) ? 1 : 0));
    };
    const a = schedule(42);
    expect(schedule(42)).toEqual(a);
    expect(schedule(43)).not.toEqual(a);
    const hits = a.reduce<number>((n, x) => n + x, 0);
    expect(hits).toBeGreaterThan(40); // ~60 expected
    expect(hits).toBeLessThan(80);
  });

  it('probability over HTTP: reproducible fault counts per seed (soak style)', async () => {
    const run = async (rngSeed: number) => {
      const { fake } = await setup({ rngSeed, latencyMs: 1 });
      const rule: FaultRule = { on: 'status', fault: { kind: 'server-error' }, probability: 0.25 };
      fake.inject(rule);
      const statuses: number[] = [];
      for (let i = 0; i < 40; i++) {
        const res = await loopbackFetch(`${fake.url}/predictions/nosuch`, { headers: { authorization: 'Bearer r8_test' } });
        statuses.push(res.status);
        await res.arrayBuffer();
      }
      expect(fake.calls.filter((c) => c.fault === 'server-error')).toHaveLength(statuses.filter((s) => s === 500).length);
      return statuses;
    };
    const first = await run(7);
    expect(await run(7)).toEqual(first);
    const faults = first.filter((s) => s === 500).length;
    expect(faults).toBeGreaterThan(0);
    expect(faults).toBeLessThan(40);
    expect(first.filter((s) => s !== 500).every((s) => s === 404)).toBe(true);
  });

  it('clearFaults drops every rule, probabilistic ones included', async () => {
    const { fake } = await setup();
    fake.inject({ on: 'file', fault: { kind: 'server-error' }, probability: 1 });
    expect((await loopbackFetch(`${fake.url.replace('/v1', '')}/files/x/0.webp`)).status).toBe(500);
    fake.clearFaults();
    expect((await loopbackFetch(`${fake.url.replace('/v1', '')}/files/x/0.webp`)).status).toBe(404);
  });
});
