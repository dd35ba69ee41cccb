// A fake of OpenAI's Images API: image generation only, for gpt-image-1 and dall-e-3.
//
// Point the real `openai` client at it with `baseURL: fake.url` (which ends in /v1). Wire format:
//   POST /v1/images/generations  {model, prompt, n?, size?, quality?, output_format?, output_compression?,
//                                 response_format?}  (Authorization: Bearer <key>)
//     → 200 {created, data: [{b64_json, revised_prompt?}], …} after `latencyMs` (a synchronous API: the
//       images come back in the answer; there is nothing to poll)
// gpt-image-1: n 1–10, size 1024x1024 | 1536x1024 | 1024x1536 | auto, output_format png | jpeg | webp,
// always base64 (`response_format` is refused as an unknown parameter), `usage` in tokens, no revised prompt.
// dall-e-3: n 1 only, size 1024x1024 | 1792x1024 | 1024x1792, `response_format: 'b64_json'` for base64 (a
// `url` otherwise, which this fake does not serve), `output_format` refused, a `revised_prompt` per image.
// Errors are OpenAI's body `{error: {message, type, param, code}}`; a 429 says Retry-After (seconds) and
// retry-after-ms. A prompt containing `moderationWord` is refused 400 as the safety system refuses it
// (`moderation_blocked` for GPT image models, `content_policy_violation` for DALL·E 3).
// Faults (target 'submit'): rate-limit, server-error, hang, unauthorized, failed (500 server_error with the
// message), partial (fewer images than n).
import type { ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import {
  type ErrorDialect,
  type FakeCommon,
  type FakeOptions,
  type ParsedRequest,
  type RecordedCall,
  isGenerationFault,
  isHttpFault,
  plainObject,
  sendJson,
  startCore,
} from './http.js';
import { fakeImage, type FakeImageFormat } from './png.js';

export type { Fault, FaultRule, RecordedCall } from './http.js';

interface ModelFacts {
  maxN: number;
  sizes: readonly string[];
  maxPrompt: number;
  gptImage: boolean;
}

/** The models the fake serves, with their documented limits. */
export const OPENAI_IMAGE_MODELS: Record<string, ModelFacts> = {
  'gpt-image-1': { maxN: 10, sizes: ['1024x1024', '1536x1024', '1024x1536', 'auto'], maxPrompt: 32_000, gptImage: true },
  'dall-e-3': { maxN: 1, sizes: ['1024x1024', '1792x1024', '1024x1792'], maxPrompt: 4_000, gptImage: false },
};

export interface FakeOpenAIOptions extends FakeOptions {
  /** a prompt containing this word is refused by the "safety system" @default 'MODERATION-TEST' */
  moderationWord?: string;
}

/** One generation the fake answered with images. */
export interface Generation {
  model: string;
  prompt: string;
  n: number;
  size: string;
  format: 'png' | 'jpeg' | 'webp';
  images: number;
}

export interface FakeOpenAI extends FakeCommon {
  /** Generations answered with images (200), in order: what OpenAI would bill. */
  generations(): Generation[];
}

type OpenAIErrorBody = { error: { message: string; type: string; param: string | null; code: string | null } };

const errorBody = (message: string, type: string, code: string | null = null, param: string | null = null): OpenAIErrorBody => ({
  error: { message, type, param, code },
});

const openaiErrors: ErrorDialect = {
  // OpenAI sends Retry-After in seconds, and (the SDK reads it first) retry-after-ms; the body only says it in words.
  rateLimited(seconds, where) {
    const headers: Record<string, string> =
      where === 'body' ? {} : where === 'header' ? { 'retry-after': String(seconds) } : { 'retry-after': String(seconds), 'retry-after-ms': String(Math.round(seconds * 1000)) };
    const body = errorBody(
      `Rate limit reached for images per minute (IPM): Limit 5, Used 5, Requested 1. Please try again in ${seconds}s.`,
      'requests',
      'rate_limit_exceeded',
    );
    return { body, headers };
  },
  unauthorized: () => errorBody('Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.', 'invalid_request_error', 'invalid_api_key'),
  serverError: () => errorBody('The server had an error while processing your request. Sorry about that!', 'server_error'),
};

const invalid = (res: ServerResponse, message: string, param: string | null, code: string | null = 'invalid_value') =>
  sendJson(res, 400, errorBody(message, 'invalid_request_error', code, param));

const FORMATS: Record<'png' | 'jpeg' | 'webp', FakeImageFormat> = { png: 'png', jpeg: 'jpg', webp: 'webp' };

/** The request's problem as OpenAI words it, or undefined when it is a valid generation. */
function problemOf(body: Record<string, unknown>): { message: string; param: string | null; code?: string } | undefined {
  const model = body.model;
  if (typeof model !== 'string') return { message: "Missing required parameter: 'model'.", param: 'model', code: 'missing_required_parameter' };
  const facts = OPENAI_IMAGE_MODELS[model];
  if (!facts) return { message: `The model '${model}' does not exist or you do not have access to it.`, param: 'model', code: 'model_not_found' };
  if (typeof body.prompt !== 'string' || body.prompt.length === 0) return { message: "Missing required parameter: 'prompt'.", param: 'prompt', code: 'missing_required_parameter' };
  if (body.prompt.length > facts.maxPrompt) return { message: `Invalid 'prompt': string too long. Expected a string with maximum length ${facts.maxPrompt}.`, param: 'prompt', code: 'string_above_max_length' };
  const n = body.n ?? 1;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 10) return { message: `Invalid 'n': expected an integer from 1 to 10, got ${JSON.stringify(n)}.`, param: 'n' };
  if (n > facts.maxN) return { message: `Invalid 'n': ${model} supports n=${facts.maxN} only.`, param: 'n' };
  const size = body.size ?? (facts.gptImage ? 'auto' : '1024x1024');
  if (typeof size !== 'string' || !facts.sizes.includes(size)) {
    return { message: `Invalid value: '${String(size)}'. Supported values are: ${facts.sizes.map((s) => `'${s}'`).join(', ')}.`, param: 'size' };
  }
  if (facts.gptImage && body.response_format !== undefined) return { message: "Unknown parameter: 'response_format'.", param: 'response_format', code: 'unknown_parameter' };
  if (!facts.gptImage) {
    for (const name of ['output_format', 'output_compression', 'background', 'moderation']) {
      if (body[name] !== undefined) return { message: `Unknown parameter: '${name}'.`, param: name, code: 'unknown_parameter' };
    }
  }
  const enumOf = (name: string, allowed: readonly string[]) =>
    body[name] !== undefined && (typeof body[name] !== 'string' || !allowed.includes(body[name]))
      ? { message: `Invalid value: '${String(body[name])}'. Supported values are: ${allowed.map((a) => `'${a}'`).join(', ')}.`, param: name }
      : undefined;
  const badEnum =
    enumOf('quality', facts.gptImage ? ['low', 'medium', 'high', 'auto'] : ['standard', 'hd']) ??
    enumOf('output_format', ['png', 'jpeg', 'webp']) ??
    enumOf('response_format', ['url', 'b64_json']);
  if (badEnum) return badEnum;
  const compression = body.output_compression;
  if (compression !== undefined && (typeof compression !== 'number' || !Number.isInteger(compression) || compression < 0 || compression > 100)) {
    return { message: `Invalid 'output_compression': expected an integer from 0 to 100.`, param: 'output_compression' };
  }
  return undefined;
}

export async function startFakeOpenAI(options?: FakeOpenAIOptions): Promise<FakeOpenAI> {
  const submitCalls: RecordedCall[] = [];
  const generated: Generation[] = [];
  const moderationWord = options?.moderationWord ?? 'MODERATION-TEST';

  const core = await startCore(options, async (core, req: ParsedRequest, res) => {
    const call = core.record(req);
    if (req.method !== 'POST' || req.path !== '/v1/images/generations') {
      return sendJson(res, 404, errorBody(`Invalid URL (${req.method} ${req.path})`, 'invalid_request_error'));
    }
    submitCalls.push(call);
    if (core.options.key !== undefined && req.headers.authorization !== `Bearer ${core.options.key}`) {
      return sendJson(res, 401, openaiErrors.unauthorized());
    }
    const httpFault = core.faults.take('submit', isHttpFault);
    if (httpFault) return core.sendHttpFault(res, call, httpFault, openaiErrors);

    const body = plainObject(req.body);
    if (!body) return invalid(res, 'We could not parse the JSON body of your request.', null, null);
    const problem = problemOf(body);
    if (problem) return invalid(res, problem.message, problem.param, problem.code);
    const model = body.model as string;
    const facts = OPENAI_IMAGE_MODELS[model]!;
    const prompt = body.prompt as string;
    if (prompt.includes(moderationWord)) {
      call.fault = 'failed';
      return facts.gptImage
        ? sendJson(res, 400, errorBody(
            `Your request was rejected by the safety system. If you believe this is an error, contact us at help.openai.com and include the request ID req_${randomBytes(16).toString('hex')}.`,
            'image_generation_user_error',
            'moderation_blocked',
          ))
        : invalid(res, 'Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.', null, 'content_policy_violation');
    }

    // A synchronous API: the answer comes when the images are made.
    await core.sleep(core.latencyMs);
    if (core.closed) return;
    const generationFault = core.faults.take('submit', isGenerationFault);
    if (generationFault?.kind === 'failed') {
      call.fault = 'failed';
      return sendJson(res, 500, errorBody(generationFault.message ?? 'The image generation failed.', 'server_error'));
    }
    const n = (body.n as number | undefined) ?? 1;
    const images = generationFault?.kind === 'partial' ? Math.min(n, generationFault.images) : n;
    if (generationFault) call.fault = generationFault.kind;
    const askedSize = (body.size as string | undefined) ?? (facts.gptImage ? 'auto' : '1024x1024');
    const size = askedSize === 'auto' ? '1024x1024' : askedSize;
    const [width, height] = size.split('x').map(Number) as [number, number];
    const format = facts.gptImage ? ((body.output_format as 'png' | 'jpeg' | 'webp' | undefined) ?? 'png') : 'png';
    const base64 = facts.gptImage || body.response_format === 'b64_json';
    const data = await Promise.all(
      Array.from({ length: images }, async (_, k) => ({
        ...(base64
          ? { b64_json: (await fakeImage(width, height, FORMATS[format], `${prompt}#${k}`)).toString('base64') }
          : { url: `${core.origin}/files/${randomBytes(8).toString('hex')}/${k}.png` }),
        // DALL·E 3 rewrites every prompt; the GPT image models answer none.
        ...(facts.gptImage ? {} : { revised_prompt: `${prompt}, shown in rich detail (image ${k + 1})` }),
      })),
    );
    generated.push({ model, prompt, n, size: askedSize, format, images });
    sendJson(res, 200, {
      created: Math.floor(Date.now() / 1000),
      data,
      ...(facts.gptImage
        ? {
            background: 'opaque',
            output_format: format,
            quality: (body.quality as string | undefined) === 'auto' || body.quality === undefined ? 'medium' : body.quality,
            size,
            usage: { input_tokens: 50, input_tokens_details: { image_tokens: 0, text_tokens: 50 }, output_tokens: 1056 * images, total_tokens: 50 + 1056 * images },
          }
        : {}),
    });
  });

  return {
    url: `${core.origin}/v1`,
    calls: core.calls,
    submits: () => [...submitCalls],
    generations: () => [...generated],
    inject: (rule) => core.faults.inject(rule),
    clearFaults: () => core.faults.clear(),
    setLatency: (ms) => {
      core.latencyMs = ms;
    },
    close: () => core.close(),
  };
}
