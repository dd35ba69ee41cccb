import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { onCleanup, rejectionOf } from '../helpers.js';
import { startFakeS3, type FakeS3 } from './s3.js';

async function fake(): Promise<FakeS3> {
  const s3 = await startFakeS3();
  onCleanup(() => s3.close());
  return s3;
}

/** The real SDK client, configured as src/store/s3.ts configures it. */
function client(s3: FakeS3, config: Partial<S3ClientConfig> = {}): S3Client {
  const made = new S3Client({
    endpoint: s3.url,
    forcePathStyle: true,
    region: s3.region,
    credentials: s3.credentials,
    maxAttempts: 3,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...config,
  });
  onCleanup(() => made.destroy());
  return made;
}

interface S3Failure {
  name: string;
  $metadata: { httpStatusCode?: number; attempts?: number };
}

describe('fake S3, through @aws-sdk/client-s3', () => {
  it('stores, reads, heads, copies and deletes objects, every request signed with the configured key', async () => {
    const s3 = await fake();
    const sdk = client(s3);
    const bytes = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 3, 250, 251]);
    await sdk.send(new HeadBucketCommand({ Bucket: 'art' }));
    await sdk.send(new PutObjectCommand({ Bucket: 'art', Key: 'jobs/j-1/pending-review/001.png', Body: bytes, ContentType: 'image/png' }));
    expect(s3.object('jobs/j-1/pending-review/001.png')).toMatchObject({ body: bytes, contentType: 'image/png' });

    const got = await sdk.send(new GetObjectCommand({ Bucket: 'art', Key: 'jobs/j-1/pending-review/001.png' }));
    expect(Buffer.from(await got.Body!.transformToByteArray())).toEqual(bytes);
    expect(got.ContentType).toBe('image/png');
    const head = await sdk.send(new HeadObjectCommand({ Bucket: 'art', Key: 'jobs/j-1/pending-review/001.png' }));
    expect(head.ContentLength).toBe(bytes.length);

    const copied = await sdk.send(
      new CopyObjectCommand({ Bucket: 'art', Key: 'jobs/j-1/approved/001.png', CopySource: 'art/jobs/j-1/pending-review/001.png' }),
    );
    expect(copied.CopyObjectResult?.ETag).toBe(head.ETag);
    await sdk.send(new DeleteObjectCommand({ Bucket: 'art', Key: 'jobs/j-1/pending-review/001.png' }));
    expect(s3.keys()).toEqual(['jobs/j-1/approved/001.png']);
    expect(s3.object('jobs/j-1/approved/001.png')).toMatchObject({ body: bytes, contentType: 'image/png' });

    expect(s3.calls.map((call) => [call.operation, call.status])).toEqual([
      ['HeadBucket', 200],
      ['PutObject', 200],
      ['GetObject', 200],
      ['HeadObject', 200],
      ['CopyObject', 200],
      ['DeleteObject', 204],
    ]);
    expect(s3.calls.find((call) => call.operation === 'CopyObject')?.copySource).toBe('art/jobs/j-1/pending-review/001.png');
    expect(new Set(s3.calls.map((call) => call.accessKeyId))).toEqual(new Set([s3.credentials.accessKeyId]));
  });

  it('keys with spaces and reserved characters survive the signature and the copy source encoding', async () => {
    const s3 = await fake();
    const sdk = client(s3);
    const key = "odd keys/a b+c(1)!*'.png";
    await sdk.send(new PutObjectCommand({ Bucket: 'art', Key: key, Body: Buffer.from('x') }));
    await sdk.send(new CopyObjectCommand({ Bucket: 'art', Key: 'copy.png', CopySource: `art/${key.split('/').map(encodeURIComponent).join('/')}` }));
    expect(s3.keys()).toEqual(['copy.png', key]);
  });

  it('answers a missing key as S3 does: NoSuchKey with an XML body to a GET, a bare 404 (NotFound) to a HEAD', async () => {
    const s3 = await fake();
    const sdk = client(s3);
    const get = (await rejectionOf(sdk.send(new GetObjectCommand({ Bucket: 'art', Key: 'nothing.png' })))) as S3Failure & { Code?: string };
    expect(get.name).toBe('NoSuchKey');
    expect(get.$metadata.httpStatusCode).toBe(404);
    const head = (await rejectionOf(sdk.send(new HeadObjectCommand({ Bucket: 'art', Key: 'nothing.png' })))) as S3Failure;
    expect(head.name).toBe('NotFound');
    const copy = (await rejectionOf(sdk.send(new CopyObjectCommand({ Bucket: 'art', Key: 'b.png', CopySource: 'art/nothing.png' })))) as S3Failure;
    expect(copy.name).toBe('NoSuchKey');
    const bucket = (await rejectionOf(sdk.send(new GetObjectCommand({ Bucket: 'other', Key: 'a.png' })))) as S3Failure;
    expect(bucket.name).toBe('NoSuchBucket');
    // Deleting what is not there succeeds, as on S3.
    await sdk.send(new DeleteObjectCommand({ Bucket: 'art', Key: 'nothing.png' }));
    expect(s3.calls.at(-1)).toMatchObject({ operation: 'DeleteObject', status: 204 });
  });

  it('refuses a wrong access key (InvalidAccessKeyId), a wrong secret (SignatureDoesNotMatch) and an unsigned request (AccessDenied), storing nothing', async () => {
    const s3 = await fake();
    const put = (sdk: S3Client) => sdk.send(new PutObjectCommand({ Bucket: 'art', Key: 'a.png', Body: Buffer.from('a') }));
    const wrongKey = (await rejectionOf(put(client(s3, { credentials: { accessKeyId: 'AKIAWRONG', secretAccessKey: s3.credentials.secretAccessKey } })))) as S3Failure;
    expect(wrongKey.name).toBe('InvalidAccessKeyId');
    expect(wrongKey.$metadata.httpStatusCode).toBe(403);
    const wrongSecret = (await rejectionOf(put(client(s3, { credentials: { ...s3.credentials, secretAccessKey: 'not-the-secret' } })))) as S3Failure;
    expect(wrongSecret.name).toBe('SignatureDoesNotMatch');
    const wrongRegion = (await rejectionOf(put(client(s3, { region: 'eu-west-1' })))) as S3Failure;
    expect(wrongRegion.name).toBe('AuthorizationHeaderMalformed');

    const unsigned = await fetch(`${s3.url}/art/a.png`, { method: 'PUT', body: 'a' });
    expect(unsigned.status).toBe(403);
    expect(await unsigned.text()).toContain('<Code>AccessDenied</Code>');
    expect(s3.keys()).toEqual([]);
    expect(s3.calls.map((call) => call.code)).toEqual(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AuthorizationHeaderMalformed', 'AccessDenied']);
  });

  it('checks the signature over the request as sent: a body or a key changed after signing is refused', async () => {
    const s3 = await fake();
    const sdk = client(s3);
    // After signing (the deserialize step wraps the send itself), as a proxy in between would.
    sdk.middlewareStack.add(
      (next) => async (args) => {
        const request = args.request as { body?: unknown; path?: string };
        if (request.body === 'signed') request.body = 'SIGNED'; // same length: only the bytes differ
        if (request.path === '/art/signed-key.png') request.path = '/art/other-key.png';
        return next(args);
      },
      { step: 'deserialize', name: 'tamper' },
    );
    const body = (await rejectionOf(sdk.send(new PutObjectCommand({ Bucket: 'art', Key: 'a.png', Body: 'signed' })))) as S3Failure;
    expect(body.name).toBe('XAmzContentSHA256Mismatch');
    const key = (await rejectionOf(sdk.send(new PutObjectCommand({ Bucket: 'art', Key: 'signed-key.png', Body: 'x' })))) as S3Failure;
    expect(key.name).toBe('SignatureDoesNotMatch');
    expect(s3.keys()).toEqual([]);
  });

  it('injects 503 SlowDown and 500 InternalError; the SDK retries them up to its 3 attempts', async () => {
    const s3 = await fake();
    const sdk = client(s3);
    s3.inject({ on: 'PutObject', status: 503 });
    await sdk.send(new PutObjectCommand({ Bucket: 'art', Key: 'a.png', Body: Buffer.from('a') }));
    s3.inject({ on: 'GetObject', status: 500 });
    const got = await sdk.send(new GetObjectCommand({ Bucket: 'art', Key: 'a.png' }));
    expect(got.$metadata.attempts).toBe(2);
    expect(s3.calls.map((call) => [call.operation, call.status, call.code])).toEqual([
      ['PutObject', 503, 'SlowDown'],
      ['PutObject', 200, undefined],
      ['GetObject', 500, 'InternalError'],
      ['GetObject', 200, undefined],
    ]);

    s3.inject({ on: 'HeadObject', status: 503, times: 3 });
    const exhausted = (await rejectionOf(sdk.send(new HeadObjectCommand({ Bucket: 'art', Key: 'a.png' })))) as S3Failure;
    expect(exhausted.$metadata.httpStatusCode).toBe(503);
    expect(exhausted.$metadata.attempts).toBe(3);
    expect(s3.calls.filter((call) => call.operation === 'HeadObject').map((call) => call.status)).toEqual([503, 503, 503]);
  });
});
