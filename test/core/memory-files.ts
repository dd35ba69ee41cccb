/**
 * An in-memory ImageStorage (one of the core's ports): images and manifests in Maps, folders as key
 * prefixes. It checks nothing the port does not promise: the real one (src/store/files.ts) refuses
 * what is not an image, this one only reads a PNG header for the size it reports.
 */
import type { ImageStorage } from '../../src/core/ports.js';
import type { ReviewStatus } from '../../src/core/types.js';

const FOLDERS: Record<ReviewStatus, string> = { pending: 'pending-review', approved: 'approved', rejected: 'rejected' };

export class MemoryFiles implements ImageStorage {
  readonly outputDir: string;
  /** `<jobId>/<file>` → bytes */
  readonly files = new Map<string, Buffer>();
  /** the latest manifest written for each job */
  readonly manifests = new Map<string, unknown>();
  private readonly roots = new Map<string, string>();

  constructor(outputDir = '/memory/output') {
    this.outputDir = outputDir;
  }

  async writeImage(
    jobId: string,
    baseName: string,
    source: AsyncIterable<Uint8Array> | Buffer,
  ): Promise<{ file: string; width: number; height: number; contentType: string }> {
    const chunks: Uint8Array[] = [];
    if (Buffer.isBuffer(source)) chunks.push(source);
    else for await (const chunk of source) chunks.push(chunk);
    const bytes = Buffer.concat(chunks);
    const file = `${FOLDERS.pending}/${baseName}.png`;
    this.files.set(`${jobId}/${file}`, bytes);
    return { file, ...pngSize(bytes), contentType: 'image/png' };
  }

  async moveTo(jobId: string, file: string, status: ReviewStatus): Promise<string> {
    const target = `${FOLDERS[status]}/${file.split('/').pop()}`;
    const bytes = this.files.get(`${jobId}/${file}`);
    if (bytes) {
      this.files.delete(`${jobId}/${file}`);
      this.files.set(`${jobId}/${target}`, bytes);
    }
    return target;
  }

  async writeManifest(jobId: string, manifest: unknown): Promise<string> {
    this.manifests.set(jobId, structuredClone(manifest));
    return `${this.jobDir(jobId)}/manifest.json`;
  }

  async sweep(): Promise<number> {
    return 0;
  }

  async restore(jobId: string, file: string): Promise<boolean> {
    if (this.files.has(`${jobId}/${file}`)) return false;
    const name = file.split('/').pop();
    for (const folder of Object.values(FOLDERS)) {
      const bytes = this.files.get(`${jobId}/${folder}/${name}`);
      if (!bytes) continue;
      this.files.delete(`${jobId}/${folder}/${name}`);
      this.files.set(`${jobId}/${file}`, bytes);
      return true;
    }
    return false;
  }

  jobDir(jobId: string): string {
    return `${this.roots.get(jobId) ?? this.outputDir}/${jobId}`;
  }

  adopt(jobId: string, outputDir: string): void {
    if (outputDir !== this.outputDir) this.roots.set(jobId, outputDir);
  }

  /** The files of a job in one folder, sorted. */
  list(jobId: string, folder: string): string[] {
    const prefix = `${jobId}/${folder}/`;
    return [...this.files.keys()].filter((key) => key.startsWith(prefix)).map((key) => key.slice(prefix.length)).sort();
  }
}

/** Width and height from a PNG's IHDR chunk; 0 × 0 for anything else. */
function pngSize(bytes: Buffer): { width: number; height: number } {
  const png = bytes.length >= 24 && bytes.subarray(12, 16).toString('latin1') === 'IHDR';
  return png ? { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) } : { width: 0, height: 0 };
}
