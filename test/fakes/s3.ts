// A fake of an S3-compatible object store (path-style, as R2 and MinIO are addressed), speaking the
// wire format @aws-sdk/client-s3 sends and reads: PutObject, GetObject, HeadObject, CopyObject
// (x-amz-copy-source), DeleteObject and HeadBucket, XML error bodies (<Error><Code>NoSuchKey</Code>…).
//
// Every request must be signed with AWS Signature Version 4 for one of the fake's access keys: the
// signature is recomputed from the request (canonical request, string to sign, signing key), so a
// wrong key id is 403 InvalidAccessKeyId, a wrong secret 403 SignatureDoesNotMatch, a body that is
// not the one signed 400 XAmzContentSHA256Mismatch. Faults (503 SlowDown, 500 InternalError) are
// injected per operation, to show the client's retries.
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { listenOnLoopback } from './http.js';

export type S3Operation = 'PutObject' | 'GetObject' | 'HeadObject' | 'CopyObject' | 'DeleteObject' | 'HeadBucket' | 'Unsupported';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

export interface FakeS3Options {
  /** @default 'art' */
  bucket?: string;
  /** @default 'us-east-1' */
  region?: string;
  /** the key pairs accepted @default one random pair, in `credentials` */
  credentials?: S3Credentials[];
}

export interface S3Call {
  operation: S3Operation;
  method: string;
  /** the object key (decoded), '' for the bucket itself */
  key: string;
  /** the access key id the request was signed with, if it was */
  accessKeyId?: string;
  status: number;
  /** the error code answered, if any (NoSuchKey, SlowDown …) */
  code?: string;
  /** `x-amz-copy-source`, decoded: `bucket/key` */
  copySource?: string;
  at: number;
}

export interface S3FaultRule {
  /** @default every operation */
  on?: S3Operation;
  /** the answer: 503 SlowDown or 500 InternalError */
  status: 500 | 503;
  /** applies to the next N matching requests @default 1 */
  times?: number;
}

export interface StoredObject {
  body: Buffer;
  contentType: string;
  etag: string;
  lastModified: Date;
}

export interface FakeS3 {
  /** the endpoint to give the client (`S3_ENDPOINT`) */
  url: string;
  bucket: string;
  region: string;
  /** the first accepted key pair */
  credentials: S3Credentials;
  /** every request, in arrival order */
  calls: S3Call[];
  /** keys in the bucket, sorted */
  keys(prefix?: string): string[];
  object(key: string): StoredObject | undefined;
  /** puts an object directly, as another writer of the bucket would */
  put(key: string, body: Buffer, contentType?: string): void;
  inject(rule: S3FaultRule): void;
  close(): Promise<void>;
}

const XML = 'application/xml';

/** What each error code answers with, as S3 documents it. */
const ERRORS: Record<string, { status: number; message: string }> = {
  AccessDenied: { status: 403, message: 'Access Denied' },
  AuthorizationHeaderMalformed: { status: 400, message: 'The authorization header is malformed.' },
  InternalError: { status: 500, message: 'We encountered an internal error. Please try again.' },
  InvalidAccessKeyId: { status: 403, message: 'The AWS Access Key Id you provided does not exist in our records.' },
  InvalidRequest: { status: 400, message: 'Invalid Request' },
  NoSuchBucket: { status: 404, message: 'The specified bucket does not exist' },
  NoSuchKey: { status: 404, message: 'The specified key does not exist.' },
  NotImplemented: { status: 501, message: 'A header you provided implies functionality that is not implemented' },
  SignatureDoesNotMatch: { status: 403, message: 'The request signature we calculated does not match the signature you provided.' },
  SlowDown: { status: 503, message: 'Please reduce your request rate.' },
  XAmzContentSHA256Mismatch: { status: 400, message: "The provided 'x-amz-content-sha256' header does not match what was computed." },
};

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');
const hmac = (key: string | Buffer, data: string): Buffer => createHmac('sha256', key).update(data).digest();

/** RFC 3986 encoding, as SigV4 wants it for query strings (encodeURIComponent leaves !'()* alone). */
const encodeRfc3986 = (value: string): string =>
  encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

const escapeXml = (value: string): string =>
  value.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);

function operationOf(method: string, key: string, headers: IncomingMessage['headers']): S3Operation {
  if (key === '') return method === 'HEAD' ? 'HeadBucket' : 'Unsupported';
  if (method === 'PUT') return headers['x-amz-copy-source'] ? 'CopyObject' : 'PutObject';
  if (method === 'GET') return 'GetObject';
  if (method === 'HEAD') return 'HeadObject';
  if (method === 'DELETE') return 'DeleteObject';
  return 'Unsupported';
}

/**
 * Checks a request's SigV4 signature as S3 does; returns the error code to answer, or the access key
 * id it was signed with. The canonical URI is the path as sent (S3 signs it encoded once, unnormalised).
 */
function verify(
  req: IncomingMessage,
  body: Buffer,
  secrets: Map<string, string>,
  region: string,
): { code: string; accessKeyId?: string } | { accessKeyId: string } {
  const auth = req.headers.authorization;
  if (!auth) return { code: 'AccessDenied' };
  const match = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
  if (!match) return { code: 'AuthorizationHeaderMalformed' };
  const [, accessKeyId, day, scopeRegion, signedHeaders, signature] = match as unknown as [string, string, string, string, string, string];
  const secret = secrets.get(accessKeyId);
  if (secret === undefined) return { code: 'InvalidAccessKeyId', accessKeyId };
  if (scopeRegion !== region) return { code: 'AuthorizationHeaderMalformed', accessKeyId };
  const amzDate = String(req.headers['x-amz-date'] ?? '');
  if (!amzDate.startsWith(day)) return { code: 'AuthorizationHeaderMalformed', accessKeyId };
  const payloadHash = String(req.headers['x-amz-content-sha256'] ?? '');
  if (payloadHash !== 'UNSIGNED-PAYLOAD' && payloadHash !== sha256(body)) return { code: 'XAmzContentSHA256Mismatch', accessKeyId };

  const [rawPath = '/', rawQuery = ''] = (req.url ?? '/').split('?', 2) as [string, string?];
  const query = rawQuery
    .split('&')
    .filter(Boolean)
    .map((pair) => {
      const at = pair.indexOf('=');
      const [name, value] = at < 0 ? [pair, ''] : [pair.slice(0, at), pair.slice(at + 1)];
      return [encodeRfc3986(decodeURIComponent(name.replace(/\+/g, ' '))), encodeRfc3986(decodeURIComponent(value.replace(/\+/g, ' ')))] as const;
    })
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join('&');
  const names = signedHeaders.split(';');
  const headerLines = names.map((name) => {
    const value = req.headers[name];
    const text = Array.isArray(value) ? value.join(',') : (value ?? '');
    return `${name}:${text.trim().replace(/\s+/g, ' ')}\n`;
  });
  const canonical = [req.method, rawPath, query, headerLines.join(''), signedHeaders, payloadHash].join('\n');
  const scope = `${day}/${scopeRegion}/s3/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, day), scopeRegion), 's3'), 'aws4_request');
  const expected = createHmac('sha256', key).update(stringToSign).digest('hex');
  if (expected !== signature) return { code: 'SignatureDoesNotMatch', accessKeyId };
  return { accessKeyId };
}

export async function startFakeS3(options: FakeS3Options = {}): Promise<FakeS3> {
  const bucket = options.bucket ?? 'art';
  const region = options.region ?? 'us-east-1';
  const pairs = options.credentials ?? [{ accessKeyId: `AKIA${randomBytes(8).toString('hex').toUpperCase()}`, secretAccessKey: randomBytes(20).toString('base64') }];
  const secrets = new Map(pairs.map((pair) => [pair.accessKeyId, pair.secretAccessKey]));
  const objects = new Map<string, StoredObject>();
  const calls: S3Call[] = [];
  let faults: (S3FaultRule & { remaining: number })[] = [];

  const store = (key: string, body: Buffer, contentType: string): StoredObject => {
    const object = { body, contentType, etag: `"${createHash('md5').update(body).digest('hex')}"`, lastModified: new Date() };
    objects.set(key, object);
    return object;
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const method = (req.method ?? 'GET').toUpperCase();
    const rawPath = (req.url ?? '/').split('?')[0]!;
    const [, bucketName = '', ...rest] = rawPath.split('/').map((segment) => decodeURIComponent(segment));
    const key = rest.join('/');
    const operation = operationOf(method, key, req.headers);
    const call: S3Call = { operation, method, key, status: 0, at: Date.now() };
    calls.push(call);

    const fail = (code: string, resource = rawPath): void => {
      const { status, message } = ERRORS[code]!;
      call.status = status;
      call.code = code;
      const requestId = randomBytes(8).toString('hex').toUpperCase();
      // A HEAD answer has no body: the client knows the error by its status alone.
      if (method === 'HEAD') {
        res.writeHead(status, { 'x-amz-request-id': requestId });
        res.end();
        return;
      }
      const xml = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${escapeXml(message)}</Message><Resource>${escapeXml(resource)}</Resource><RequestId>${requestId}</RequestId></Error>`;
      res.writeHead(status, { 'content-type': XML, 'content-length': Buffer.byteLength(xml), 'x-amz-request-id': requestId });
      res.end(xml);
    };
    const ok = (status: number, headers: Record<string, string | number> = {}, payload?: Buffer | string): void => {
      call.status = status;
      res.writeHead(status, { 'x-amz-request-id': randomBytes(8).toString('hex').toUpperCase(), ...headers });
      res.end(payload);
    };

    const signed = verify(req, body, secrets, region);
    if (signed.accessKeyId !== undefined) call.accessKeyId = signed.accessKeyId;
    if ('code' in signed) return fail(signed.code);
    const fault = faults.find((rule) => rule.remaining > 0 && (rule.on === undefined || rule.on === operation));
    if (fault) {
      fault.remaining -= 1;
      faults = faults.filter((rule) => rule.remaining > 0);
      return fail(fault.status === 503 ? 'SlowDown' : 'InternalError');
    }
    if (bucketName !== bucket) return fail('NoSuchBucket');
    // Chunked uploads (aws-chunked, trailing checksums) are not spoken here: the store asks for none.
    if (String(req.headers['content-encoding'] ?? '').includes('aws-chunked')) return fail('NotImplemented');

    switch (operation) {
      case 'HeadBucket':
        return ok(200, { 'x-amz-bucket-region': region });
      case 'PutObject': {
        const object = store(key, body, String(req.headers['content-type'] ?? 'binary/octet-stream'));
        return ok(200, { etag: object.etag });
      }
      case 'CopyObject': {
        const source = decodeURIComponent(String(req.headers['x-amz-copy-source']).replace(/^\//, '').split('?')[0]!);
        call.copySource = source;
        const slash = source.indexOf('/');
        const [fromBucket, fromKey] = [source.slice(0, slash), source.slice(slash + 1)];
        if (slash < 0 || fromBucket !== bucket) return fail(slash < 0 ? 'InvalidRequest' : 'NoSuchBucket');
        const original = objects.get(fromKey);
        if (!original) return fail('NoSuchKey', `/${source}`);
        const copy = store(key, original.body, original.contentType);
        const xml = `<?xml version="1.0" encoding="UTF-8"?>\n<CopyObjectResult><LastModified>${copy.lastModified.toISOString()}</LastModified><ETag>${escapeXml(copy.etag)}</ETag></CopyObjectResult>`;
        return ok(200, { 'content-type': XML, 'content-length': Buffer.byteLength(xml) }, xml);
      }
      case 'GetObject':
      case 'HeadObject': {
        const object = objects.get(key);
        if (!object) return fail('NoSuchKey');
        const headers = {
          'content-type': object.contentType,
          'content-length': object.body.length,
          etag: object.etag,
          'last-modified': object.lastModified.toUTCString(),
        };
        return ok(200, headers, operation === 'GetObject' ? object.body : undefined);
      }
      case 'DeleteObject':
        objects.delete(key);
        return ok(204);
      default:
        return fail('NotImplemented');
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      // A bug in the fake should be a loud 500 with its stack, not a hang.
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`fake S3 bug: ${error instanceof Error ? error.stack : String(error)}`);
    });
  });
  server.keepAliveTimeout = 1000;
  const port = await listenOnLoopback(server);

  return {
    url: `http://127.0.0.1:${port}`,
    bucket,
    region,
    credentials: pairs[0]!,
    calls,
    keys: (prefix = '') => [...objects.keys()].filter((key) => key.startsWith(prefix)).sort(),
    object: (key) => objects.get(key),
    put(key, body, contentType = 'binary/octet-stream') {
      store(key, body, contentType);
    },
    inject(rule) {
      faults.push({ ...rule, remaining: rule.times ?? 1 });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
