/**
 * One provider call from submit to downloaded bytes, as the runner makes it but without the engine:
 * for the provider-level draft and upscale tests, through the real SDKs against the fakes.
 */
import sharp from 'sharp';
import { loadConfig } from '../../src/config.js';
import type { BatchCall, CallStatus, OutputImage, Provider } from '../../src/core/provider.js';
import type { ProviderName } from '../../src/core/types.js';
import { createProviders } from '../../src/providers/index.js';
import { loopbackFetch } from '../fakes/http.js';

/** The providers `env` configures, as the app builds them, reaching only loopback. */
export function providersFor(env: Record<string, string>): Record<ProviderName, Provider> {
  return createProviders(loadConfig(env), { fetch: loopbackFetch }) as Record<ProviderName, Provider>;
}

/** Polls the call until it has ended (the fakes finish in tens of milliseconds). */
export async function ended(provider: Provider, requestId: string, model: string): Promise<CallStatus> {
  for (;;) {
    const status = await provider.status(requestId, model);
    if (status.state !== 'queued' && status.state !== 'running') return status;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

export interface Delivered {
  output: OutputImage;
  bytes: Buffer;
  /** what sharp reads from the bytes */
  width: number;
  height: number;
  format: string;
}

/** submit → status until it ends → result → each image downloaded and measured. */
export async function runCall(provider: Provider, call: BatchCall): Promise<{ requestId: string; images: Delivered[] }> {
  const requestId = await provider.submit(call);
  const status = await ended(provider, requestId, call.model);
  if (status.state !== 'succeeded') throw new Error(`the call ended ${status.state}: ${JSON.stringify(status)}`);
  const outputs = await provider.result(requestId, call.model);
  const images = await Promise.all(
    outputs.map(async (output) => {
      const bytes = await bytesOf(await provider.download(output));
      const meta = await sharp(bytes).metadata();
      return { output, bytes, width: meta.width, height: meta.height, format: meta.format };
    }),
  );
  return { requestId, images };
}

async function bytesOf(body: AsyncIterable<Uint8Array> | Buffer): Promise<Buffer> {
  if (Buffer.isBuffer(body)) return body;
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}
