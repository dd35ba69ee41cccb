/**
 * A Provider (the core's port, src/core/provider.ts) that follows a script instead of a network:
 * each submit takes the next entry, which says how that call behaves — refused with a 429 or a 5xx,
 * slow, hanging, lost, failed, partial, with refused or failing downloads. It keeps a log of every
 * request with the (fake) time it came, so tests assert what was paid for and when.
 */
import type { BatchCall, CallStatus, OutputImage, Provider } from '../../src/core/provider.js';
import { ProviderError } from '../../src/core/provider.js';
import type { ProviderName } from '../../src/core/types.js';

export interface CallScript {
  /** the submit fails with this error: nothing is paid for */
  submitError?: ProviderError;
  /** ms from submit until the call has succeeded @default 0 */
  takesMs?: number;
  /** the call never finishes */
  hangs?: boolean;
  /** outputs the call returns; fewer than asked for is a partial output @default as many as asked */
  outputs?: number;
  /** the call ends failed, with this error text */
  fails?: string;
  /** the provider forgets the call: its status answers not_found */
  lost?: boolean;
  /** errors its status requests answer first, one each (transient faults) */
  statusErrors?: ProviderError[];
  /** outputs (positions in the call) whose download is refused: not an allowed host */
  refused?: number[];
  /** outputs whose first download fails with this error; the next download gets them */
  downloadErrors?: Record<number, ProviderError>;
}

export interface SubmitRecord {
  at: number;
  call: BatchCall;
  /** the id given, or undefined when the submit was refused */
  requestId?: string;
  error?: string;
}

interface Call {
  id: string;
  call: BatchCall;
  at: number;
  script: CallScript;
  canceled: boolean;
}

/** A PNG signature and IHDR chunk: enough for a storage to read the image's size. */
export function pngHeader(width: number, height: number): Buffer {
  const header = Buffer.alloc(33);
  header.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  header.writeUInt32BE(13, 8);
  header.write('IHDR', 12, 'latin1');
  header.writeUInt32BE(width, 16);
  header.writeUInt32BE(height, 20);
  return header;
}

export class ScriptedProvider implements Provider {
  readonly name: ProviderName;
  readonly maxImagesPerCall: number;
  readonly typicalCallMs: number;
  readonly submits: SubmitRecord[] = [];
  readonly statusRequests: { at: number; requestId: string }[] = [];
  readonly downloads: { at: number; requestId: string; output: number }[] = [];
  readonly cancels: string[] = [];
  /** called as each status request arrives, before it is answered */
  onStatus: ((requestId: string) => void) | undefined;
  private readonly script: CallScript[];
  private readonly calls = new Map<string, Call>();
  private readonly now: () => number;

  constructor(options: { name?: ProviderName; maxImagesPerCall?: number; typicalCallMs?: number; calls?: CallScript[]; now?: () => number } = {}) {
    this.name = options.name ?? 'fal';
    this.maxImagesPerCall = options.maxImagesPerCall ?? 4;
    this.typicalCallMs = options.typicalCallMs ?? 5_000;
    this.script = [...(options.calls ?? [])];
    this.now = options.now ?? Date.now;
  }

  /** Adds entries for the next submits (after the remaining ones); a submit with no entry left just works. */
  plan(...calls: CallScript[]): void {
    this.script.push(...calls);
  }

  /** Submits that were accepted (paid for). */
  paid(): SubmitRecord[] {
    return this.submits.filter((s) => s.requestId !== undefined);
  }

  async submit(call: BatchCall): Promise<string> {
    const script = this.script.shift() ?? {};
    if (script.submitError) {
      this.submits.push({ at: this.now(), call, error: script.submitError.message });
      throw script.submitError;
    }
    const id = `call-${this.submits.length + 1}`;
    this.calls.set(id, { id, call, at: this.now(), script: { ...script, statusErrors: [...(script.statusErrors ?? [])] }, canceled: false });
    this.submits.push({ at: this.now(), call, requestId: id });
    return id;
  }

  async status(requestId: string): Promise<CallStatus> {
    this.statusRequests.push({ at: this.now(), requestId });
    this.onStatus?.(requestId);
    const call = this.find(requestId);
    const fault = call.script.statusErrors?.shift();
    if (fault) throw fault;
    if (call.canceled) return { state: 'canceled' };
    if (call.script.fails !== undefined) return { state: 'failed', error: call.script.fails };
    if (call.script.hangs || this.now() < call.at + (call.script.takesMs ?? 0)) return { state: 'running' };
    return { state: 'succeeded' };
  }

  async result(requestId: string): Promise<OutputImage[]> {
    const call = this.find(requestId);
    const count = call.script.outputs ?? call.call.count;
    return Array.from({ length: count }, (_, i) => ({
      url: `scripted://${requestId}/${i}`,
      width: 64,
      height: 64,
      contentType: 'image/png',
      nsfw: false,
      seed: call.call.seed + i,
    }));
  }

  async cancel(requestId: string): Promise<void> {
    this.cancels.push(requestId);
    const call = this.calls.get(requestId);
    if (call) call.canceled = true;
  }

  async download(image: OutputImage): Promise<Buffer> {
    const [requestId = '', position = ''] = (image.url ?? '').replace('scripted://', '').split('/');
    const output = Number(position);
    this.downloads.push({ at: this.now(), requestId, output });
    const call = this.find(requestId);
    if (call.script.refused?.includes(output)) throw new ProviderError('refused', 'the image URL is not on an allowed download host');
    const failure = call.script.downloadErrors?.[output];
    if (failure) {
      delete call.script.downloadErrors![output];
      throw failure;
    }
    return pngHeader(64, 64);
  }

  private find(requestId: string): Call {
    const call = this.calls.get(requestId);
    if (!call || call.script.lost) throw new ProviderError('not_found', `call ${requestId} is not known`);
    return call;
  }
}
