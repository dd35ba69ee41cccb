// A real S3-compatible server for tests: s3rver (a Node implementation of the S3 REST API, storing
// objects in a folder) on 127.0.0.1, port 0, in a temporary folder of its own, with one bucket
// created through the API as a user would. Unlike the SigV4-checking fake in s3.ts it speaks
// multipart uploads and serves presigned GETs; it does not verify V4 signatures (only that the access
// key is its own), which the fake covers.
//
// `client` is a separate S3Client, for a test to look into the bucket (ListObjectsV2, GetObject)
// without going through the store under test.
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, NoSuchKey, S3Client } from '@aws-sdk/client-s3';

/** The part of s3rver's API used here (it ships no types). */
interface S3rverInstance {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
  httpServer?: Server;
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverInstance;

export interface S3Server {
  /** the endpoint to give a client (`S3_ENDPOINT`) */
  url: string;
  bucket: string;
  region: string;
  /** s3rver's own account: the only key it knows */
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** a client of the test's own, straight to the server */
  client: S3Client;
  /** keys in the bucket under `prefix`, sorted */
  keys(prefix?: string): Promise<string[]>;
  /** an object's bytes and content type, undefined when there is none */
  object(key: string): Promise<{ body: Buffer; contentType: string | undefined } | undefined>;
  close(): Promise<void>;
}

const S3rver = createRequire(import.meta.url)('s3rver') as S3rverClass;

export async function startS3Server(options: { bucket?: string; region?: string } = {}): Promise<S3Server> {
  // s3rver wants bucket names of 3 characters or more.
  const bucket = options.bucket ?? 'art';
  const region = options.region ?? 'us-east-1';
  const directory = await mkdtemp(path.join(os.tmpdir(), 'af-s3rver-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, resetOnClose: true });
  const { port } = await server.run();
  const url = `http://127.0.0.1:${port}`;
  const credentials = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
  const client = new S3Client({
    region,
    endpoint: url,
    forcePathStyle: true,
    credentials,
    // s3rver does not read aws-chunked bodies with checksum trailers (the SDK's default since 2025).
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  await client.send(new CreateBucketCommand({ Bucket: bucket }));

  return {
    url,
    bucket,
    region,
    credentials,
    client,
    async keys(prefix = '') {
      const keys: string[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
        for (const item of page.Contents ?? []) if (item.Key) keys.push(item.Key);
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return keys.sort();
    },
    async object(key) {
      try {
        const answer = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return { body: Buffer.from(await answer.Body!.transformToByteArray()), contentType: answer.ContentType };
      } catch (error) {
        if (error instanceof NoSuchKey) return undefined;
        throw error;
      }
    },
    async close() {
      client.destroy();
      // Keep-alive connections of the clients under test would hold close() open.
      server.httpServer?.closeAllConnections();
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}
