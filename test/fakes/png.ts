// Real, decodable image bytes for the fakes' /files/... URLs, made with sharp.
//
// Speed: a 1 MP canvas filled pixel by pixel costs 20–50 ms in libvips here, so
// the picture is a 2×2 block of colours blown up with the nearest-neighbour
// kernel (a few ms for PNG, ~20 ms for JPEG, ~30 ms for WebP at 1 MP), and
// results are cached. The label only picks one of PALETTES variants, so the
// cache stays small and hits across requests that ask for the same size.
import sharp from 'sharp';

export type FakeImageFormat = 'png' | 'webp' | 'jpg';

export const CONTENT_TYPES: Record<FakeImageFormat, string> = {
  png: 'image/png',
  webp: 'image/webp',
  jpg: 'image/jpeg',
};

const PALETTES = 16;
const MAX_CACHE_ENTRIES = 128;

// Promises, not buffers: concurrent downloads of the same image share one encode.
const cache = new Map<string, Promise<Buffer>>();

function hashLabel(label: string | number): number {
  // FNV-1a: stable across runs, unlike anything involving Math.random.
  let h = 0x811c9dc5;
  for (const ch of String(label)) {
    h ^= ch.codePointAt(0) ?? 0;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function quadrantColours(variant: number): Buffer {
  const px: number[] = [];
  for (let i = 0; i < 4; i++) {
    // Spread hues so neighbouring variants look different when a human peeks.
    const x = hashLabel(`${variant}:${i}`);
    px.push(x & 0xff, (x >>> 8) & 0xff, (x >>> 16) & 0xff);
  }
  return Buffer.from(px);
}

async function render(width: number, height: number, format: FakeImageFormat, pixels: Buffer): Promise<Buffer> {
  const side = Math.round(Math.sqrt(pixels.length / 3));
  let pipeline = sharp(pixels, { raw: { width: side, height: side, channels: 3 } }).resize(width, height, {
    kernel: 'nearest',
    fit: 'fill',
  });
  if (format === 'png') pipeline = pipeline.png({ compressionLevel: 1 });
  else if (format === 'webp') pipeline = pipeline.webp({ quality: 50, effort: 0 });
  else pipeline = pipeline.jpeg({ quality: 50 });
  return pipeline.toBuffer();
}

function cached(key: string, make: () => Promise<Buffer>): Promise<Buffer> {
  const hit = cache.get(key);
  if (hit) return hit;
  if (cache.size >= MAX_CACHE_ENTRIES) {
    const oldest = cache.keys().next().value;
    if (oldest !== undefined) cache.delete(oldest);
  }
  const made = make();
  made.catch(() => cache.delete(key)); // never cache a failure
  cache.set(key, made);
  return made;
}

function checkSize(width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || width > 8192 || height > 8192) {
    throw new RangeError(`fakeImage: bad size ${width}x${height}`);
  }
}

/** Image bytes of exactly width×height in `format`; the pattern depends on the label. */
export function fakeImage(
  width: number,
  height: number,
  format: FakeImageFormat,
  seedOrLabel: string | number,
): Promise<Buffer> {
  checkSize(width, height);
  const variant = hashLabel(seedOrLabel) % PALETTES;
  return cached(`${width}x${height}.${format}#${variant}`, () =>
    render(width, height, format, quadrantColours(variant)),
  );
}

/** A single-colour image, e.g. the black frame a safety checker substitutes. */
export function solidImage(
  width: number,
  height: number,
  format: FakeImageFormat,
  rgb: readonly [number, number, number],
): Promise<Buffer> {
  checkSize(width, height);
  const [r, g, b] = rgb;
  return cached(`${width}x${height}.${format}=${r},${g},${b}`, () =>
    render(width, height, format, Buffer.from([r, g, b])),
  );
}

/**
 * An incompressible image (random RGB noise, PNG): about width×height×3 bytes, e.g. ~1.08 MB at
 * 600×600. Made once per size and seed, then cached, so a benchmark can serve a thousand of them.
 */
export function noisePng(width: number, height: number, seed = 1): Promise<Buffer> {
  checkSize(width, height);
  return cached(`${width}x${height}.png~noise${seed}`, () => {
    const pixels = Buffer.alloc(width * height * 3);
    let a = seed >>> 0 || 1;
    for (let i = 0; i < pixels.length; i += 4) {
      // xorshift32: fast and good enough to defeat deflate
      a ^= a << 13;
      a >>>= 0;
      a ^= a >>> 17;
      a ^= a << 5;
      a >>>= 0;
      pixels.writeUInt32LE(a, Math.min(i, pixels.length - 4));
    }
    return sharp(pixels, { raw: { width, height, channels: 3 } }).png({ compressionLevel: 1 }).toBuffer();
  });
}
