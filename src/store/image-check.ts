/**
 * Checks an image while its bytes stream to disk, without decoding a pixel: the format from its first
 * bytes, its dimensions from its header (the pixel cap applies as soon as the header has passed, so a
 * huge declared picture stops the download there), and that it arrived whole — a PNG's every chunk
 * with its CRC and the IEND that ends it, a JPEG's end-of-image marker, a WebP's RIFF length. A body
 * cut short or with a damaged PNG chunk is refused. Decoding every image to prove it whole cost more
 * CPU than everything else an image takes; what the check cannot see (a JPEG's entropy-coded data, a
 * PNG's deflate stream with right CRCs) is a picture that shows as broken, never a larger one.
 */
import { crc32 } from 'node:zlib';

export type ImageFormat = 'png' | 'jpeg' | 'webp';

export interface ImageFacts {
  format: ImageFormat;
  width: number;
  height: number;
  /** the whole image's length */
  bytes: number;
}

export class UnreadableImageError extends Error {
  override name = 'UnreadableImageError';
}

const NOT_AN_IMAGE = 'the image is not a PNG, JPEG or WebP';
const DAMAGED = 'the image is damaged or incomplete';
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
/** the most header bytes a JPEG may take before its frame header (SOFn) names its size */
const JPEG_HEADER_CAP = 1024 * 1024;

/** The format the bytes themselves announce, or undefined: the URL's extension and headers are not trusted. */
export function sniffFormat(head: Uint8Array): ImageFormat | undefined {
  const starts = (bytes: number[], at = 0) => bytes.every((byte, i) => head[at + i] === byte);
  if (starts(PNG_SIGNATURE)) return 'png';
  if (starts([0xff, 0xd8, 0xff])) return 'jpeg';
  if (starts([0x52, 0x49, 0x46, 0x46]) && starts([0x57, 0x45, 0x42, 0x50], 8)) return 'webp';
  return undefined;
}

/** Feed it every chunk in order with `push`, then `end()` answers the image's facts or throws. */
export class ImageInspector {
  private head: Buffer<ArrayBufferLike> = Buffer.alloc(0);
  private format: ImageFormat | undefined;
  private width = 0;
  private height = 0;
  private total = 0;
  private png: PngWalk | undefined;
  /** the last two bytes seen (a JPEG ends with FF D9) */
  private tail: Buffer<ArrayBufferLike> = Buffer.alloc(0);

  constructor(private readonly maxPixels: number) {}

  push(chunk: Uint8Array): void {
    this.total += chunk.length;
    if (this.png) return this.png.push(chunk);
    if (this.format === 'jpeg') {
      this.tail = Buffer.concat([this.tail, chunk.subarray(Math.max(0, chunk.length - 2))]).subarray(-2);
      if (this.width === 0) this.readHead(chunk);
      return;
    }
    if (this.format === 'webp') return this.width === 0 ? this.readHead(chunk) : undefined;
    this.readHead(chunk);
  }

  /** Collects the first bytes until the format and its dimensions can be read from them. */
  private readHead(chunk: Uint8Array): void {
    this.head = Buffer.concat([this.head, chunk]);
    if (!this.format) {
      if (this.head.length < 12) return;
      this.format = sniffFormat(this.head);
      if (!this.format) throw new UnreadableImageError(NOT_AN_IMAGE);
      if (this.format === 'png') {
        const head = this.head;
        this.head = Buffer.alloc(0);
        this.png = new PngWalk((width, height) => this.sized(width, height));
        return this.png.push(head);
      }
      if (this.format === 'jpeg') this.tail = this.head.subarray(-2);
    }
    const size = this.format === 'jpeg' ? jpegSize(this.head) : webpSize(this.head);
    if (size) {
      this.sized(size.width, size.height);
      this.head = this.format === 'webp' ? this.head.subarray(0, 8) : Buffer.alloc(0);
    } else if (this.head.length > JPEG_HEADER_CAP) {
      throw new UnreadableImageError('the image has no dimensions');
    }
  }

  private sized(width: number, height: number): void {
    if (!width || !height) throw new UnreadableImageError('the image has no dimensions');
    if (width * height > this.maxPixels) {
      throw new UnreadableImageError(`the image is larger than ${Math.round(this.maxPixels / 1e6)} megapixels`);
    }
    this.width = width;
    this.height = height;
  }

  /** The image's facts once every byte has passed; throws when it is not a whole PNG, JPEG or WebP. */
  end(): ImageFacts {
    if (!this.format) {
      if (this.head.length > 0 && sniffFormat(this.head) === undefined) throw new UnreadableImageError(NOT_AN_IMAGE);
      throw new UnreadableImageError(this.head.length === 0 ? 'the image is empty' : DAMAGED);
    }
    if (this.png && !this.png.ended) throw new UnreadableImageError(DAMAGED);
    if (this.width === 0) throw new UnreadableImageError(DAMAGED);
    if (this.format === 'jpeg' && !(this.tail[0] === 0xff && this.tail[1] === 0xd9)) throw new UnreadableImageError(DAMAGED);
    if (this.format === 'webp' && this.total !== this.head.readUInt32LE(4) + 8) throw new UnreadableImageError(DAMAGED);
    return { format: this.format, width: this.width, height: this.height, bytes: this.total };
  }
}

/**
 * A PNG chunk by chunk: length, type, data, CRC (over type and data). The first chunk must be IHDR,
 * whose width and height are reported as soon as its 13 bytes are in; the walk has ended at IEND.
 */
class PngWalk {
  ended = false;
  private signature = 0;
  /** bytes of the current chunk's length+type (8) or CRC (4) not complete yet */
  private partial: Buffer<ArrayBufferLike> = Buffer.alloc(0);
  private phase: 'signature' | 'header' | 'data' | 'crc' = 'signature';
  private type = '';
  private left = 0;
  private crc = 0;
  private chunks = 0;
  private ihdr: Buffer[] = [];

  constructor(private readonly onSize: (width: number, height: number) => void) {}

  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.ended) return; // bytes after IEND are not part of the picture: left as they are
      if (this.phase === 'signature') {
        if (chunk[at] !== PNG_SIGNATURE[this.signature]) throw new UnreadableImageError(NOT_AN_IMAGE);
        at += 1;
        if (++this.signature === PNG_SIGNATURE.length) this.phase = 'header';
        continue;
      }
      if (this.phase === 'data') {
        const take = Math.min(this.left, chunk.length - at);
        const part = chunk.subarray(at, at + take);
        this.crc = crc32(part, this.crc);
        if (this.type === 'IHDR') this.ihdr.push(Buffer.from(part));
        this.left -= take;
        at += take;
        if (this.left === 0) this.dataDone();
        continue;
      }
      const want = this.phase === 'header' ? 8 : 4;
      const take = Math.min(want - this.partial.length, chunk.length - at);
      this.partial = Buffer.concat([this.partial, chunk.subarray(at, at + take)]);
      at += take;
      if (this.partial.length < want) continue;
      const bytes = this.partial;
      this.partial = Buffer.alloc(0);
      if (this.phase === 'header') this.header(bytes);
      else this.checkCrc(bytes);
    }
  }

  private header(bytes: Buffer): void {
    this.left = bytes.readUInt32BE(0);
    this.type = bytes.toString('latin1', 4, 8);
    if (this.left > 0x7fffffff || !/^[A-Za-z]{4}$/.test(this.type)) throw new UnreadableImageError(DAMAGED);
    if (this.chunks === 0 && (this.type !== 'IHDR' || this.left !== 13)) throw new UnreadableImageError(DAMAGED);
    this.chunks += 1;
    this.crc = crc32(bytes.subarray(4, 8));
    this.phase = 'data';
    if (this.left === 0) this.dataDone();
  }

  private dataDone(): void {
    if (this.type === 'IHDR') {
      const ihdr = Buffer.concat(this.ihdr);
      this.onSize(ihdr.readUInt32BE(0), ihdr.readUInt32BE(4));
    }
    this.phase = 'crc';
  }

  private checkCrc(bytes: Buffer): void {
    if (bytes.readUInt32BE(0) !== this.crc >>> 0) throw new UnreadableImageError(DAMAGED);
    if (this.type === 'IEND') this.ended = true;
    this.phase = 'header';
  }
}

/** A JPEG's size from its frame header (SOF0–SOF15 but DHT, JPG, DAC), walking the segments before it. */
function jpegSize(head: Buffer): { width: number; height: number } | undefined {
  let at = 2;
  while (at + 4 <= head.length) {
    if (head[at] !== 0xff) throw new UnreadableImageError(DAMAGED);
    const marker = head[at + 1]!;
    // fill bytes, and markers with no length
    if (marker === 0xff) {
      at += 1;
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      at += 2;
      continue;
    }
    if (marker === 0xda || marker === 0xd9) throw new UnreadableImageError(DAMAGED);
    const length = head.readUInt16BE(at + 2);
    if (length < 2) throw new UnreadableImageError(DAMAGED);
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      if (at + 9 > head.length) return undefined;
      return { height: head.readUInt16BE(at + 5), width: head.readUInt16BE(at + 7) };
    }
    at += 2 + length;
  }
  return undefined;
}

/** A WebP's size from its first chunk: VP8X (extended), VP8L (lossless) or VP8 (lossy). */
function webpSize(head: Buffer): { width: number; height: number } | undefined {
  if (head.length < 30) return undefined;
  const chunk = head.toString('latin1', 12, 16);
  if (chunk === 'VP8X') return { width: 1 + head.readUIntLE(24, 3), height: 1 + head.readUIntLE(27, 3) };
  if (chunk === 'VP8L') {
    if (head[20] !== 0x2f) throw new UnreadableImageError(DAMAGED);
    const bits = head.readUInt32LE(21);
    return { width: 1 + (bits & 0x3fff), height: 1 + ((bits >>> 14) & 0x3fff) };
  }
  if (chunk === 'VP8 ') {
    if (head[23] !== 0x9d || head[24] !== 0x01 || head[25] !== 0x2a) throw new UnreadableImageError(DAMAGED);
    return { width: head.readUInt16LE(26) & 0x3fff, height: head.readUInt16LE(28) & 0x3fff };
  }
  throw new UnreadableImageError(DAMAGED);
}
