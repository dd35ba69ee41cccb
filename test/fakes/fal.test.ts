// The real @fal-ai/client against the fal fake: proves the fake speaks the wire
// format the client expects, and that every fault is observable the way
// production code will meet it.
import { onCleanup, rejectionOf } from '../helpers.js';
import { describe, it, expect } from 'vitest';
import sharp from 'sharp';
import { ApiError, ValidationError, createFalClient, type FalClient } from '@fal-ai/client';
import { startFakeFal } from './fal.js';
import { loopbackFetch, pollUntil } from './http.js';

const ENDPOINT = 'fal-ai/flux/schnell';

async function setup(options: Parameters<typeof startFakeFal>[0] = {}, credentials = 'test-key') {
  const fake = await startFakeFal({ key: 'test-key', ...options });
  onCleanup(() => fake.close());
  const fal: FalClient = createFalClient({
    credentials,
    // Our code does this too: keep endpoint ids, swap the queue host.
    requestMiddleware: async (req) => ({ ...req, url: req.url.replace('https://queue.fal.run', fake.url) }),
    fetch: loopbackFetch,
  });
  return { fake, fal };
}

async function waitCompleted(fal: FalClient, requestId: string) {
  return pollUntil(
    () => fal.queue.status(ENDPOINT, { requestId, logs: true }),
    (s) => s.status === 'COMPLETED',
  );
}

describe('fal fake with the real @fal-ai/client', () => {
  it('submit → status → result → image bytes of the right size', async () => {
    // Long enough that the first polls surely see IN_QUEUE/IN_PROGRESS, even on a loaded machine.
    const { fake, fal } = await setup({ latencyMs: 300 });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, {
      input: { prompt: 'a red fox', num_images: 3, image_size: 'landscape_16_9', output_format: 'png', seed: 7 },
    });
    const { value: done, seen } = await waitCompleted(fal, requestId);
    // The client asked the owner/app path, without the endpoint's last segment.
    const statusCall = fake.calls.find((c) => c.path.endsWith('/status'));
    expect(statusCall?.path).toBe(`/fal-ai/flux/requests/${requestId}/status`);
    expect(statusCall?.query).toEqual({ logs: '1' });
    expect(seen.some((s) => s.status === 'IN_QUEUE' || s.status === 'IN_PROGRESS')).toBe(true);
    expect(done.status).toBe('COMPLETED');
    expect(Array.isArray((done as { logs: unknown }).logs)).toBe(true);

    const result = await fal.queue.result(ENDPOINT, { requestId });
    expect(result.requestId).toBe(requestId); // read from x-fal-request-id
    expect(result.data.seed).toBe(7);
    expect(result.data.prompt).toBe('a red fox');
    expect(result.data.has_nsfw_concepts).toEqual([false, false, false]);
    expect(result.data.images).toHaveLength(3);
    for (const img of result.data.images) {
      expect(img).toMatchObject({ width: 1024, height: 576, content_type: 'image/png' });
    }

    const res = await loopbackFetch(result.data.images[2]!.url);
    expect(res.headers.get('content-type')).toBe('image/png');
    const meta = await sharp(Buffer.from(await res.arrayBuffer())).metadata();
    expect(meta).toMatchObject({ format: 'png', width: 1024, height: 576 });

    const submit = fake.submits()[0]!;
    expect(submit.path).toBe('/fal-ai/flux/schnell');
    expect(submit.headers.authorization).toBe('Key test-key');
    expect(submit.body).toMatchObject({ prompt: 'a red fox', num_images: 3 });
    expect(fake.requests.get(requestId)?.state).toBe('COMPLETED');
  });

  it('defaults like flux: landscape_4_3, one image, jpeg, a random seed; submit answer carries queue urls', async () => {
    const { fake, fal } = await setup();
    const submitted = await fal.queue.submit(ENDPOINT, { input: { prompt: 'defaults' } });
    expect(submitted).toMatchObject({ status: 'IN_QUEUE', queue_position: expect.any(Number) });
    expect(submitted.status_url).toBe(`${fake.url}/fal-ai/flux/requests/${submitted.request_id}/status`);
    await waitCompleted(fal, submitted.request_id);
    const { data } = await fal.queue.result(ENDPOINT, { requestId: submitted.request_id });
    expect(data.images).toEqual([
      { url: expect.stringMatching(/\/0\.jpg$/), width: 1024, height: 768, content_type: 'image/jpeg' },
    ]);
    expect(Number.isInteger(data.seed)).toBe(true);
    const bytes = Buffer.from(await (await loopbackFetch(data.images[0]!.url)).arrayBuffer());
    expect(await sharp(bytes).metadata()).toMatchObject({ format: 'jpeg', width: 1024, height: 768 });
  });

  it('rejects num_images outside 1..4 and an empty prompt with a 422 ValidationError', async () => {
    const { fake, fal } = await setup();
    const err = await rejectionOf(fal.queue.submit(ENDPOINT, { input: { prompt: 'x', num_images: 5 } }));
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).status).toBe(422);
    expect((err as ValidationError).getFieldErrors('num_images')[0]).toMatchObject({ type: 'less_than_equal' });
    const empty = await rejectionOf(fal.queue.submit(ENDPOINT, { input: { prompt: '' } }));
    expect((empty as ValidationError).getFieldErrors('prompt')).toHaveLength(1);
    expect(fake.requests.size).toBe(0);
  });

  it('cancel: 202, then the request completes as cancelled and has no result', async () => {
    const { fake, fal } = await setup({ latencyMs: 5_000 });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, { input: { prompt: 'never mind' } });
    await fal.queue.cancel(ENDPOINT, { requestId });
    expect(fake.calls.at(-1)).toMatchObject({ method: 'PUT', path: `/fal-ai/flux/requests/${requestId}/cancel` });
    expect(fake.requests.get(requestId)?.cancelled).toBe(true);

    const status = await fal.queue.status(ENDPOINT, { requestId });
    expect(status).toMatchObject({ status: 'COMPLETED', error: 'Request was cancelled', logs: null });
    const err = await rejectionOf(fal.queue.result(ENDPOINT, { requestId }));
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError<unknown>).status).toBe(400);
  });

  it('cancel after completion answers 400 ALREADY_COMPLETED', async () => {
    const { fal } = await setup({ latencyMs: 1 });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, { input: { prompt: 'done already' } });
    await waitCompleted(fal, requestId);
    const err = await rejectionOf(fal.queue.cancel(ENDPOINT, { requestId }));
    expect((err as ApiError<unknown>).status).toBe(400);
    expect((err as ApiError<unknown>).body).toEqual({ status: 'ALREADY_COMPLETED' });
  });

  it("'failed': status COMPLETED with error, result is an ApiError 500 with detail", async () => {
    const { fake, fal } = await setup();
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'CUDA out of memory' } });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, { input: { prompt: 'doomed' } });
    expect(fake.submits()[0]?.fault).toBe('failed');
    const { value } = await waitCompleted(fal, requestId);
    expect(value).toMatchObject({ status: 'COMPLETED', error: 'CUDA out of memory', error_type: 'internal_server_error' });
    const err = await rejectionOf(fal.queue.result(ENDPOINT, { requestId }));
    expect(err).toBeInstanceOf(ApiError);
    expect(err).not.toBeInstanceOf(ValidationError);
    expect((err as ApiError<unknown>).status).toBe(500);
    expect((err as ApiError<unknown>).requestId).toBe(requestId);
    expect((err as ApiError<{ detail: { msg: string }[] }>).body.detail[0]?.msg).toBe('CUDA out of memory');
  });

  it("'partial' on result: fewer images than asked", async () => {
    const { fake, fal } = await setup({ latencyMs: 1 });
    fake.inject({ on: 'result', fault: { kind: 'partial', images: 1 } });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, { input: { prompt: 'four please', num_images: 4 } });
    await waitCompleted(fal, requestId);
    const { data } = await fal.queue.result(ENDPOINT, { requestId });
    expect(data.images).toHaveLength(1);
    expect(data.has_nsfw_concepts).toEqual([false]);
    // It sticks: asking again gives the same answer.
    expect((await fal.queue.result(ENDPOINT, { requestId })).data.images).toHaveLength(1);
  });

  it('a prompt with the NSFW word is flagged and its images are black', async () => {
    const { fal } = await setup({ latencyMs: 1 });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, {
      input: { prompt: 'something NSFW-TEST', num_images: 2, image_size: 'square', output_format: 'png' },
    });
    await waitCompleted(fal, requestId);
    const { data } = await fal.queue.result(ENDPOINT, { requestId });
    expect(data.has_nsfw_concepts).toEqual([true, true]);
    const bytes = Buffer.from(await (await loopbackFetch(data.images[0]!.url)).arrayBuffer());
    const stats = await sharp(bytes).stats();
    expect(stats.channels.every((c) => c.max === 0)).toBe(true);
  });

  it('a wrong key gets 401 with detail, and no request is created', async () => {
    const { fake, fal } = await setup({}, 'wrong-key');
    const err = await rejectionOf(fal.queue.submit(ENDPOINT, { input: { prompt: 'hi' } }));
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError<unknown>).status).toBe(401);
    expect((err as ApiError<unknown>).body).toEqual({ detail: 'No user found for Key ID and Secret' });
    expect(fake.requests.size).toBe(0);
    expect(fake.submits()).toHaveLength(1); // one try: 401 is not retried
  });

  it("the 'unauthorized' fault answers 401 even with the right key", async () => {
    const { fake, fal } = await setup();
    fake.inject({ on: 'status', fault: { kind: 'unauthorized' } });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, { input: { prompt: 'hi' } });
    const err = await rejectionOf(fal.queue.status(ENDPOINT, { requestId }));
    expect((err as ApiError<unknown>).status).toBe(401);
    expect(fake.calls.at(-1)?.fault).toBe('unauthorized');
  });

  it('429 on submit: the client ignores Retry-After, backs off by its own ~1 s and retries once; no job for the throttled call', async () => {
    const { fake, fal } = await setup();
    // An hour: had the client waited for it, this test would time out.
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 3600 } });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, { input: { prompt: 'patience' } });
    const [throttled, retry] = fake.submits();
    expect([throttled?.fault, retry?.fault]).toEqual(['rate-limit', undefined]);
    expect(throttled?.retryAfterSeconds).toBe(3600);
    // Its own backoff: 1 s − 25 % jitter at least, on the fake's recorded arrivals (1 ms for clock rounding).
    expect(retry!.at - throttled!.at).toBeGreaterThanOrEqual(749);
    expect([...fake.requests.keys()]).toEqual([requestId]);
  });

  it('429 forms, checked with plain fetch: header only, body only, both', async () => {
    const { fake } = await setup();
    const post = () =>
      loopbackFetch(`${fake.url}/${ENDPOINT}`, {
        method: 'POST',
        headers: { authorization: 'Key test-key', 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'x' }),
      });
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 3, where: 'header' } });
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 4, where: 'body' } });
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 5 } });

    const h = await post();
    expect([h.status, h.headers.get('retry-after')]).toEqual([429, '3']);
    expect(await h.json()).not.toHaveProperty('retry_after');
    const b = await post();
    expect([b.status, b.headers.get('retry-after')]).toEqual([429, null]);
    expect(await b.json()).toMatchObject({ retry_after: 4 });
    const both = await post();
    expect([both.status, both.headers.get('retry-after')]).toEqual([429, '5']);
    expect(await both.json()).toMatchObject({ retry_after: 5 });
    expect((await post()).status).toBe(200); // rules used up
    expect(fake.requests.size).toBe(1);
  });

  it('server-error on result (500 is not retried by result()) and 404 for an unknown id', async () => {
    const { fake, fal } = await setup({ latencyMs: 1 });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, { input: { prompt: 'x' } });
    await waitCompleted(fal, requestId);
    fake.inject({ on: 'result', fault: { kind: 'server-error' } });
    const err = await rejectionOf(fal.queue.result(ENDPOINT, { requestId }));
    expect((err as ApiError<unknown>).status).toBe(500);
    expect((err as ApiError<unknown>).body).toEqual({ detail: 'Internal Server Error' });
    expect((await fal.queue.result(ENDPOINT, { requestId })).data.images).toHaveLength(1);

    const missing = await rejectionOf(fal.queue.status(ENDPOINT, { requestId: 'no-such-id' }));
    expect((missing as ApiError<unknown>).status).toBe(404);
  });

  it('hang: the client gives up on its own signal; close() releases the hanging socket', async () => {
    const { fake, fal } = await setup({ latencyMs: 1 });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, { input: { prompt: 'x' } });
    fake.inject({ on: 'status', fault: { kind: 'hang' }, times: 2 });
    const err = await rejectionOf(fal.queue.status(ENDPOINT, { requestId, abortSignal: AbortSignal.timeout(100) }));
    expect((err as Error).name).toBe('TimeoutError');

    const pending = loopbackFetch(`${fake.url}/fal-ai/flux/requests/${requestId}/status`).then(
      () => 'answered',
      () => 'dropped',
    );
    // Closed only once the second hang is being held, not after a guessed delay.
    await pollUntil(async () => fake.calls.filter((c) => c.fault === 'hang').length, (n) => n === 2);
    // The hang never ends by itself: close() resolving at all is what releases it (else the test times out).
    await fake.close();
    expect(await pending).toBe('dropped');
    expect(fake.calls.filter((c) => c.fault === 'hang')).toHaveLength(2);
  });

  it('status stream, read raw: text/event-stream, one `data: {json}` per status change, closed after COMPLETED', async () => {
    const { fake, fal } = await setup({ latencyMs: 300 });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, { input: { prompt: 'stream me' } });
    const res = await loopbackFetch(`${fake.url}/fal-ai/flux/requests/${requestId}/status/stream?logs=0`, {
      headers: { authorization: 'Key test-key', accept: 'text/event-stream' },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    expect(res.headers.get('x-fal-request-id')).toBe(requestId);
    // text() resolves only when the server ends the response: the stream closes by itself.
    const text = await res.text();
    const events = text.split('\n\n').filter(Boolean);
    for (const event of events) expect(event).toMatch(/^data: \{.*\}$/);
    const statuses = events.map((e) => JSON.parse(e.slice('data: '.length)) as { status: string; request_id: string });
    expect(statuses.map((s) => s.status)).toEqual(['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']);
    expect(statuses.every((s) => s.request_id === requestId)).toBe(true);
    expect(fake.statusStreams()).toBe(1);
    expect(fake.statusPolls()).toBe(0);
  });

  it('status stream through the client: queue.streamStatus goes through the middleware and ends at COMPLETED', async () => {
    const { fake, fal } = await setup({ latencyMs: 150 });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, { input: { prompt: 'stream me' } });
    const stream = await fal.queue.streamStatus(ENDPOINT, { requestId, logs: true });
    const seen: string[] = [];
    stream.on('data', (s) => seen.push(s.status));
    const last = await stream.done();
    expect(last.status).toBe('COMPLETED');
    // Each change once, in order; a loaded machine may wake the fake's timer after the running phase
    // (the raw-stream test above checks that all three are sent).
    expect(seen[0]).toBe('IN_QUEUE');
    expect(seen.at(-1)).toBe('COMPLETED');
    expect(['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED'].filter((s) => seen.includes(s))).toEqual(seen);
    const call = fake.calls.find((c) => c.path.endsWith('/status/stream'));
    expect(call?.path).toBe(`/fal-ai/flux/requests/${requestId}/status/stream`);
    expect(call?.query).toEqual({ logs: '1' });
    expect(call?.headers.authorization).toBe('Key test-key');
    // The client sends its default Accept and the stream's together.
    expect(call?.headers.accept).toContain('text/event-stream');
  });

  it('status stream of a cancelled request: COMPLETED with the error, as soon as the cancel lands', async () => {
    const { fal } = await setup({ latencyMs: 60_000 });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, { input: { prompt: 'never mind' } });
    const stream = await fal.queue.streamStatus(ENDPOINT, { requestId });
    const first = new Promise((resolve) => stream.on('data', resolve));
    await first;
    await fal.queue.cancel(ENDPOINT, { requestId });
    // With a minute of latency, only the cancel can end the stream before the test times out.
    expect(await stream.done()).toMatchObject({ status: 'COMPLETED', error: 'Request was cancelled' });
  });

  it('dropStatusStreams: the socket is destroyed after the given events, the next stream runs to the end', async () => {
    const { fake, fal } = await setup({ latencyMs: 600 });
    const { request_id: requestId } = await fal.queue.submit(ENDPOINT, { input: { prompt: 'flaky' } });
    fake.dropStatusStreams({ afterEvents: 1 });
    const dropped = await fal.queue.streamStatus(ENDPOINT, { requestId });
    const seen: string[] = [];
    dropped.on('data', (s) => seen.push(s.status));
    expect(await rejectionOf(dropped.done())).toBeInstanceOf(Error);
    expect(seen).not.toContain('COMPLETED');
    expect(fake.requests.get(requestId)?.state).not.toBe('COMPLETED');

    const whole = await fal.queue.streamStatus(ENDPOINT, { requestId });
    expect((await whole.done()).status).toBe('COMPLETED');
    expect(fake.statusStreams()).toBe(2);
  });

  it('the loopback-only fetch refuses real hosts', async () => {
    const fal = createFalClient({ credentials: 'k', fetch: loopbackFetch }); // no middleware: real URL
    const err = await rejectionOf(fal.queue.submit(ENDPOINT, { input: { prompt: 'x' } }));
    expect((err as Error).message).toMatch(/refusing to reach queue\.fal\.run/);
  });
});
